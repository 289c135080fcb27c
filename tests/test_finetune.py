"""Fine-tuning end to end on tiny tasks with tiny models (real teacher tokenizer, vocab 30522)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from minialbert import MiniAlbertConfig, MiniAlbertForMaskedLM, MiniAlbertForSequenceClassification
from minialbert import optim
from minialbert.cli import main as cli_main
from minialbert.finetune import loop
from minialbert.finetune.batches import tokenize_split
from minialbert.finetune.protocol import slice_indices
from minialbert.finetune.results import comparable
from minialbert.metrics import compute_metrics
from minialbert.tasks.build import prepare_task
from minialbert.tasks.folder import load_task

SETTINGS = {"epochs": 2, "batch_size": 4, "max_length": 32, "threads": 1}
CONTRACT_KEYS = {"model", "task", "mode", "lr", "seed", "trainable_params", "total_params", "dev",
                 "test", "eval_split", "selection_metric", "best_epoch", "train_seconds",
                 "examples_per_second", "epochs", "precision"}
TINY = dict(vocab_size=30522, embedding_size=16, hidden_size=32, num_recursions=2,
            num_attention_heads=4, intermediate_size=64, adapter_reduction_factor=4,
            max_position_embeddings=64)


# --------------------------------------------------------------------------------------------
# fixtures: tiny checkpoints and tiny tasks, written once per module


@pytest.fixture(scope="module")
def tokenizer(teacher_package_dir):
    return AutoTokenizer.from_pretrained(teacher_package_dir, local_files_only=True)


def _checkpoint(d: Path, model, tokenizer) -> Path:
    model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    return _checkpoint(tmp_path_factory.mktemp("student"),
                       MiniAlbertForMaskedLM(MiniAlbertConfig(**TINY)), tokenizer)


@pytest.fixture(scope="module")
def plain_student_dir(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    return _checkpoint(tmp_path_factory.mktemp("plain_student"),
                       MiniAlbertForMaskedLM(MiniAlbertConfig(**TINY, use_adapters=False)), tokenizer)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, tokenizer):
    """A tiny teacher-like folder: a `BertModel` checkpoint (no head), like all-MiniLM-L6-v2."""
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=64,
                                max_position_embeddings=64))
    return _checkpoint(tmp_path_factory.mktemp("bert"), bert, tokenizer)


WORDS = {"sport": "football goal match team", "money": "bank market shares profit",
         "music": "song album band concert"}


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def task_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    src = root / "src"
    src.mkdir()
    out = {}
    # classification: 3 labels, given train/dev/test
    def clf(n, start):
        labels = list(WORDS)
        return "text,label\n" + "".join(
            f"{WORDS[labels[i % 3]]} item {i},{labels[i % 3]}\n" for i in range(start, start + n))
    spec = {"source": "files", "kind": "classification",
            "train": _write(src / "clf_train.csv", clf(24, 0)),
            "dev": _write(src / "clf_dev.csv", clf(9, 100)),
            "test": _write(src / "clf_test.csv", clf(9, 200))}
    prepare_task("clf", spec, root / "clf")
    out["classification"] = root / "clf"
    # pair classification (jsonl), carved splits
    lines = [json.dumps({"a": f"is {w} here {i}", "b": f"{w if i % 2 else 'nothing'} there",
                         "y": "same" if i % 2 else "different"})
             for i, w in enumerate(["cats", "dogs", "birds", "fish", "cows", "owls"] * 6)]
    spec = {"source": "files", "kind": "pair_classification", "text_column": "a",
            "text_pair_column": "b", "label_column": "y", "dev_fraction": 0.25,
            "test_fraction": 0.25, "train": _write(src / "pairs.jsonl", "\n".join(lines) + "\n")}
    prepare_task("pairs", spec, root / "pairs")
    out["pair_classification"] = root / "pairs"
    # pair regression (csv)
    rows = "".join(f"a sentence {i},another one {i % 5},{(i % 5) / 4:.2f}\n" for i in range(32))
    spec = {"source": "files", "kind": "regression", "text_column": "s1",
            "text_pair_column": "s2", "label_column": "score", "dev_fraction": 0.25,
            "test_fraction": 0.25, "train": _write(src / "sts.csv", "s1,s2,score\n" + rows)}
    prepare_task("sts", spec, root / "sts")
    out["regression"] = root / "sts"
    # token classification (CoNLL); "Kaczmarczykowski" splits into several sub-tokens; the
    # trailing number keeps the 30 sentences distinct (carving drops duplicates)
    sents = ["John\tB-PER\nKaczmarczykowski\tI-PER\nvisited\tO\nParis\tB-LOC\n.\tO\n",
             "Paris\tB-LOC\nis\tO\nnice\tO\n",
             "Mary\tB-PER\nlives\tO\nin\tO\nNew\tB-LOC\nYork\tI-LOC\n"]
    spec = {"source": "files", "format": "conll", "dev_fraction": 0.25, "test_fraction": 0.25,
            "train": _write(src / "ner.tsv", "\n".join(f"{sents[i % 3]}{i}\tO\n" for i in range(30)))}
    prepare_task("ner", spec, root / "ner")
    out["token_classification"] = root / "ner"
    return out


def run(model_dir, task_dir, out: Path, mode="full", lr=1e-3, seed=1, **settings):
    spec = {**SETTINGS, **settings}
    return loop.run_finetune(model_dir, "tiny", task_dir, mode, lr, seed, spec, out / "metrics.json")


# --------------------------------------------------------------------------------------------
# every kind x every mode on the tiny MiniALBERT


@pytest.mark.parametrize("mode", ["full", "adapter", "lora"])
@pytest.mark.parametrize("kind", ["classification", "pair_classification", "regression",
                                  "token_classification"])
def test_kind_and_mode_end_to_end(tmp_path, student_dir, task_dirs, kind, mode):
    task_dir = task_dirs[kind]
    result = run(student_dir, task_dir, tmp_path, mode=mode)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert CONTRACT_KEYS <= set(on_disk)
    task = json.loads((task_dir / "task.json").read_text())
    assert on_disk["task"] == task["name"] and on_disk["mode"] == mode
    assert on_disk["eval_split"] == "test" and on_disk["selection_metric"] == task["metric"]
    assert on_disk["best_epoch"] in (1, 2) and len(on_disk["history"]) == 2
    for split in ("dev", "test"):
        metrics = on_disk[split]
        assert set(task["metrics"]) <= set(metrics)
        assert metrics["n"] == task["counts"][split]
    assert on_disk["dev"] == on_disk["history"][on_disk["best_epoch"] - 1]["dev"]
    assert 0 < on_disk["trainable_params"] <= on_disk["total_params"]
    if mode == "full":
        assert on_disk["trainable_params"] == on_disk["total_params"]
    else:
        assert on_disk["trainable_params"] < on_disk["total_params"] / 10


def _head_params(n_out: int) -> int:
    return TINY["hidden_size"] * n_out + n_out


def test_adapter_mode_trains_only_adapters_and_head(tmp_path, student_dir, plain_student_dir,
                                                    task_dirs):
    reference = MiniAlbertForSequenceClassification(MiniAlbertConfig(**TINY, num_labels=3))
    adapters = sum(p.numel() for n, p in reference.named_parameters() if "adapters" in n)
    H, a = TINY["hidden_size"], TINY["hidden_size"] // TINY["adapter_reduction_factor"]
    # 2N adapters, each down (H*a + a), up (a*H + H), LayerNorm (2H)
    assert adapters == 2 * TINY["num_recursions"] * (H * a + a + a * H + H + 2 * H)
    total = sum(p.numel() for p in reference.parameters())
    result = run(student_dir, task_dirs["classification"], tmp_path / "a", mode="adapter", epochs=1)
    assert result["trainable_params"] == adapters + _head_params(3)
    assert result["total_params"] == total
    # a checkpoint without adapters gets fresh ones: same counts
    result = run(plain_student_dir, task_dirs["classification"], tmp_path / "b", mode="adapter",
                 epochs=1)
    assert result["trainable_params"] == adapters + _head_params(3)
    assert result["total_params"] == total


def test_lora_counts(tmp_path, student_dir, bert_dir, task_dirs):
    r, H = 4, TINY["hidden_size"]
    result = run(student_dir, task_dirs["classification"], tmp_path / "s", mode="lora", epochs=1,
                 lora_r=r)
    # one shared query and one shared value Linear: A (r x H) + B (H x r) each, plus the head
    assert result["trainable_params"] == 2 * (2 * r * H) + _head_params(3)
    result = run(bert_dir, task_dirs["classification"], tmp_path / "b", mode="lora", epochs=1,
                 lora_r=r)
    # BERT: query and value in each of 2 layers; head = classifier (the pooler stays frozen)
    assert result["trainable_params"] == 2 * 2 * (2 * r * H) + _head_params(3)


# --------------------------------------------------------------------------------------------
# teacher path: a BERT checkpoint goes through the same code


def test_teacher_checkpoint_same_code_path(tmp_path, bert_dir, task_dirs):
    result = run(bert_dir, task_dirs["token_classification"], tmp_path / "ner", mode="full",
                 precision="fp32")
    assert result["model_type"] == "bert" and result["precision"] == "fp32"
    assert result["trainable_params"] == result["total_params"]
    result = run(bert_dir, task_dirs["regression"], tmp_path / "sts", mode="full", epochs=1)
    assert result["test"]["n"] == 8
    with pytest.raises(ValueError, match="adapter mode needs a MiniALBERT checkpoint"):
        run(bert_dir, task_dirs["classification"], tmp_path / "adapter", mode="adapter")
    assert not (tmp_path / "adapter" / "metrics.json").exists()


def test_real_teacher_folder(tmp_path, teacher_package_dir, task_dirs):
    """The packaged all-MiniLM-L6-v2 folder (a BertModel, no head) fine-tunes as it is."""
    result = run(teacher_package_dir, task_dirs["classification"], tmp_path, mode="full",
                 epochs=1, max_length=16, max_train_examples=8, batch_size=8)
    assert result["train_examples"] == 8
    assert result["total_params"] > 22_000_000


# --------------------------------------------------------------------------------------------
# training details


def test_determinism_and_cache(tmp_path, student_dir, task_dirs):
    task_dir = task_dirs["pair_classification"]
    shutil.rmtree(task_dir / "cache", ignore_errors=True)
    first = run(student_dir, task_dir, tmp_path / "1", seed=7)
    second = run(student_dir, task_dir, tmp_path / "2", seed=7)
    assert first["cache_hit"] is False and second["cache_hit"] is True
    assert len(list((task_dir / "cache").glob("*.npz"))) == 1
    for key in ("dev", "test", "best_epoch"):
        assert first[key] == second[key]
    assert [h["train_loss"] for h in first["history"]] == [h["train_loss"] for h in second["history"]]
    # another max_length is another cache entry
    assert run(student_dir, task_dir, tmp_path / "3", max_length=24, epochs=1)["cache_hit"] is False
    # a changed task file invalidates the cache (verified by sha256), never a silent hit
    train = task_dir / "dev.jsonl"
    original = train.read_bytes()
    try:
        train.write_bytes(original.replace(b"is ", b"was ", 1))
        assert run(student_dir, task_dir, tmp_path / "4", epochs=1)["cache_hit"] is False
    finally:
        train.write_bytes(original)


def test_ner_label_alignment(tokenizer):
    task = {"kind": "token_classification", "labels": ["B-PER", "I-PER", "O"]}
    rows = [{"tokens": ["John", "Kaczmarczykowski", "runs"], "tags": ["B-PER", "B-PER", "O"]}]
    word_ids = tokenizer(rows[0]["tokens"], is_split_into_words=True).word_ids()
    n_sub = word_ids.count(1)
    assert n_sub > 1
    word = tokenize_split(tokenizer, task, rows, 32, "word")
    sub = tokenize_split(tokenizer, task, rows, 32, "subtoken")
    # [CLS] John Kacz ##... runs [SEP]: first sub-token carries the tag, the rest -100 ...
    assert word["y"].tolist() == [-100, 0, 0] + [-100] * (n_sub - 1) + [2, -100]
    # ... or, sub-token scheme (the reference code), every sub-token its word's tag as is, B- too
    assert sub["y"].tolist() == [-100, 0, 0] + [0] * (n_sub - 1) + [2, -100]
    assert word["widx"].tolist() == [-1, 0, 1] + [-1] * (n_sub - 1) + [2, -1]
    assert word["gold"].tolist() == [0, 0, 2]


def test_ner_subtoken_scheme_and_truncation(tmp_path, student_dir, task_dirs):
    result = run(student_dir, task_dirs["token_classification"], tmp_path / "s", epochs=1,
                 label_scheme="subtoken")
    assert result["settings"]["label_scheme"] == "subtoken"
    # word-level scoring keeps every word even when max_length cuts the sentence (cut words = O)
    result = run(student_dir, task_dirs["token_classification"], tmp_path / "w", epochs=1,
                 max_length=4)
    assert result["test"]["n"] == 8


def test_unlabelled_test_reports_dev(tmp_path, student_dir, task_dirs):
    src = tmp_path / "src"
    src.mkdir()
    labelled = (task_dirs["classification"] / "train.jsonl").read_text()
    spec = {"source": "files", "kind": "classification", "train": _write(src / "train.jsonl", labelled),
            "dev": _write(src / "dev.jsonl", labelled),
            "test": _write(src / "test.jsonl", '{"text": "no label here"}\n{"text": "nor here"}\n')}
    prepare_task("glue_like", spec, tmp_path / "task")
    result = run(student_dir, tmp_path / "task", tmp_path / "out", epochs=1)
    assert result["test"] is None and result["eval_split"] == "dev"


def test_max_train_examples_and_cosine(tmp_path, student_dir, task_dirs):
    result = run(student_dir, task_dirs["classification"], tmp_path, max_train_examples=9,
                 scheduler="cosine", warmup_ratio=0.2, epochs=1)
    assert result["train_examples"] == 9 and result["settings"]["scheduler"] == "cosine"


def test_settings_validation_and_cli(tmp_path, student_dir, task_dirs, capsys):
    with pytest.raises(ValueError, match="finetune.settings: unknown key\\(s\\) epoch \\(known: "):
        run(student_dir, task_dirs["classification"], tmp_path, epoch=1)
    with pytest.raises(ValueError,
                       match="finetune.settings.scheduler: 'step' is not one of \\['linear', 'cosine'\\]"):
        run(student_dir, task_dirs["classification"], tmp_path, scheduler="step")
    out = tmp_path / "cli" / "metrics.json"
    args = ["finetune", "--model", str(student_dir), "--model-name", "tiny", "--task",
            str(task_dirs["classification"]), "--mode", "full", "--lr", "1e-3", "--seed", "3",
            "--spec", json.dumps({**SETTINGS, "epochs": 1}), "--out", str(out)]
    assert cli_main(args) == 0
    assert json.loads(out.read_text())["seed"] == 3
    bad = tmp_path / "bad" / "metrics.json"
    with pytest.raises(SystemExit):
        cli_main(args[:-4] + ["--spec", '{"lora_rank": 4}', "--out", str(bad)])
    assert "unknown key(s) lora_rank" in capsys.readouterr().err
    assert not bad.exists()
    with pytest.raises(SystemExit):
        cli_main(args[:5] + ["--task", str(tmp_path / "missing")] + args[7:])
    assert "task.json" in capsys.readouterr().err


def test_cli_lr_reaches_the_optimiser_exactly(tmp_path, student_dir, task_dirs, monkeypatch):
    """The rule passes the configured lr as Python's shortest repr; nothing may round it."""
    optimisers = []

    def recording_adamw(named_params, **kwargs):
        optimisers.append(optim.adamw(named_params, **kwargs))
        return optimisers[-1]

    monkeypatch.setattr(loop, "adamw", recording_adamw)
    out = tmp_path / "metrics.json"
    assert cli_main(["finetune", "--model", str(student_dir), "--model-name", "tiny", "--task",
                     str(task_dirs["classification"]), "--mode", "full", "--lr", "1.2345678e-4",
                     "--seed", "1", "--spec", json.dumps({**SETTINGS, "epochs": 1}),
                     "--out", str(out)]) == 0
    assert json.loads(out.read_text())["lr"] == 1.2345678e-4
    assert '"lr": 0.00012345678,' in out.read_text()
    (optimiser,) = optimisers
    assert {g["initial_lr"] for g in optimiser.param_groups} == {1.2345678e-4}


# --------------------------------------------------------------------------------------------
# selection protocol, predictions, runtime (the metrics.json contract)


@pytest.fixture(scope="module")
def glue_like(tmp_path_factory, task_dirs):
    """Test labels hidden (dev reported), plus an extra labelled eval split, as GLUE MNLI."""
    root = tmp_path_factory.mktemp("glue_like")
    src = root / "src"
    src.mkdir()
    clf = task_dirs["classification"]
    spec = {"source": "files", "kind": "classification",
            "train": _write(src / "train.jsonl", (clf / "train.jsonl").read_text()),
            "dev": _write(src / "dev.jsonl", (clf / "dev.jsonl").read_text()),
            "test": _write(src / "test.jsonl", '{"text": "no label here"}\n{"text": "nor here"}\n')}
    prepare_task("glue_like", spec, root / "task")
    task = json.loads((root / "task" / "task.json").read_text())
    shutil.copy(clf / "test.jsonl", root / "task" / "dev_mismatched.jsonl")
    n_extra = json.loads((clf / "task.json").read_text())["counts"]["test"]
    task["extra_splits"], task["counts"]["dev_mismatched"] = ["dev_mismatched"], n_extra
    (root / "task" / "task.json").write_text(json.dumps(task))
    return root / "task", n_extra


def _metrics_of(result: dict, split: str) -> dict:
    """The metrics recomputed from metrics.json's predictions, as the aggregate does."""
    preds = result["predictions"][split]
    return compute_metrics(result["kind"], preds["pred"], preds["gold"], sorted(WORDS))


def test_dev_protocol_predictions_and_runtime(tmp_path, student_dir, task_dirs):
    result = run(student_dir, task_dirs["classification"], tmp_path, selection="reference")
    # a labelled test: select on dev, report test, whatever `selection` says
    assert (result["protocol"], result["selection_split"], result["reported_split"]) == ("dev", "dev", "test")
    assert result["selection"] == result["dev"] and result["reported"] == result["test"]
    assert set(result["predictions"]) == {"test"}
    preds = result["predictions"]["test"]
    test_rows = [json.loads(line) for line in (task_dirs["classification"] / "test.jsonl").open()]
    assert preds["gold"] == [r["label"] for r in test_rows]  # file order, label strings
    assert set(preds["pred"]) <= set(WORDS)
    assert _metrics_of(result, "test") == result["test"]
    runtime = result["runtime"]
    assert {"train_seconds", "examples_per_second", "total_seconds", "threads", "cache_hit",
            "versions", "git_commit", "settings_sha256", "device", "precision", "seed"} <= set(runtime)
    assert runtime["seed"] == 1 and runtime["train_seconds"] == result["train_seconds"]
    assert len(runtime["epoch_seconds"]) == 2 and all("train_seconds" not in h for h in result["history"])


def test_train_slice_protocol(tmp_path, student_dir, bert_dir, glue_like):
    task_dir, n_extra = glue_like
    n_train = json.loads((task_dir / "task.json").read_text())["counts"]["train"]
    result = run(student_dir, task_dir, tmp_path / "a", slice_fraction=0.25)
    assert (result["protocol"], result["selection_split"], result["reported_split"]) == (
        "train_slice", "train_slice", "dev")
    size = result["selection"]["n"]
    assert size == round(0.25 * n_train) and result["train_examples"] == n_train - size
    assert result["selection"] == result["history"][result["best_epoch"] - 1]["train_slice"]
    assert "dev" not in result["history"][0]  # dev is never looked at before the end
    assert result["test"] is None and result["eval_split"] == "dev"
    assert result["reported"] == result["dev"] == _metrics_of(result, "dev")
    assert set(result["predictions"]) == {"dev", "dev_mismatched"}
    assert result["extra"]["dev_mismatched"] == _metrics_of(result, "dev_mismatched")
    assert result["extra"]["dev_mismatched"]["n"] == n_extra
    assert result["anytime"][-1]["metrics"] == result["reported"]
    # the slice is the task's: the same for another model, mode, learning rate and seed
    other = run(bert_dir, task_dir, tmp_path / "b", mode="lora", lr=5e-4, seed=9, slice_fraction=0.25)
    assert other["train_examples"] == result["train_examples"]
    with pytest.raises(ValueError, match="slice_fraction: .* gives a selection slice of 0"):
        run(student_dir, task_dir, tmp_path / "c", slice_fraction=0.01)


def test_train_slice_is_stratified_and_seeded_by_the_task(tmp_path, tokenizer, task_dirs):
    task, rows = load_task(task_dirs["classification"])
    arrays = tokenize_split(tokenizer, task, rows["train"], 32, "word")
    picked = slice_indices(arrays, task, 0.25, 100)
    assert picked == slice_indices(arrays, task, 0.25, 100) and len(picked) == 6
    assert Counter(rows["train"][i]["label"] for i in picked) == {label: 2 for label in WORDS}
    assert slice_indices(arrays, {**task, "seed": 14}, 0.25, 100) != picked
    assert len(slice_indices(arrays, task, 0.25, 3)) == 3  # slice_max caps it


def test_reference_protocol_keeps_the_last_epoch(tmp_path, student_dir, glue_like):
    result = run(student_dir, glue_like[0], tmp_path, selection="reference", epochs=3)
    assert (result["protocol"], result["selection_split"], result["reported_split"]) == (
        "reference", "dev", "dev")
    assert result["best_epoch"] == 3
    assert result["selection"] == result["reported"] == result["dev"] == result["history"][-1]["dev"]
    assert result["train_examples"] == json.loads((glue_like[0] / "task.json").read_text())["counts"]["train"]
    assert result["dev"] == _metrics_of(result, "dev")


@pytest.mark.parametrize("label_scheme", ["word", "subtoken"])
def test_token_and_regression_predictions(tmp_path, student_dir, task_dirs, tokenizer, label_scheme):
    result = run(student_dir, task_dirs["token_classification"], tmp_path / "ner", epochs=1,
                 label_scheme=label_scheme)
    preds = result["predictions"]["test"]
    task, rows = load_task(task_dirs["token_classification"])
    sentences = rows["test"]
    if label_scheme == "word":
        assert preds["gold"] == [r["tags"] for r in sentences]
    else:  # one tag per sub-token, the word's own tag (the reference)
        for r, gold in zip(sentences, preds["gold"]):
            word_ids = [w for w in tokenizer(r["tokens"], is_split_into_words=True).word_ids()
                        if w is not None]
            assert gold == [r["tags"][w] for w in word_ids]
    assert [len(p) for p in preds["pred"]] == [len(g) for g in preds["gold"]]
    assert compute_metrics("token_classification", preds["pred"], preds["gold"]) == result["test"]
    result = run(student_dir, task_dirs["regression"], tmp_path / "sts", epochs=1)
    preds = result["predictions"]["test"]
    assert all(isinstance(v, float) for v in preds["gold"] + preds["pred"])
    assert compute_metrics("regression", preds["pred"], preds["gold"]) == result["test"]


def test_comparable_drops_only_what_differs_between_runs(tmp_path, student_dir, task_dirs):
    first = run(student_dir, task_dirs["classification"], tmp_path / "1", epochs=1, seed=4)
    second = run(student_dir, task_dirs["classification"], tmp_path / "2", epochs=1, seed=4)
    assert comparable(first) == comparable(second)
    assert "runtime" not in comparable(first) and "predictions" in comparable(first)


def test_balanced_class_weights_values_and_effect(tmp_path, student_dir, task_dirs):
    """n / (k * count) per class over train (absent classes weigh 0); a run records the setting,
    and on a balanced task the weights are all 1, so it trains exactly as the unweighted run."""
    from minialbert.finetune.batches import Split

    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2])  # counts 6, 2, 4 -> 12 / (4 * c)
    arrays = {"offsets": np.arange(len(y) + 1), "ids": np.zeros(len(y), dtype=np.int64), "y": y,
              "has_labels": np.array([True])}
    w = loop.balanced_class_weights(Split(arrays, "classification", 0), 4)
    assert torch.allclose(w, torch.tensor([0.5, 1.5, 0.75, 0.0]))
    # every class carries the same total weight
    assert torch.allclose(torch.bincount(torch.from_numpy(y), minlength=4)[:3] * w[:3], torch.tensor(3.0))
    subset = Split(arrays, "classification", 0, subset=[0, 6, 8])
    assert torch.allclose(loop.balanced_class_weights(subset, 3), torch.tensor([1.0, 1.0, 1.0]))

    plain = run(student_dir, task_dirs["classification"], tmp_path / "none", epochs=1)
    weighted = run(student_dir, task_dirs["classification"], tmp_path / "bal", epochs=1,
                   class_weights="balanced")
    assert plain["settings"]["class_weights"] == "none"
    assert weighted["settings"]["class_weights"] == "balanced"
    # the tiny task is balanced (8 per class): balanced weights are all 1, the same arithmetic
    assert weighted["history"][0]["train_loss"] == pytest.approx(plain["history"][0]["train_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="class_weights"):
        run(student_dir, task_dirs["classification"], tmp_path / "bad", epochs=1, class_weights="auto")
