# The teacher's tokenizer turns the corpus into fixed-length windows in memory-mapped arrays.


rule tokenize:
    input:
        corpus=CORPUS_DIR,
        teacher=TEACHER_DIR,
    output:
        directory(TOKENS_DIR),
    params:
        spec=as_json(config["tokenize"]),
        fail=fail_once("tokenize"),
    log:
        f"logs/tokenize/{TEACHER}-{CORPUS}.log",
    threads: rule_threads("tokenize")
    # on the critical path: scheduled before the many independent fine-tuning jobs
    priority: 10
    resources:
        mem_mb=rule_resources("tokenize")["mem_mb"],
        runtime=rule_resources("tokenize")["runtime"],
    shell:
        "{params.fail}minialbert tokenize --corpus {input.corpus:q} --teacher {input.teacher:q} "
        "--spec {params.spec:q} --out {output:q} > {log:q} 2>&1"
