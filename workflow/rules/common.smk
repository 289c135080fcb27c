# Names, paths and the checks that need more than one config section. No business logic here:
# everything below only decides which files exist and which settings a rule passes on. Defaults
# come from the package's schema (src/minialbert/config.schema.yaml), filled in by validate().
import json
import os
import re
import shlex
import sys
from pathlib import Path

from minialbert import settings


TEACHER = config["teacher"]["name"]
CORPUS = config["corpus"]["name"]
STUDENTS = {s["name"]: s for s in config["students"]}
TASKS = config["tasks"]
FT = config["finetune"]
# tasks whose dev/test documents must not be in the distillation corpus
SHARED_SOURCE_TASKS = [t for t, spec in TASKS.items() if spec.get("shares_source") == CORPUS]

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
for _task, _spec in TASKS.items():
    if _spec.get("shares_source") not in (None, CORPUS):
        config_error(f"tasks.{_task}.shares_source", f"'{_spec['shares_source']}' is not the corpus ('{CORPUS}')")
for _task in FT["per_task"]:
    if _task not in TASKS:
        config_error(f"finetune.per_task.{_task}", f"no such task (tasks: {', '.join(TASKS)})")
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


def _refuse_duplicate_keys(paths):
    """YAML keeps the last of two equal keys silently (a second `bbc_topic:` replaces the first)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
            for key in {k for k in keys if keys.count(k) > 1}:
                line = next(k.start_mark.line + 1 for k in (k for k, _ in node.value)
                            if self.construct_object(k) == key)
                raise ValueError(f"{self.name}: line {line}: duplicate key {key!r}")
            return super().construct_mapping(node, deep=deep)

    for path in paths:
        with open(path, encoding="utf-8") as fh:
            yaml.load(fh, Loader=StrictLoader)


_refuse_duplicate_keys(workflow.overwrite_configfiles or ["config/config.yaml"])


def _check_students_against_the_teacher():
    """Checks that need the models: the student shape, and the layer map vs the teacher's depth
    (for a package or files teacher, whose config.json is on disk before any job runs)."""
    from minialbert.distill.spec import parse_student_spec, resolve_layer_map
    from minialbert.files import package_root
    from minialbert.modeling_minialbert import preset_config

    t = config["teacher"]
    folder = None
    if t["source"] == "package" and t["package"]:
        try:
            folder = package_root(t["package"]) / (t["path"] or "")
        except FileNotFoundError:
            folder = None  # the download job reports it
    elif t["source"] == "files" and t["path"]:
        folder = Path(t["path"])
    layers = None
    if folder is not None and (folder / "config.json").is_file():
        layers = json.loads((folder / "config.json").read_text()).get("num_hidden_layers")
    sources = {}
    for name, entry in STUDENTS.items():
        try:  # the distill stage's own reading of this student (init and its embeddings source)
            parse_student_spec({**config["student"], **entry})
        except ValueError as err:
            config_error(f"students ('{name}')", str(err))
        source = entry.get("embeddings")
        if source and sources.setdefault(source["name"], source) != source:
            config_error(f"students ('{name}').embeddings", f"two different sources are named '{source['name']}'")
        model = {**config["student"], **{k: entry[k] for k in ("preset", "overrides") if k in entry}}
        try:
            cfg = preset_config(model["preset"], **model.get("overrides", {}))
        except (ValueError, TypeError) as err:
            config_error(f"student.overrides (student '{name}')", str(err))
        if layers and entry["distill"]:
            try:
                resolve_layer_map(config["distill"]["layer_map"], cfg.num_recursions, layers)
            except ValueError as err:
                config_error("distill.layer_map", f"{err} (teacher '{TEACHER}', student '{name}')")


_check_students_against_the_teacher()


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


def _lr_by_tag():
    """(task, mode, tag) -> the configured float: paths carry a short tag, the job gets the value."""
    table = {}
    for task in TASKS:
        for mode in FT["modes"]:
            for lr in learning_rates(mode, task):
                key = (task, mode, lr_tag(lr))
                if key in table and table[key] != lr:
                    config_error(
                        f"finetune.learning_rates ({task}, {mode})",
                        f"{table[key]!r} and {lr!r} share the path tag lr{key[2]}; "
                        "give learning rates that differ in their first 6 significant digits",
                    )
                table[key] = lr
    return table


LR_BY_TAG = _lr_by_tag()


def exact_lr(wildcards):
    return repr(float(LR_BY_TAG[(wildcards.task, wildcards.mode, wildcards.lr)]))


def _finetune_settings(task):
    overrides = {k: v for k, v in FT["per_task"].get(task, {}).items() if k not in SWEEP_KEYS}
    where = f"finetune.per_task.{task}" if overrides else "finetune.settings"
    return settings.load_section("finetune.settings", {**FT["settings"], **overrides}, where)


FINETUNE_SETTINGS = {task: _finetune_settings(task) for task in TASKS}


def finetune_spec(wildcards):
    # `save` keeps the first seed's model of every run (the selected learning rate's among them),
    # not one per seed
    s = FINETUNE_SETTINGS[wildcards.task]
    first_seed = int(wildcards.seed) == seeds(wildcards.task)[0]
    return as_json({**s, "save": bool(s["save"] and first_seed)})


def finetune_metrics():
    return [
        f"results/finetune/{model}/{task}/{mode}/lr{lr_tag(lr)}/seed{seed}/metrics.json"
        for model in FT["models"]
        for task in TASKS
        for mode in modes_for(model)
        for lr in learning_rates(mode, task)
        for seed in seeds(task)
    ]


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


# `init: embeddings` students: one download per embedding source, shared by name
EMBEDDING_SOURCES = {s["embeddings"]["name"]: s["embeddings"] for s in STUDENTS.values() if s.get("embeddings")}


def embeddings_download_spec(name):
    # every teacher key explicit, so none of the teacher section's (offline) defaults fills in
    keys = ("source", "package", "path", "repo_id", "revision", "sha256")
    return {"name": name, **{k: EMBEDDING_SOURCES[name].get(k) for k in keys}, "has_mlm_head": None}


def embeddings_input(wildcards):
    source = STUDENTS[wildcards.student].get("embeddings")
    return f"resources/embeddings/{source['name']}" if source else []


def student_spec(wildcards):
    # a student's own preset / overrides win over the shared `student` section
    return as_json({**config["student"], **STUDENTS[wildcards.student]})


# Resources live in profiles (profiles/default for local runs, profiles/slurm for clusters). The
# local workflow profile is applied implicitly and its keys WIN over `--profile`, so a cluster
# profile given with `--profile` would silently run distillation with the laptop's memory and
# time limits: refuse that and name the right flag.
def _cluster_profiles_given_as_profile(argv):
    import yaml

    names = [a.split("=", 1)[1] for a in argv if a.startswith("--profile=")]
    names += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--profile"]
    names += [n for n in [os.environ.get("SNAKEMAKE_PROFILE")] if n and n != "none"]
    found = []
    for name in names:
        for folder in (Path(name), Path(workflow.basedir, "profiles", name)):
            files = [folder / f for f in ("profile.yaml", "config.yaml") if (folder / f).is_file()]
            if files:
                executor = (yaml.safe_load(files[0].read_text()) or {}).get("executor", "local")
                if executor not in ("local", "dryrun", "touch"):
                    found.append(name)
                break
    return found


if "--workflow-profile" not in " ".join(sys.argv) and Path(workflow.basedir, "profiles/default").is_dir():
    for _name in _cluster_profiles_given_as_profile(sys.argv[1:]):
        raise ValueError(
            f"profile {_name!r} sets a cluster executor: give it as `--workflow-profile {_name}` "
            "(with `--profile` the local profiles/default overrides its threads, memory and "
            "runtime); see docs/slurm.md#profiles"
        )


# published numbers shown beside ours (task, model, metric, value, source, protocol)
PUBLISHED = "config/published.csv"

SUMMARY_FILES = [
    "results/summary/results.csv",
    "results/summary/comparisons.csv",
    "results/summary/results.md",
    "results/summary/params.csv",
    "results/summary/metrics.json",
    "results/summary/scores.png",
]
