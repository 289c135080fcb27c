# Teacher -> student distillation (GPU rule). `--resume` continues from the run's last checkpoint,
# so a job killed by a time limit or preemption and retried loses at most `checkpoint_every` steps.
# Threads, memory, runtime and GPUs come from the profile (profiles/default, profiles/slurm).


rule distill:
    input:
        teacher=TEACHER_DIR,
        tokens=TOKENS_DIR,
        embeddings=embeddings_input,
    output:
        directory("results/distill/{student}"),
    params:
        student=student_spec,
        spec=as_json(config["distill"]),
        launcher=distill_launcher,
        embeddings=lambda wildcards, input: f"--embeddings {shlex.quote(input.embeddings)} " if input.embeddings else "",
    log:
        "logs/distill/{student}.log",
    # on the critical path: scheduled before the many independent fine-tuning jobs
    priority: 10
    shell:
        "{params.launcher} distill --teacher {input.teacher:q} --tokens {input.tokens:q} "
        "{params.embeddings}--student-spec {params.student:q} --spec {params.spec:q} --out {output:q} --resume "
        "> {log:q} 2>&1"
