# Floors (what a model must beat), then everything into one summary: tables with 95% intervals
# (best LR on the selection split), paired comparisons, parameter counts and a plot.

FLOOR_KINDS = ["majority", "tfidf-logreg"]


rule floors:
    input:
        task="resources/tasks/{task}",
    output:
        "results/floors/{task}/{kind}/metrics.json",
    params:
        spec=lambda wc: as_json(FINETUNE_SETTINGS[wc.task]),
    log:
        "logs/floors/{task}/{kind}.log",
    wildcard_constraints:
        kind="|".join(FLOOR_KINDS),
    shell:
        "minialbert floors --task {input.task:q} --kind {wildcards.kind} --spec {params.spec:q} "
        "--out {output:q} > {log:q} 2>&1"


rule aggregate:
    input:
        metrics=finetune_metrics(),
        floors=[f"results/floors/{t}/{k}/metrics.json" for t in TASKS for k in FLOOR_KINDS],
        students=[f"results/distill/{s}" for s in STUDENTS],
        teacher=TEACHER_DIR,
        published=PUBLISHED,
    output:
        csv="results/summary/results.csv",
        comparisons="results/summary/comparisons.csv",
        md="results/summary/results.md",
        params="results/summary/params.csv",
        json="results/summary/metrics.json",
        plot="results/summary/scores.png",
    log:
        "logs/aggregate.log",
    shell:
        "minialbert aggregate --metrics {input.metrics:q} --floors {input.floors:q} "
        "--students {input.students:q} --teacher {input.teacher:q} --published {input.published:q} "
        "--out results/summary > {log:q} 2>&1"
