"""Floors: majority and TF-IDF + logistic regression on a real prepared task, in the fine-tuning
metrics.json schema, and their rows in the summary."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from minialbert import cli, floors
from minialbert.aggregate.build import aggregate
from minialbert.metrics import compute_metrics
from minialbert.tasks.build import prepare_task
from minialbert.tasks.folder import load_task, write_task

CONTRACT_KEYS = {"model", "task", "kind", "mode", "lr", "seed", "trainable_params", "total_params", "dev", "test",
                 "eval_split", "selection_metric", "best_epoch", "epochs", "train_examples", "settings", "history",
                 "extra", "protocol", "selection_split", "reported_split", "selection", "reported", "predictions",
                 "runtime"}


@pytest.fixture(scope="module")
def bbc(tmp_path_factory):
    out = tmp_path_factory.mktemp("tasks") / "bbc_topic"
    prepare_task("bbc_topic", {"source": "package", "dataset": "bbc_topic", "max_train": 200}, out)
    return out


@pytest.fixture
def cli_with_floors(monkeypatch):
    monkeypatch.setitem(cli.STAGES, "minialbert.floors", ["floors"])  # until cli.py lists it
    return cli.main


def test_floors_on_bbc_topic(bbc, tmp_path, cli_with_floors):
    task, rows = load_task(bbc)
    results = {}
    for kind in floors.KINDS:
        out = tmp_path / kind / "metrics.json"
        assert cli_with_floors(["floors", "--task", str(bbc), "--kind", kind, "--out", str(out)]) == 0
        results[kind] = json.loads(out.read_text())
    majority, tfidf = results["majority"], results["tfidf-logreg"]
    for m in results.values():
        assert CONTRACT_KEYS <= set(m) and m["mode"] == "floor" and m["lr"] == 0 and m["seed"] == 0
        assert m["protocol"] == "dev" and m["selection_split"] == "dev" and m["reported_split"] == "test"
        assert m["trainable_params"] is None and m["selection"] == m["dev"] and m["reported"] == m["test"]
        gold = m["predictions"]["test"]["gold"]
        assert gold == [r["label"] for r in rows["test"]] and len(m["predictions"]["test"]["pred"]) == len(gold)
        assert m["reported"] == compute_metrics("classification", m["predictions"]["test"]["pred"], gold, task["labels"])
        assert {"train_seconds", "total_seconds", "threads", "versions", "settings_sha256"} <= set(m["runtime"])
    top_label, top_count = Counter(r["label"] for r in rows["train"]).most_common(1)[0]
    assert set(majority["predictions"]["test"]["pred"]) == {top_label}
    assert majority["test"]["accuracy"] == pytest.approx(
        sum(r["label"] == top_label for r in rows["test"]) / len(rows["test"]))
    assert tfidf["settings"]["C"] in floors.C_GRID and len(tfidf["history"]) == len(floors.C_GRID)
    assert tfidf["test"]["accuracy"] > 0.8 > majority["test"]["accuracy"]

    summary = tmp_path / "summary"
    md = aggregate([tmp_path / "tfidf-logreg" / "metrics.json"], summary,
                   floors=[tmp_path / "majority" / "metrics.json"])
    assert "| tf-idf + LR | floor |  |  |  | 0.953 [" in md and "| majority | floor |  |  |  | 0.236 [" in md


def token_task(root, test_labels=True):
    task = {"name": "ner", "kind": "token_classification", "labels": ["B-X", "I-X", "O"], "metric": "f1",
            "test_has_labels": test_labels, "extra_splits": []}
    sentence = {"tokens": ["Alice", "met", "Bob"], "tags": ["B-X", "O", "B-X"]}
    write_task(root, task, {"train": [sentence, {"tokens": ["bob", "ran", "off", "fast"], "tags": ["B-X", "O", "O", "O"]}],
                            "dev": [sentence], "test": [{"tokens": ["Bob", "met", "Carol"], "tags": ["B-X", "O", "B-X"]}]})
    return root


def test_token_task_majority_tag_per_token_and_tfidf_skipped(tmp_path, capsys):
    folder = token_task(tmp_path / "ner")
    m = floors.run_floor(folder, "majority", tmp_path / "majority.json")
    assert m["predictions"]["test"]["pred"] == [["B-X", "O", "O"]]  # Carol is unseen: the overall majority, O
    assert m["test"]["f1"] == pytest.approx(2 / 3)
    skipped = floors.run_floor(folder, "tfidf-logreg", tmp_path / "tfidf.json")
    assert "classification or pair task" in skipped["skipped"]
    assert json.loads((tmp_path / "tfidf.json").read_text())["skipped"] == skipped["skipped"]


def classification_task(root):
    task = {"name": "glue_like", "kind": "classification", "labels": ["a", "b"], "metric": "accuracy",
            "test_has_labels": False, "extra_splits": [], "seed": 13}
    train = [{"text": f"{'good' if i % 3 else 'bad'} text {i}", "label": "a" if i % 3 else "b"} for i in range(60)]
    dev = [{"text": "good text", "label": "a"}, {"text": "bad text", "label": "b"}]
    write_task(root, task, {"train": train, "dev": dev, "test": [{"text": "good"}, {"text": "bad"}]})
    return root


@pytest.mark.parametrize("selection, fit_examples", [("train_slice", 54), ("reference", 60)])
def test_hidden_test_labels_report_dev(tmp_path, selection, fit_examples):
    folder = classification_task(tmp_path / "task")
    m = floors.run_floor(folder, "majority", tmp_path / "m.json", json.dumps({"selection": selection}))
    assert m["protocol"] == selection and m["reported_split"] == "dev" and m["test"] is None
    assert m["selection_split"] == ("train_slice" if selection == "train_slice" else "dev")
    assert m["train_examples"] == fit_examples and m["reported"] == m["dev"]
    assert m["predictions"]["dev"]["pred"] == ["a", "a"]


def test_bad_spec_names_the_key(tmp_path):
    folder = classification_task(tmp_path / "task")
    with pytest.raises(ValueError, match="selection"):
        floors.run_floor(folder, "majority", tmp_path / "m.json", {"selection": "nope"})
