# The report's ingredients: an inference benchmark, the figures and the HTML tables. Then
#   snakemake --report results/report.html
# assembles them with the captions in workflow/report/; its first page (workflow.rst) shows the
# main table and every figure. Categories are numbered so the report's menu lists them in order.

from minialbert.report import FIGURES


report: "../report/workflow.rst"


REPORT_MODELS = ["teacher", *STUDENTS]
SUMMARY_DIR = "results/summary"
FIGURES_DIR = f"{SUMMARY_DIR}/figures"
TABLES_DIR = f"{SUMMARY_DIR}/report"


rule bench_inference:
    input:
        models=[model_dir(m) for m in REPORT_MODELS],
    output:
        f"{SUMMARY_DIR}/inference.csv",
    params:
        names=REPORT_MODELS,
    log:
        "logs/bench_inference.log",
    # every core (Snakemake caps it at --cores), so no other job runs beside a timing
    threads: os.cpu_count() or 1
    shell:
        "minialbert bench-inference --model {input.models:q} --names {params.names:q} "
        "--threads {threads} --out {output:q} > {log:q} 2>&1"


rule figures:
    input:
        results=f"{SUMMARY_DIR}/results.csv",
        comparisons=f"{SUMMARY_DIR}/comparisons.csv",
        distill=[f"results/distill/{s}" for s in STUDENTS],
        metrics=finetune_metrics(),
        inference=rules.bench_inference.output[0],
    output:
        svg=[
            report(
                f"{FIGURES_DIR}/{stem}.svg",
                caption=f"../report/figure_{stem}.rst",
                category="3 Figures",
                labels={"figure": title},
            )
            for stem, title in FIGURES.items()
        ],
        png=[f"{FIGURES_DIR}/{stem}.png" for stem in FIGURES],
    params:
        summary=lambda wc, input: os.path.dirname(input.results),
        order=REPORT_MODELS,
        out=lambda wc, output: os.path.dirname(output.svg[0]),
    log:
        "logs/figures.log",
    shell:
        "minialbert figures --summary {params.summary:q} --distill {input.distill:q} "
        "--finetune-metrics {input.metrics:q} --inference {input.inference:q} --order {params.order:q} "
        "--out {params.out:q} > {log:q} 2>&1"


rule report_tables:
    input:
        results=f"{SUMMARY_DIR}/results.csv",
        md=f"{SUMMARY_DIR}/results.md",
        comparisons=f"{SUMMARY_DIR}/comparisons.csv",
        params=f"{SUMMARY_DIR}/params.csv",
        distill=[f"results/distill/{s}" for s in STUDENTS],
        inference=rules.bench_inference.output[0],
    output:
        main=report(f"{TABLES_DIR}/results.html", caption="../report/table_results.rst", category="1 Results"),
        # the main table and its text, for the first page (workflow.rst)
        headline=f"{TABLES_DIR}/headline.html",
        tasks=report(
            directory(f"{TABLES_DIR}/tasks"),
            patterns=["{task}.html"],
            caption="../report/table_task.rst",
            category="2 Per task",
            subcategory="{task}",
        ),
        params=report(f"{TABLES_DIR}/params.html", caption="../report/table_params.rst", category="4 Models"),
        distill=report(f"{TABLES_DIR}/distill.html", caption="../report/table_distill.rst", category="4 Models"),
        inference=report(
            f"{TABLES_DIR}/inference.html", caption="../report/table_inference.rst", category="4 Models"
        ),
    params:
        summary=lambda wc, input: os.path.dirname(input.results),
        order=REPORT_MODELS,
        out=lambda wc, output: os.path.dirname(output.main),
    log:
        "logs/report_tables.log",
    shell:
        "minialbert report-tables --summary {params.summary:q} --distill {input.distill:q} "
        "--inference {input.inference:q} --order {params.order:q} --out {params.out:q} > {log:q} 2>&1"


# what `rule all` needs for the report to be complete
REPORT_FILES = [str(f) for f in (*rules.figures.output, *rules.report_tables.output)]
