# The teacher's tokenizer turns the corpus into fixed-length windows in memory-mapped arrays.


rule tokenize:
    input:
        corpus=CORPUS_DIR,
        teacher=TEACHER_DIR,
    output:
        directory(TOKENS_DIR),
    params:
        spec=as_json(config["tokenize"]),
    log:
        f"logs/tokenize/{TEACHER}-{CORPUS}.log",
    # every core (the Rust tokenizer's thread pool); Snakemake caps it at --cores, profiles may set fewer
    threads: os.cpu_count() or 1
    # on the critical path: scheduled before the many independent fine-tuning jobs
    priority: 10
    shell:
        "minialbert tokenize --corpus {input.corpus:q} --teacher {input.teacher:q} "
        "--spec {params.spec:q} --out {output:q} > {log:q} 2>&1"
