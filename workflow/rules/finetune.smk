# Task preparation (deterministic splits on disk) and one fine-tuning job per
# model x task x mode x learning rate x seed.


rule prepare_task:
    output:
        directory("resources/tasks/{task}"),
    params:
        spec=lambda wc: as_json(TASKS[wc.task]),
        fail=fail_once("prepare_task"),
    log:
        "logs/prepare_task/{task}.log",
    threads: 1
    resources:
        mem_mb=rule_resources("default")["mem_mb"],
        runtime=rule_resources("default")["runtime"],
    shell:
        "{params.fail}minialbert prepare-task --name {wildcards.task} --spec {params.spec:q} "
        "--out {output:q} > {log:q} 2>&1"


rule finetune:
    input:
        model=lambda wc: model_dir(wc.model),
        task="resources/tasks/{task}",
    output:
        "results/finetune/{model}/{task}/{mode}/lr{lr}/seed{seed}/metrics.json",
    params:
        spec=lambda wc: as_json(finetune_settings(wc.task)),
        fail=fail_once("finetune"),
    log:
        "logs/finetune/{model}/{task}/{mode}/lr{lr}/seed{seed}.log",
    threads: rule_threads("finetune")
    resources:
        mem_mb=lambda wc, attempt: rule_resources("finetune")["mem_mb"] * attempt,
        runtime=rule_resources("finetune")["runtime"],
        gpu=rule_resources("finetune")["gpus"],
    shell:
        "{params.fail}minialbert finetune --model {input.model:q} --model-name {wildcards.model} "
        "--task {input.task:q} --mode {wildcards.mode} --lr {wildcards.lr} --seed {wildcards.seed} "
        "--spec {params.spec:q} --out {output:q} > {log:q} 2>&1"
