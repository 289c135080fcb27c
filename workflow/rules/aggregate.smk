# Everything into one summary: tables (best LR on dev, test reported, mean and std over seeds),
# parameter counts, distillation throughput and a plot.


rule aggregate:
    input:
        metrics=finetune_metrics(),
        students=[f"results/distill/{s}" for s in STUDENTS],
        teacher=TEACHER_DIR,
    output:
        csv=report("results/summary/results.csv", caption="../report/results.rst", category="Summary"),
        md="results/summary/results.md",
        params="results/summary/params.csv",
        json="results/summary/metrics.json",
        plot=report("results/summary/scores.png", caption="../report/scores.rst", category="Summary"),
    log:
        "logs/aggregate.log",
    shell:
        "minialbert aggregate --metrics {input.metrics:q} --students {input.students:q} "
        "--teacher {input.teacher:q} --out results/summary > {log:q} 2>&1"
