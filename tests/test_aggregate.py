"""Aggregation: best learning rate on dev, mean/std over seeds on the evaluation split."""

from __future__ import annotations

import json
import math

import pytest

from minialbert import aggregate, atomic
from minialbert.cli import main


def metrics_file(root, model, task, mode, lr, seed, dev, test, split="test", metric="accuracy"):
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


def test_best_lr_is_chosen_on_dev_and_test_is_reported(runs):
    table = aggregate.summarise(aggregate.load_runs(runs))
    row = table[(table.task == "topic") & (table["mode"] == "full") & (table.metric == "accuracy")].iloc[0]
    assert row.best_lr == pytest.approx(1e-4)
    assert row["mean"] == pytest.approx(0.65)
    assert row["std"] == pytest.approx(math.sqrt(((0.6 - 0.65) ** 2 + (0.7 - 0.65) ** 2) / 1))
    assert row.n_seeds == 2 and row.eval_split == "test" and row.dev_mean == pytest.approx(0.8)
    f1 = table[(table.task == "topic") & (table["mode"] == "full") & (table.metric == "macro_f1")].iloc[0]
    assert f1["mean"] == pytest.approx(0.55)
    cola = table[table.task == "cola"].iloc[0]
    assert cola.eval_split == "dev" and cola["mean"] == pytest.approx(0.3) and cola["std"] == 0.0


def test_cli_writes_every_summary_file(runs, tmp_path):
    out = tmp_path / "summary"
    assert main(["aggregate", "--metrics", *map(str, runs), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"results.csv", "results.md", "params.csv", "metrics.json", "scores.png"}
    dvc = json.loads((out / "metrics.json").read_text())
    assert dvc == {"topic": {"student/full": 0.65, "student/adapter": 0.5}, "cola": {"student/full": 0.3}}
    md = (out / "results.md").read_text()
    assert "| student | full | 0.300 | 0.650 ± 0.071 |" in md


def test_missing_key_names_the_file(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text(json.dumps({"model": "m", "task": "t"}))
    with pytest.raises(ValueError, match=r"metrics.json: missing key\(s\) mode"):
        aggregate.load_runs([bad])


def test_safetensors_count_matches_torch(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(3, 4), "b": torch.zeros(5)}, tmp_path / "m.safetensors")
    assert aggregate.safetensors_numel(tmp_path / "m.safetensors") == 17
