"""The aggregate stage end to end: read, select, bootstrap, compare, write results/summary/."""

from __future__ import annotations

import time
from pathlib import Path

from .. import atomic, provenance
from .compare import comparisons, floor_flags
from .load import load_published, load_runs, student_summaries
from .params import distill_table, parameter_table
from .plot import plot
from .select import FLOOR_MODE, choose_arms, ordered
from .stats import N_RESAMPLES, SEED, Bootstrap
from .markdown import display_name, markdown
from .tables import comparisons_frame, results_frame


def dvc_metrics(arms, results) -> dict:
    """{task: {"model/mode": score}}: the selection metric on the reported split (dvc metrics)."""
    out: dict = {}
    for arm in arms:
        row = results[(results["task"] == arm.task) & (results["model"] == arm.model)
                      & (results["mode"] == arm.mode) & (results["split"] == arm.first.reported_split)
                      & (results["metric"] == arm.first.selection_metric)]
        if len(row):
            out.setdefault(arm.task, {})[arm.label] = round(float(row["mean"].iloc[0]), 6)
    return out


def aggregate(metrics: list[str], out: str | Path, students: list[str] = (), teacher: str | None = None,
              floors: list[str] = (), published: str | None = None) -> str:
    """Write every file of results/summary/ to `out`; returns results.md."""
    t0 = time.perf_counter()
    out = Path(out)
    student_dirs = [Path(s) for s in students]
    summaries = student_summaries(student_dirs)
    floor_runs = load_runs(list(floors), required=False)
    for run in floor_runs:
        if run.mode != FLOOR_MODE:
            raise ValueError(f"{run.path}: given with --floors but its mode is {run.mode!r}, "
                             f"not {FLOOR_MODE!r}")
    runs = load_runs(list(metrics)) + floor_runs
    arms = ordered(choose_arms(runs), [d.name for d in student_dirs])
    boot = Bootstrap()
    results = results_frame(arms, boot)
    comp = comparisons_frame(comparisons(arms, [d.name for d in student_dirs], boot))
    flags = floor_flags(arms, boot)
    for problem in boot.problems:
        print(f"aggregate: {problem}")
    params = parameter_table(student_dirs, summaries, Path(teacher) if teacher else None)
    text = markdown(results, comp, flags, arms, summaries, load_published(published), params,
                    distill_table(summaries))

    selection_metric = {a.task: a.first.selection_metric for a in arms}
    labels = {(a.model, a.mode): f"{display_name(a.model, a.mode, summaries)} / {a.mode}" for a in arms}
    plot(results, selection_metric, labels, out / "scores.png")
    for name, frame in (("results.csv", results), ("comparisons.csv", comp), ("params.csv", params)):
        with atomic.staged_file(out / name) as tmp:
            frame.to_csv(tmp, index=False)
    atomic.write_text(out / "results.md", text)
    settings = {"n_resamples": N_RESAMPLES, "seed": SEED, "metrics": sorted(map(str, metrics)),
                "floors": sorted(map(str, floors)), "published": published}
    runtime = {"total_seconds": round(time.perf_counter() - t0, 3),
               **provenance.record(settings=settings, seed=SEED)}
    atomic.write_json(out / "metrics.json", {**dvc_metrics(arms, results), "runtime": runtime})
    return text

