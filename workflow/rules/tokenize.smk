# The teacher's tokenizer turns the corpus into fixed-length windows in memory-mapped arrays.
# Tasks drawn from the corpus's source (`shares_source`) are inputs: their dev/test documents are
# dropped from the windows, so nothing evaluated is seen in distillation. Other tasks are not.


rule tokenize:
    input:
        corpus=CORPUS_DIR,
        teacher=TEACHER_DIR,
        exclude=[f"resources/tasks/{t}" for t in SHARED_SOURCE_TASKS],
    output:
        directory(TOKENS_DIR),
    params:
        spec=as_json(config["tokenize"]),
        exclude=lambda wc, input: " ".join(f"--exclude-task {shlex.quote(p)}" for p in input.exclude),
    log:
        f"logs/tokenize/{TEACHER}-{CORPUS}.log",
    # every core (the Rust tokenizer's thread pool); Snakemake caps it at --cores, profiles may set fewer
    threads: os.cpu_count() or 1
    # on the critical path: scheduled before the many independent fine-tuning jobs
    priority: 10
    shell:
        "minialbert tokenize --corpus {input.corpus:q} --teacher {input.teacher:q} "
        "{params.exclude} --spec {params.spec:q} --out {output:q} > {log:q} 2>&1"
