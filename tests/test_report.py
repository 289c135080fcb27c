"""The report: figures, tables, the inference benchmark's table, and the HTML report in a browser.

Inputs are a synthetic summary in the formats the aggregate, fine-tuning and distillation write
(docs/ARCHITECTURE.md), laid out as tests/config/tiny.yaml names them, with tiny real model folders
so `bench-inference` runs. The report test drives workflow/rules/report.smk through Snakemake (a
small Snakefile that includes only it; the upstream files are given, not built), renders
`snakemake --report` and reads the page back from headless Chromium's DOM.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from minialbert import report
from minialbert.report import figures, tables
from minialbert.report.inputs import Inputs

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = yaml.safe_load((REPO / "tests/config/tiny.yaml").read_text())
STUDENTS = [s["name"] for s in TINY["students"]]
TASKS = {"bbc_topic": ("accuracy", ["accuracy", "macro_f1"]), "wnut16": ("f1", ["f1", "precision", "recall"])}
BASE = {"teacher": 0.90, "distilled": 0.84, "random-init": 0.55}


def cli(*argv: str) -> None:
    parser = argparse.ArgumentParser()
    report.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


# ---- a synthetic run ----------------------------------------------------------------------------

def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def arms():
    yield "teacher", "full"
    for s in STUDENTS:
        yield s, "full"
        yield s, "adapter"


def score(model: str, mode: str, task: str) -> float:
    return round(BASE[model] - (0.06 if mode == "adapter" else 0.0) - (0.3 if task == "wnut16" else 0.0), 4)


def tiny_models(root: Path) -> None:
    """A tiny BERT teacher and tiny MiniALBERT students (random weights), as the pipeline lays them out."""
    import torch
    from transformers import BertConfig, BertModel

    from minialbert import MiniAlbertConfig, MiniAlbertForMaskedLM

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=1200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=160)).save_pretrained(root / "resources/teacher/minilm")
    for s in STUDENTS:
        cfg = MiniAlbertConfig(vocab_size=1200, embedding_size=16, hidden_size=32, num_recursions=2,
                               num_attention_heads=4, intermediate_size=64, max_position_embeddings=160)
        MiniAlbertForMaskedLM(cfg).save_pretrained(root / f"results/distill/{s}")


def distill_logs(root: Path) -> None:
    for s in STUDENTS:
        distilled = s == "distilled"
        train = [{"step": k, "tokens": 256 * k, "loss": 9 / k ** 0.3, "mlm": 7 / k ** 0.3, "att": 2e-4 / k ** 0.2,
                  "hid": 0.6 / k ** 0.5, "tokens_per_second": 5000.0} for k in range(1, 9)] if distilled else []
        evals = [{"step": k, "tokens": 256 * k, "mlm": 7.2 / k ** 0.3, "att": 2e-4 / k ** 0.2, "hid": 0.7 / k ** 0.5,
                  "total": 9.3 / k ** 0.3} for k in (4, 8)] if distilled else []
        write_json(root / f"results/distill/{s}/train_log.json", {"train": train, "eval": evals})
        write_json(root / f"results/distill/{s}/summary.json", {
            "name": s, "init": "teacher" if distilled else "random", "distill": distilled, "steps": 8 if distilled else 0,
            "tokens_seen": 2048 if distilled else 0, "tokens_per_second": 5000.0 if distilled else None,
            "wall_seconds": 1.5, "final_losses": {"mlm": 3.5, "att": 1e-4, "hid": 0.2, "total": 4.6} if distilled else {},
            "precision": "fp32", "device": "cpu"})


def finetune_metrics(root: Path) -> list[Path]:
    paths = []
    for model, mode in arms():
        for task, (metric, metrics) in TASKS.items():
            lr = TINY["finetune"]["learning_rates"][mode][0]
            value = score(model, mode, task)
            scores = {m: value - 0.01 * i for i, m in enumerate(metrics)}
            kind = "token_classification" if task == "wnut16" else "classification"
            gold = [["B-person", "O"], ["O"]] if kind == "token_classification" else ["business", "sport"]
            m = {"model": model, "task": task, "kind": kind, "mode": mode, "lr": lr, "seed": 1,
                 "trainable_params": 1000 if mode == "adapter" else 50000, "total_params": 50000,
                 "dev": scores, "test": scores, "eval_split": "test", "reported_split": "test",
                 "selection_split": "dev", "protocol": "dev", "selection": scores, "reported": scores,
                 "selection_metric": metric, "best_epoch": 1, "epochs": 1, "train_examples": 40, "settings": {},
                 "history": [], "extra": {}, "predictions": {"test": {"gold": gold, "pred": gold}},
                 "runtime": {"train_seconds": 1.0, "examples_per_second": 40.0}}
            if model != "teacher":
                m["anytime"] = [{"num_recursions": k, "metrics": {mm: v - 0.1 * (2 - k) for mm, v in scores.items()},
                                 "sequences_per_second": 400.0 / k} for k in (1, 2)]
            path = root / f"results/finetune/{model}/{task}/{mode}/lr{lr:g}/seed1/metrics.json"
            write_json(path, m)
            paths.append(path)
    return paths


def summary(root: Path) -> Path:
    """results.csv, comparisons.csv, params.csv, results.md, metrics.json as the aggregate writes them."""
    out = root / "results/summary"
    out.mkdir(parents=True, exist_ok=True)
    rows, comps = [], []
    for task, (metric, metrics) in TASKS.items():
        for model, mode in [*arms(), ("majority", "floor"), ("tfidf-logreg", "floor")]:
            value = score(model, mode, task) if model in BASE else (0.25 if model == "majority" else 0.7)
            floor = mode == "floor"
            for i, m in enumerate(metrics):
                v = value - 0.01 * i
                rows.append({"task": task, "model": model, "mode": mode, "metric": m, "split": "test",
                             "protocol": "dev", "selection_split": "dev",
                             "best_lr": 0 if floor else TINY["finetune"]["learning_rates"][mode][0],
                             "n_seeds": 1, "mean": v, "ci_low": v - 0.04, "ci_high": v + 0.03, "std": 0.0,
                             "trainable_params": "" if floor else 1000, "total_params": "" if floor else 50000,
                             "unique_params": "" if floor else (500000 if model == "teacher" else 60000)})
        for s in STUDENTS:
            d = score(s, "adapter", task) - score(s, "full", task)
            comps.append({"task": task, "metric": metric, "split": "test", "comparison": "difference",
                          "a": f"{s}/adapter", "b": f"{s}/full",
                          "diff": d, "ci_low": d - 0.05, "ci_high": d + 0.05 if s == "distilled" else d + 0.1,
                          "distinguishable": s == "distilled"})
            r = 100 * score(s, "full", task) / score("teacher", "full", task)
            comps.append({"task": task, "metric": metric, "split": "test", "comparison": "retention %",
                          "a": f"{s}/full", "b": "teacher/full", "diff": r, "ci_low": r - 3, "ci_high": r + 3,
                          "distinguishable": True})
    import pandas as pd

    pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    pd.DataFrame(comps).to_csv(out / "comparisons.csv", index=False)
    pd.DataFrame([{"model": "teacher", "total": 500000},
                  *[{"model": s, "embeddings": 20000, "shared_layer": 30000, "adapters": 1000, "total": 60000,
                     "init": "teacher", "distill_steps": 8} for s in STUDENTS]]).to_csv(out / "params.csv", index=False)
    header = "| model | mode | bbc_topic (accuracy, test) | wnut16 (f1, test) | params |\n|---|---|---:|---:|---:|\n"
    body = "".join(f"| {m} | {mode} | {score(m, mode, 'bbc_topic'):.3f} | {score(m, mode, 'wnut16'):.3f} | 60.0k |\n"
                   for m, mode in arms())
    (out / "results.md").write_text(f"# MiniALBERT results\n\n{header}{body}\nAdapter vs full: distinguishable "
                                    "for distilled on bbc_topic.\n\n## All metrics\n\n| task | mean |\n|---|---|\n"
                                    "| bbc_topic | 0.9 |\n")
    write_json(out / "metrics.json", {t: {f"{m}/{mode}": score(m, mode, t) for m, mode in arms()} for t in TASKS})
    return out


def inference_table(root: Path) -> Path:
    """What `bench-inference` writes (the benchmark itself is tested on its own, untimed)."""
    import pandas as pd

    from minialbert.report.inference import COLUMNS

    path = root / "results/summary/inference.csv"
    rows = [{"model": m, "model_type": "bert" if m == "teacher" else "minialbert", "layers": 2, "hidden_size": 32,
             "params": 500000 if m == "teacher" else 60000, "device": "cpu", "device_name": "Test CPU",
             "precision": "fp32", "threads": 2, "batch_size": b, "seq_len": 128, "repeats": 5,
             "latency_ms_median": ms * b, "latency_ms_p90": 1.1 * ms * b, "sequences_per_second": 1000 / ms,
             "tokens_per_second": 128000 / ms, "timed_as": m if m == "teacher" else STUDENTS[0], "torch": "2"}
            for m, ms in (("teacher", 4.0), *((s, 1.0) for s in STUDENTS)) for b in (1, 32)]
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    tiny_models(root)
    distill_logs(root)
    finetune_metrics(root)
    summary(root)
    inference_table(root)  # newer than the model folders: Snakemake keeps it
    return root


def inputs(root: Path) -> Inputs:
    return Inputs.read(summary=root / "results/summary", distill=[root / f"results/distill/{s}" for s in STUDENTS],
                       finetune=sorted(root.glob("results/finetune/**/metrics.json")),
                       inference=root / "results/summary/inference.csv", order=["teacher", *STUDENTS])


# ---- figures and tables -------------------------------------------------------------------------

def test_every_figure_is_drawn_from_a_full_summary(run_dir, tmp_path):
    status = figures.draw_all(inputs(run_dir), tmp_path / "figures")
    assert status == {stem: "drawn" for stem in report.FIGURES}
    for stem in report.FIGURES:
        assert (tmp_path / f"figures/{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in (tmp_path / f"figures/{stem}.svg").read_text()[:2000]


def test_adapter_differences_are_adapter_minus_full(run_dir):
    data = inputs(run_dir)
    data.comparisons.loc[0, ["a", "b"]] = ["distilled/full", "distilled/adapter"]  # the other order
    rows = {(r["task"], r["model"]): r for r in figures.adapter_differences(data)}
    assert set(rows) == {(t, s) for t in TASKS for s in STUDENTS}
    first = rows[("bbc_topic", "distilled")]
    assert first["diff"] == pytest.approx(0.06) and first["ci_low"] < first["diff"] < first["ci_high"]
    assert rows[("wnut16", "distilled")]["diff"] == pytest.approx(-0.06)


def test_missing_inputs_give_placeholders_not_errors(tmp_path):
    status = figures.draw_all(Inputs(), tmp_path)
    assert all(state != "drawn" for state in status.values()), status
    assert all((tmp_path / f"{stem}.svg").is_file() and (tmp_path / f"{stem}.png").is_file() for stem in status)
    written = tables.write_all(Inputs(), tmp_path / "tables")
    assert {p.name for p in written} == {"results.html", "headline.html", "params.html", "distill.html", "inference.html"}


def test_tables_name_every_task_model_and_the_frozen_random_adapter(run_dir, tmp_path):
    tables.write_all(inputs(run_dir), tmp_path)
    assert sorted(p.name for p in (tmp_path / "tasks").iterdir()) == ["bbc_topic.html", "wnut16.html"]
    task = (tmp_path / "tasks/bbc_topic.html").read_text()
    assert task.index(">teacher<") < task.index(">distilled<") < task.index(">majority<")
    assert "random-init (frozen random encoder)" in task and "Paired comparisons" in task
    assert "<table>" in (tmp_path / "headline.html").read_text() and "All metrics" in (tmp_path / "results.html").read_text()
    assert "All metrics" not in (tmp_path / "headline.html").read_text()
    assert "60.0k (60,000)" in (tmp_path / "params.html").read_text()


def test_bench_inference_writes_one_row_per_model_and_batch(run_dir, tmp_path):
    out = tmp_path / "inference.csv"
    models = [run_dir / "resources/teacher/minilm", *(run_dir / f"results/distill/{s}" for s in STUDENTS)]
    cli("bench-inference", "--model", *map(str, models), "--names", "teacher", *STUDENTS, "--batch-sizes", "1", "4",
        "--seq-len", "16", "--threads", "1", "--device", "cpu", "--out", str(out))
    import pandas as pd

    table = pd.read_csv(out)
    assert list(zip(table["model"], table["batch_size"])) == [(m, b) for m in ("teacher", *STUDENTS) for b in (1, 4)]
    assert list(table["model_type"].unique()) == ["bert", "minialbert"] and (table["seq_len"] == 16).all()
    assert (table["sequences_per_second"] > 0).all() and table["device_name"].str.len().min() > 0
    # students of one shape are timed once
    assert list(table["timed_as"]) == ["teacher"] * 2 + [STUDENTS[0]] * 2 * len(STUDENTS)
    with pytest.raises(ValueError, match="--names"):
        cli("bench-inference", "--model", str(run_dir / "results/distill/distilled"), "--names", "a", "b", "--out", str(out))


# ---- the HTML report, through Snakemake and a browser -------------------------------------------

HARNESS = """\
# Only the report's rules, on a run whose upstream files already exist.
from snakemake.utils import validate

from minialbert.settings import SCHEMA_PATH

validate(config, str(SCHEMA_PATH))


include: "workflow/rules/common.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        REPORT_FILES,
    default_target: True
"""


def browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def snakemake(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run([str(BIN / "snakemake"), "-s", "Harness.smk", "--configfile", "tests/config/tiny.yaml", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout + proc.stderr


def test_html_report_shows_the_main_table_and_every_figure(run_dir):
    exe = browser()
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed: .ci/run installs it (apt-get install chromium)")
        pytest.skip("no chromium on PATH (apt-get install chromium) to render the report")
    for item in ("workflow", "tests/config"):
        shutil.copytree(REPO / item, run_dir / item, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    (run_dir / "Harness.smk").write_text(HARNESS)
    snakemake(run_dir, "--cores", "2")
    assert (run_dir / "results/summary/inference.csv").is_file()
    snakemake(run_dir, "--report", "report.html")

    dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--virtual-time-budget=10000", "--dump-dom", (run_dir / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    first_view = dom[dom.index('class="minialbert-first-view"'):]
    table = re.search(r"<table>.*?</table>", first_view, flags=re.S)
    assert table and "bbc_topic (accuracy, test)" in table.group(0) and "random-init" in table.group(0)
    assert "All metrics" not in first_view  # the full listing has its own page
    for stem in report.FIGURES:
        figure = re.search(rf'<figure id="figure-{stem}".*?</figure>', first_view, flags=re.S)
        assert figure and "<svg" in figure.group(0) and "<figcaption>" in figure.group(0), stem
    # the menu lists the report's categories in their numbered order
    menu = [c for c in ("1 Results", "2 Per task", "3 Figures", "4 Models") if c in dom]
    assert menu == ["1 Results", "2 Per task", "3 Figures", "4 Models"]
