"""Aggregation: learning rate on the selection split, bootstrap intervals over examples (and seeds),
paired comparisons, floors, published numbers, and the files of results/summary/."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from minialbert import atomic
from minialbert.aggregate import load, resample, select, stats
from minialbert.aggregate.build import aggregate
from minialbert.aggregate.params import safetensors_numel
from minialbert.aggregate.markdown import millions
from minialbert.cli import main
from minialbert.metrics import compute_metrics

LABELS = ["neg", "pos"]


def metrics_file(root, model, task, mode, lr, seed, dev, test, split="test", metric="accuracy"):
    """A metrics file as fine-tuning wrote it before predictions and protocols existed."""
    path = root / model / task / mode / f"lr{lr:g}" / f"seed{seed}" / "metrics.json"
    atomic.write_json(
        path,
        {
            "model": model, "task": task, "mode": mode, "lr": lr, "seed": seed,
            "dev": {metric: dev, "loss": 0.5}, "test": None if split == "dev" else {metric: test, "macro_f1": test - 0.1},
            "eval_split": split, "selection_metric": metric,
            "trainable_params": 10 if mode == "adapter" else 100, "total_params": 100,
        },
    )
    return path


@pytest.fixture
def runs(tmp_path):
    paths = []
    # lr 1e-4 wins on dev (mean 0.8 vs 0.7) although its test scores are lower: selection is on dev
    for seed, (dev, test) in enumerate([(0.8, 0.60), (0.8, 0.70)], start=1):
        paths.append(metrics_file(tmp_path, "student", "topic", "full", 1e-4, seed, dev, test))
    for seed, (dev, test) in enumerate([(0.7, 0.90), (0.7, 0.95)], start=1):
        paths.append(metrics_file(tmp_path, "student", "topic", "full", 1e-3, seed, dev, test))
    paths.append(metrics_file(tmp_path, "student", "topic", "adapter", 1e-3, 1, 0.6, 0.5))
    # a task without test labels reports dev
    paths.append(metrics_file(tmp_path, "student", "cola", "full", 1e-4, 1, 0.3, None, split="dev", metric="matthews"))
    return paths


def summarise(paths):
    from minialbert.aggregate.tables import results_frame

    arms = select.choose_arms(load.load_runs(paths))
    return results_frame(arms, stats.Bootstrap(n_resamples=200))


def test_best_lr_is_chosen_on_dev_and_test_is_reported(runs):
    table = summarise(runs)
    row = table[(table.task == "topic") & (table["mode"] == "full") & (table.metric == "accuracy")].iloc[0]
    assert row.best_lr == pytest.approx(1e-4)
    assert row["mean"] == pytest.approx(0.65)
    assert row["std"] == pytest.approx(math.sqrt(((0.6 - 0.65) ** 2 + (0.7 - 0.65) ** 2) / 1))
    assert row.n_seeds == 2 and row.split == "test" and row.selection_mean == pytest.approx(0.8)
    f1 = table[(table.task == "topic") & (table["mode"] == "full") & (table.metric == "macro_f1")].iloc[0]
    assert f1["mean"] == pytest.approx(0.55)
    cola = table[table.task == "cola"].iloc[0]
    assert cola.split == "dev" and cola["mean"] == pytest.approx(0.3) and cola["std"] == 0.0
    # without predictions the interval resamples seeds only: within the two seeds' scores, or absent
    assert 0.6 <= row.ci_low <= row.ci_high <= 0.7
    assert math.isnan(cola.ci_low) and cola.protocol == "reference" and row.protocol == "dev"


def test_cli_writes_every_summary_file(runs, tmp_path):
    out = tmp_path / "summary"
    assert main(["aggregate", "--metrics", *map(str, runs), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"results.csv", "comparisons.csv", "results.md", "params.csv",
                                               "metrics.json", "scores.png"}
    dvc = json.loads((out / "metrics.json").read_text())
    runtime = dvc.pop("runtime")
    assert dvc == {"topic": {"student/full": 0.65, "student/adapter": 0.5}, "cola": {"student/full": 0.3}}
    assert {"versions", "git_commit", "settings_sha256", "total_seconds"} <= set(runtime)
    md = (out / "results.md").read_text()
    assert "| student | full |  | 100 | 100 | 0.650 [0.600, 0.700] | 0.300 |" in md
    with (out / "results.csv").open() as fh:
        header = next(csv.reader(fh))
    assert header[:16] == ["task", "model", "mode", "metric", "split", "protocol", "selection_split", "best_lr",
                           "n_seeds", "mean", "ci_low", "ci_high", "std", "trainable_params", "total_params",
                           "unique_params"]


def test_missing_key_names_the_file(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text(json.dumps({"model": "m", "task": "t"}))
    with pytest.raises(ValueError, match=r"metrics.json: missing key\(s\) mode"):
        load.load_runs([bad])


def test_missing_or_corrupt_file_names_the_file(tmp_path, runs, capsys):
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"model": ')
    with pytest.raises(ValueError, match=r"corrupt.json: not valid JSON"):
        load.load_runs([runs[0], corrupt])
    with pytest.raises(SystemExit):
        main(["aggregate", "--metrics", str(runs[0]), str(tmp_path / "gone.json"), "--out", str(tmp_path / "s")])
    assert "gone.json: missing" in capsys.readouterr().err


def test_safetensors_count_matches_torch(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(3, 4), "b": torch.zeros(5)}, tmp_path / "m.safetensors")
    assert safetensors_numel(tmp_path / "m.safetensors") == 17


# --------------------------------------------------------------------------------------------
# synthetic files with predictions, in the contract's format


def gold_labels(n, seed=0):
    return [LABELS[i] for i in np.random.default_rng(seed).integers(0, 2, n)]


def noisy(gold, accuracy, seed):
    """Predictions that get exactly round(accuracy * n) examples right."""
    rng = np.random.default_rng(seed)
    wrong = set(rng.choice(len(gold), len(gold) - round(accuracy * len(gold)), replace=False).tolist())
    return [LABELS[1 - LABELS.index(g)] if i in wrong else g for i, g in enumerate(gold)]


def run_file(root, model, task, mode, lr, seed, preds, gold, selection=None, extra=None, protocol="dev",
             kind="classification", params=5_912_345):
    """A metrics file with predictions; `extra` maps split -> (gold, pred)."""
    reported_split = "test" if protocol == "dev" else "dev"
    reported = compute_metrics(kind, preds, gold, LABELS)
    splits = {reported_split: (gold, preds), **(extra or {})}
    extras = {name: compute_metrics(kind, p, g, LABELS) for name, (g, p) in (extra or {}).items()}
    selection = reported if selection is None else {"accuracy": selection, "f1": selection}
    path = root / model / task / mode / f"lr{lr:g}" / f"seed{seed}" / "metrics.json"
    atomic.write_json(path, {
        "model": model, "task": task, "kind": kind, "mode": mode, "lr": lr, "seed": seed,
        "trainable_params": params // 10 if mode == "adapter" else params, "total_params": params,
        "dev": selection if protocol == "dev" else reported, "test": reported if protocol == "dev" else None,
        "eval_split": reported_split, "selection_metric": "accuracy", "best_epoch": 1, "epochs": 1,
        "protocol": protocol, "selection_split": {"dev": "dev", "reference": "dev"}.get(protocol, protocol),
        "reported_split": reported_split, "selection": selection, "reported": reported, "extra": extras,
        "predictions": {s: {"gold": g, "pred": p} for s, (g, p) in splits.items()},
        "runtime": {"train_seconds": 1.0},
    })
    return path


def arms_of(paths, students=()):
    return select.ordered(select.choose_arms(load.load_runs(paths)), list(students))


@pytest.mark.parametrize("kind", ["classification", "pair_classification", "regression", "token_classification"])
def test_vectorised_resamples_equal_compute_metrics(kind):
    rng = np.random.default_rng(1)
    n = 40
    if kind == "regression":
        gold = rng.normal(size=n).round(1).tolist()
        pred = (np.array(gold) + rng.normal(size=n)).round(1).tolist()
        labels = None
    elif kind == "token_classification":
        tags = ["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
        gold = [rng.choice(tags, rng.integers(1, 9)).tolist() for _ in range(n)]
        pred = [[t if rng.random() < 0.7 else str(rng.choice(tags)) for t in s] for s in gold]
        labels = None
    else:
        labels = ["a", "b", "c"] if kind == "classification" else LABELS
        gold = rng.choice(labels, n).tolist()
        pred = [g if rng.random() < 0.6 else str(rng.choice(labels)) for g in gold]
    idx = rng.integers(0, n, size=(30, n))
    samples, problems = resample.metric_samples(kind, gold, pred, labels, idx)
    assert not problems
    assert set(samples) == set(compute_metrics(kind, pred, gold, labels)) - {"n"}
    for b, rows in enumerate(idx):
        expect = compute_metrics(kind, [pred[i] for i in rows], [gold[i] for i in rows], labels)
        for metric, values in samples.items():
            want = math.nan if expect[metric] is None else expect[metric]
            assert values[b] == pytest.approx(want, abs=1e-9, nan_ok=True), (metric, b)


def test_binary_positive_class_is_recovered_without_labels():
    gold = ["not_equivalent", "equivalent", "equivalent", "not_equivalent", "equivalent", "equivalent"]
    pred = ["not_equivalent", "equivalent", "not_equivalent", "not_equivalent", "equivalent", "equivalent"]
    order = ["not_equivalent", "equivalent"]  # the dataset's order: F1 of "equivalent"
    expected = compute_metrics("classification", pred, gold, order)
    assert expected["f1"] != compute_metrics("classification", pred, gold, order[::-1])["f1"]
    assert resample.infer_labels("classification", gold, pred, expected) == order


def test_interval_is_over_examples_seeded_and_covers_the_mean(tmp_path):
    gold = gold_labels(400)
    path = run_file(tmp_path, "teacher", "topic", "full", 1e-4, 1, noisy(gold, 0.8, 1), gold)
    (arm,) = arms_of([path])
    est = stats.Bootstrap().estimates(arm, "test")["accuracy"]
    again = stats.Bootstrap().estimates(arm, "test")["accuracy"]
    assert est.mean == pytest.approx(0.8) and est.ci == again.ci
    low, high = est.ci
    se = math.sqrt(0.8 * 0.2 / 400)  # binomial: the interval is about +- 1.96 standard errors
    assert low < 0.8 < high and (high - low) / 2 == pytest.approx(1.96 * se, rel=0.2)


def test_adding_a_seed_updates_mean_and_interval(tmp_path):
    gold = gold_labels(300)
    paths = [run_file(tmp_path, "s", "topic", "full", 1e-4, 1, noisy(gold, 0.8, 1), gold)]
    one = summarise(paths)
    paths.append(run_file(tmp_path, "s", "topic", "full", 1e-4, 2, noisy(gold, 0.7, 2), gold))
    two = summarise(paths)

    def acc(t):
        return t[(t.metric == "accuracy")].iloc[0]

    assert acc(one).n_seeds == 1 and acc(two).n_seeds == 2
    assert acc(one)["mean"] == pytest.approx(0.8) and acc(two)["mean"] == pytest.approx(0.75)
    # seed variation widens the interval (two levels: seeds and examples)
    assert acc(two).ci_high - acc(two).ci_low > acc(one).ci_high - acc(one).ci_low
    assert acc(two).ci_low < 0.75 < acc(two).ci_high


def test_selection_split_chooses_the_lr_per_protocol(tmp_path):
    gold = gold_labels(100)
    paths = [
        # train_slice: lr 1e-3 is better on the slice, worse on the reported dev: the slice decides
        run_file(tmp_path, "s", "glue", "full", 1e-4, 1, noisy(gold, 0.9, 1), gold, selection=0.6, protocol="train_slice"),
        run_file(tmp_path, "s", "glue", "full", 1e-3, 1, noisy(gold, 0.7, 2), gold, selection=0.8, protocol="train_slice"),
        # reference: the reported dev itself decides
        run_file(tmp_path, "r", "glue", "full", 1e-4, 1, noisy(gold, 0.9, 1), gold, protocol="reference"),
        run_file(tmp_path, "r", "glue", "full", 1e-3, 1, noisy(gold, 0.7, 2), gold, protocol="reference"),
    ]
    t = summarise(paths)
    s = t[(t.model == "s") & (t.metric == "accuracy")].iloc[0]
    r = t[(t.model == "r") & (t.metric == "accuracy")].iloc[0]
    assert s.best_lr == pytest.approx(1e-3) and s["mean"] == pytest.approx(0.7) and s.split == "dev"
    assert s.selection_split == "train_slice" and s.protocol == "train_slice"
    assert r.best_lr == pytest.approx(1e-4) and r["mean"] == pytest.approx(0.9) and r.protocol == "reference"


def test_extra_splits_are_their_own_rows(tmp_path):
    gold, gold_mm = gold_labels(200, 1), gold_labels(150, 2)
    path = run_file(tmp_path, "teacher", "mnli", "full", 1e-4, 1, noisy(gold, 0.8, 1), gold, protocol="reference",
                    extra={"dev_mismatched": (gold_mm, noisy(gold_mm, 0.7, 2))})
    t = summarise([path])
    acc = t[t.metric == "accuracy"].set_index("split")
    assert acc.loc["dev", "mean"] == pytest.approx(0.8) and acc.loc["dev_mismatched", "mean"] == pytest.approx(0.7)
    assert acc.loc["dev_mismatched", "ci_low"] < 0.7 < acc.loc["dev_mismatched", "ci_high"]


def write_student(root, name, init, distill):
    from minialbert.modeling_minialbert import preset_config

    folder = root / "students" / name
    preset_config("offline-default").save_pretrained(folder)
    atomic.write_json(folder / "summary.json", {"name": name, "init": init, "distill": distill,
                                                "steps": 10 if distill else 0})
    return folder


@pytest.fixture
def offline_like(tmp_path):
    """Teacher + three students x two modes on one task, and a majority floor."""
    gold = gold_labels(500)
    accuracy = {("teacher", "full"): 0.90, ("distilled", "full"): 0.88, ("distilled", "adapter"): 0.80,
                ("teacher-init", "full"): 0.88, ("teacher-init", "adapter"): 0.79,
                ("random-init", "full"): 0.70, ("random-init", "adapter"): 0.60}
    paths = [run_file(tmp_path, m, "topic", mode, 1e-4, 1, noisy(gold, acc, i), gold,
                      params=22_700_000 if m == "teacher" else 5_912_345)
             for i, ((m, mode), acc) in enumerate(accuracy.items())]
    majority = [max(LABELS, key=gold.count)] * len(gold)
    floor = run_file(tmp_path, "majority", "topic", "floor", 0, 0, majority, gold, params=0)
    students = [write_student(tmp_path, name, init, name == "distilled")
                for name, init in (("distilled", "teacher"), ("teacher-init", "teacher"), ("random-init", "random"))]
    return {"paths": paths, "floor": floor, "students": students, "gold": gold}


def test_paired_comparisons_and_retention(offline_like, tmp_path):
    out = tmp_path / "summary"
    aggregate(offline_like["paths"], out, students=offline_like["students"], floors=[offline_like["floor"]])
    with (out / "comparisons.csv").open() as fh:
        rows = {(r["comparison"], r["a"], r["b"], r["task"]): r for r in csv.DictReader(fh)}
    big = rows[("difference", "distilled/full", "random-init/full", "topic")]
    assert float(big["diff"]) == pytest.approx(0.18) and big["distinguishable"] == "True"
    assert float(big["ci_low"]) > 0
    tie = rows[("difference", "distilled/full", "teacher-init/full", "topic")]
    assert float(tie["diff"]) == pytest.approx(0.0, abs=1e-12) and tie["distinguishable"] == "False"
    assert rows[("difference", "distilled/adapter", "distilled/full", "topic")]["distinguishable"] == "True"
    keep = rows[("retention %", "distilled/full", "teacher/full", "topic")]
    assert float(keep["diff"]) == pytest.approx(100 * 0.88 / 0.90)
    mean = rows[("retention %", "distilled/adapter", "teacher/full", "mean over tasks")]
    assert float(mean["diff"]) == pytest.approx(100 * 0.80 / 0.90) and mean["distinguishable"] == "True"
    # every pair of students in each mode, adapter vs full per student, retention per student arm
    kinds = [k[0] for k in rows]
    assert kinds.count("difference") == 3 * 2 + 3 and kinds.count("retention %") == 6 + 6

    md = (out / "results.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    order = [line.split(" | ")[0][2:] for line in lines[1:9]]
    assert order == ["teacher", "distilled", "distilled", "teacher-init", "teacher-init", "random-init",
                     "random-init (frozen random encoder)", "majority"]
    assert "| distilled | full | teacher + distillation | 5.9M | 5.9M | 0.880 [" in md
    assert "| random-init (frozen random encoder) | adapter | random | 5.9M | 0.6M | 0.600 [" in md
    assert "topic accuracy (test)" in lines[0] and "retention" in lines[0]
    assert "- topic accuracy (test): distilled/full - random-init/full = +0.180 [" in md
    assert "- mean over tasks: distilled/adapter retains 88.9% [" in md
    assert "teacher not clearly above majority" not in md
    assert "bootstrap, 1000 resamples of the reported split's examples" in md


def test_teacher_not_clearly_above_majority_is_flagged(tmp_path):
    gold = gold_labels(60)
    majority = [max(LABELS, key=gold.count)] * len(gold)
    acc = gold.count(majority[0]) / len(gold) + 0.04
    teacher = run_file(tmp_path, "teacher", "topic", "full", 1e-4, 1, noisy(gold, acc, 3), gold)
    floor = run_file(tmp_path, "majority", "topic", "floor", 0, 0, majority, gold, params=0)
    out = tmp_path / "summary"
    aggregate([teacher], out, floors=[floor])
    assert "**topic (test): teacher not clearly above majority**" in (out / "results.md").read_text()


def test_published_rows_sit_beside_ours(offline_like, tmp_path):
    published = tmp_path / "published.csv"
    published.write_text("task,model,metric,value,source,protocol\n"
                         "topic,MiniALBERT-128,accuracy,0.875,https://example.org/card,reference\n"
                         "other,MiniALBERT-128,accuracy,0.5,https://example.org/card,reference\n")
    out = tmp_path / "summary"
    md = aggregate(offline_like["paths"][:2], out, published=str(published))
    assert "| published (reference): MiniALBERT-128 |  |  |  |  | 0.875 |  |" in md
    assert "https://example.org/card" in md and "other accuracy" not in md


def test_shipped_published_csv_has_the_columns(repo_root):
    rows = load.load_published(repo_root / "config" / "published.csv")
    with (repo_root / "config" / "published.csv").open() as fh:
        assert next(csv.reader(fh)) == list(load.PUBLISHED_COLUMNS)
    assert all(r["source"] for r in rows)


def test_millions():
    assert millions(5_912_345) == "5.9M" and millions(48_000) == "48.0k" and millions(100) == "100"
    assert millions(None) == ""
