"""Is the fine-tuning budget sufficient? The random-init student's full fine-tuning, on dev, at 1x, 2x
(and 4x) the configured epochs.

Usage (in a checkout where `make run` finished; dev splits only, test is never read):

    .venv/bin/python benchmarks/budget_curve.py . --multipliers 1 2 4 --jobs 2

The budget is sufficient for a task when doubling it changes the dev score by less than the half
width of that score's 95% interval (a percentile bootstrap over dev examples, as the summary's).
Each run is the pipeline's own `minialbert finetune` with the settings and learning rate the run
used (read from its metrics.json), only `epochs` multiplied; it runs on a copy of the task folder
whose test split is the dev split, so the per-example predictions it keeps are dev's. The epoch is
chosen on dev, as in the pipeline, so every budget is scored by the same rule. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from minialbert.aggregate.resample import metric_samples

N_RESAMPLES = 1000
MODEL, MODE = "random-init", "full"


def dev_task_copy(task_dir: Path, dest: Path) -> Path:
    shutil.copytree(task_dir, dest, ignore=shutil.ignore_patterns("cache"))
    shutil.copy(task_dir / "dev.jsonl", dest / "test.jsonl")  # the kept predictions become dev's
    return dest


def finetune(run: Path, task: str, used: dict, mult: int, work: Path) -> dict:
    settings = {**used["settings"], "epochs": used["settings"]["epochs"] * mult, "save": False, "anytime": False}
    task_dir = dev_task_copy(run / "resources/tasks" / task, work / f"{task}-x{mult}")
    out = work / f"{task}-x{mult}.json"
    cmd = [str(Path(sys.executable).parent / "minialbert"), "finetune", "--model", str(run / "results/distill" / MODEL),
           "--model-name", MODEL, "--task", str(task_dir), "--mode", MODE, "--lr", repr(used["lr"]),
           "--seed", str(used["seed"]), "--spec", json.dumps(settings), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode:
        raise RuntimeError(f"{task} x{mult}: {proc.stderr[-2000:]}")
    return json.loads(out.read_text())


def dev_score(m: dict, task: dict) -> tuple[float, float, float]:
    pred = m["predictions"]["test"]  # = dev (see dev_task_copy)
    metric = m["selection_metric"]
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(pred["gold"]), size=(N_RESAMPLES, len(pred["gold"])))
    samples, problems = metric_samples(task["kind"], pred["gold"], pred["pred"], task["labels"] or None, idx,
                                       expected=m["test"])
    if metric not in samples:
        raise RuntimeError(f"{task['name']}: no interval for {metric}: {problems}")
    samples = samples[metric]
    lo, hi = np.nanpercentile(samples, [2.5, 97.5])  # a resample with constant predictions has no correlation
    return float(m["test"][metric]), float(lo), float(hi)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--multipliers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tasks", nargs="*", default=None, help="default: every task of the run")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    run = args.run.resolve()
    used = {}
    for path in sorted((run / "results/finetune" / MODEL).glob(f"*/{MODE}/*/seed*/metrics.json")):
        m = json.loads(path.read_text())
        used.setdefault(m["task"], m)  # the first LR / seed of each task (the default has one)
    tasks = args.tasks or sorted(used)
    work = Path(tempfile.mkdtemp(prefix="budget-"))
    jobs = [(t, k) for k in args.multipliers for t in tasks]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(zip(jobs, pool.map(lambda j: finetune(run, j[0], used[j[0]], j[1], work), jobs)))
    print("| task | metric | epochs | dev score [95% interval] | best epoch | change vs half the budget | "
          "half width | doubling changes it less than its interval? |")
    print("|---|---|---:|---|---:|---:|---:|---|")
    for t in tasks:
        task = json.loads((run / "resources/tasks" / t / "task.json").read_text())
        prev = None
        for k in args.multipliers:
            m = results[(t, k)]
            score, lo, hi = dev_score(m, task)
            change = "" if prev is None else f"{score - prev[0]:+.3f}"
            verdict = "" if prev is None else ("yes" if abs(score - prev[0]) < (prev[2] - prev[1]) / 2 else "**no**")
            print(f"| {t} | {m['selection_metric']} | {m['epochs']} | {score:.3f} [{lo:.3f}, {hi:.3f}] | "
                  f"{m['best_epoch']} | {change} | {(hi - lo) / 2:.3f} | {verdict} |")
            prev = (score, lo, hi)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
