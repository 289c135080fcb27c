# Names, paths and the checks that need more than one config section. No business logic here:
# everything below only decides which files exist and which settings a rule passes on.
import json
import re
import shlex


TEACHER = config["teacher"]["name"]
CORPUS = config["corpus"]["name"]
STUDENTS = {s["name"]: s for s in config["students"]}
TASKS = config["tasks"]
FT = config["finetune"]
ALL_MODES = ("full", "adapter", "lora")

TEACHER_DIR = f"resources/teacher/{TEACHER}"
CORPUS_DIR = f"resources/corpus/{CORPUS}"
TOKENS_DIR = f"resources/tokens/{TEACHER}/{CORPUS}"


def config_error(key, message):
    raise ValueError(f"config key {key}: {message}")


if len(STUDENTS) != len(config["students"]):
    config_error("students", "student names must be unique")
for _i, _model in enumerate(FT["models"]):
    if _model != "teacher" and _model not in STUDENTS:
        config_error(
            f"finetune.models[{_i}]",
            f"'{_model}' is neither 'teacher' nor a student ({', '.join(STUDENTS)})",
        )
for _task in FT["per_task"]:
    if _task not in TASKS:
        config_error(f"finetune.per_task.{_task}", f"no such task (tasks: {', '.join(TASKS)})")
for _key in config["testing"]["fail_once"]:
    if _key not in ("download_teacher", "download_corpus", "tokenize", "distill",
                    "prepare_task", "finetune", "aggregate"):
        config_error("testing.fail_once", f"unknown rule '{_key}'")
if (
    config["distill"]["weights"]["kd"] > 0
    and config["teacher"]["has_mlm_head"] is False
    and any(s["distill"] for s in STUDENTS.values())
):
    config_error(
        "distill.weights.kd",
        f"> 0 needs a teacher with an MLM head, and teacher '{TEACHER}' has none "
        "(teacher.has_mlm_head: false); set distill.weights.kd: 0 or use a BertForMaskedLM teacher",
    )
if not TASKS:
    config_error("tasks", "at least one task is needed")


def as_json(obj):
    """Settings travel to the CLI as one JSON string; sorted keys keep `params` stable across runs."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def model_dir(model):
    return TEACHER_DIR if model == "teacher" else f"results/distill/{model}"


def modes_for(model):
    # Adapter tuning needs the MiniALBERT adapters; the teacher gets full (and LoRA) fine-tuning.
    return [m for m in FT["modes"] if not (model == "teacher" and m == "adapter")]


# The sweep (learning rates, seeds) belongs to the workflow; every other per-task key is a
# setting of the fine-tuning job itself.
SWEEP_KEYS = ("learning_rates", "seeds")


def learning_rates(mode, task):
    lrs = FT["per_task"].get(task, {}).get("learning_rates", FT["learning_rates"])
    return lrs if isinstance(lrs, list) else lrs.get(mode, [])


def seeds(task):
    return FT["per_task"].get(task, {}).get("seeds", FT["seeds"])


def lr_tag(lr):
    return f"{lr:g}"


def finetune_settings(task):
    overrides = {k: v for k, v in FT["per_task"].get(task, {}).items() if k not in SWEEP_KEYS}
    return {**FT["settings"], **overrides}


def finetune_metrics():
    return [
        f"results/finetune/{model}/{task}/{mode}/lr{lr_tag(lr)}/seed{seed}/metrics.json"
        for model in FT["models"]
        for task in TASKS
        for mode in modes_for(model)
        for lr in learning_rates(mode, task)
        for seed in seeds(task)
    ]


def rule_resources(rule):
    return {**config["resources"]["default"], **config["resources"].get(rule, {})}


def rule_threads(rule):
    threads = rule_resources(rule)["threads"]
    return workflow.cores if threads == 0 else threads


def fail_once(name):
    """Test hook (testing.fail_once): the first attempt of this rule fails, later ones run.

    Lets the SLURM test show that a failed job is retried and then succeeds.
    """
    if name not in config["testing"]["fail_once"]:
        return ""
    marker = shlex.quote(f"logs/.fail_once/{name}")
    return (
        f"if [ ! -e {marker} ]; then mkdir -p logs/.fail_once && touch {marker}; "
        f"echo 'testing.fail_once: failing {name} on purpose' >&2; exit 1; fi; "
    )


def gpus_requested(resources):
    """GPUs of the allocation, from `gpu: N` or `gres: "gpu[:type]:N"` (profiles use either)."""
    n = int(getattr(resources, "gpu", 0) or 0)
    m = re.fullmatch(r"gpu(?::(?!\d+$)[\w.-]+)?(?::(\d+))?", str(getattr(resources, "gres", "") or ""))
    return max(n, int(m.group(1) or 1) if m else 0)


def distill_launcher(wildcards, resources):
    # One process per GPU inside the allocation; CPU or a single GPU runs plainly.
    n = gpus_requested(resources)
    if n > 1:
        return f"torchrun --standalone --nproc_per_node={n} -m minialbert"
    return "minialbert"


def student_spec(wildcards):
    return as_json({**STUDENTS[wildcards.student], **config["student"]})


SUMMARY_FILES = [
    "results/summary/results.csv",
    "results/summary/results.md",
    "results/summary/params.csv",
    "results/summary/metrics.json",
    "results/summary/scores.png",
]

