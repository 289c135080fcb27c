# Task preparation (deterministic splits on disk) and one fine-tuning job per
# model x task x mode x learning rate x seed.


rule prepare_task:
    output:
        directory("resources/tasks/{task}"),
    params:
        spec=lambda wc: as_json(TASKS[wc.task]),
    log:
        "logs/prepare_task/{task}.log",
    shell:
        "minialbert prepare-task --name {wildcards.task} --spec {params.spec:q} "
        "--out {output:q} > {log:q} 2>&1"


rule finetune:
    input:
        model=lambda wc: model_dir(wc.model),
        task="resources/tasks/{task}",
    output:
        "results/finetune/{model}/{task}/{mode}/lr{lr}/seed{seed}/metrics.json",
    params:
        spec=finetune_spec,
        # the configured value itself: the path's tag is rounded to 6 significant digits
        lr=exact_lr,
    log:
        "logs/finetune/{model}/{task}/{mode}/lr{lr}/seed{seed}.log",
    shell:
        "minialbert finetune --model {input.model:q} --model-name {wildcards.model} "
        "--task {input.task:q} --mode {wildcards.mode} --lr {params.lr} --seed {wildcards.seed} "
        "--spec {params.spec:q} --out {output:q} > {log:q} 2>&1"
