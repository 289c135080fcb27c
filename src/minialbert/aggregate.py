"""Collect every fine-tuning result into one summary: tables, parameter counts and a plot.

Protocol (the paper's): for each (task, model, mode) the learning rate with the best mean *dev*
score over seeds is selected; the numbers reported are the mean and standard deviation over
seeds of that learning rate on the evaluation split named in each metrics file (`test` where the
test split has labels, otherwise `dev`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from . import atomic

# metric keys that are never scores (bookkeeping inside metrics dicts)
NON_SCORE_KEYS = {"loss", "n", "examples"}


def _load_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


REQUIRED_KEYS = ("model", "task", "mode", "lr", "seed", "dev", "eval_split", "selection_metric")


def load_runs(paths: list[str | Path]) -> pd.DataFrame:
    """One row per (run, metric) with the dev score and the evaluation-split score."""
    rows = []
    for path in paths:
        m = _load_json(Path(path))
        missing = [k for k in REQUIRED_KEYS if k not in m]
        if missing:
            raise ValueError(f"{path}: missing key(s) {', '.join(missing)}")
        final = m["test"] if m["eval_split"] == "test" else m["dev"]
        if final is None:
            raise ValueError(f"{path}: eval_split is {m['eval_split']!r} but that split has no metrics")
        for metric, value in final.items():
            if metric in NON_SCORE_KEYS or not isinstance(value, (int, float)):
                continue
            rows.append(
                {
                    "task": m["task"],
                    "model": m["model"],
                    "mode": m["mode"],
                    "lr": float(m["lr"]),
                    "seed": m["seed"],
                    "metric": metric,
                    "selection": metric == m["selection_metric"],
                    "dev_selection": m["dev"][m["selection_metric"]],
                    "value": float(value),
                    "eval_split": m["eval_split"],
                    "trainable_params": m.get("trainable_params"),
                    "total_params": m.get("total_params"),
                }
            )
    if not rows:
        raise ValueError("no fine-tuning metrics to aggregate")
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Best LR per (task, model, mode) on mean dev score; mean/std over seeds of every metric."""
    keys = ["task", "model", "mode"]
    sel = runs[runs["selection"]]
    dev = sel.groupby(keys + ["lr"], as_index=False)["dev_selection"].mean()
    best = dev.loc[dev.groupby(keys)["dev_selection"].idxmax()].rename(
        columns={"lr": "best_lr", "dev_selection": "dev_mean"}
    )
    chosen = runs.merge(best, left_on=keys + ["lr"], right_on=keys + ["best_lr"])
    table = (
        chosen.groupby(keys + ["metric"], as_index=False)
        .agg(
            best_lr=("best_lr", "first"),
            selection=("selection", "first"),
            eval_split=("eval_split", "first"),
            mean=("value", "mean"),
            std=("value", lambda v: float(v.std(ddof=1)) if len(v) > 1 else 0.0),
            n_seeds=("seed", "nunique"),
            dev_mean=("dev_mean", "first"),
            trainable_params=("trainable_params", "first"),
            total_params=("total_params", "first"),
        )
        .sort_values(keys + ["metric"])
    )
    return table.reset_index(drop=True)


def safetensors_numel(path: Path) -> int:
    """Parameter count from a safetensors header (no tensor is read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        return sum(math.prod(fh.get_slice(k).get_shape()) for k in fh.keys())


def parameter_table(students: list[Path], teacher: Path | None) -> pd.DataFrame:
    from .modeling_minialbert import MiniAlbertConfig, parameter_counts

    rows = []
    if teacher is not None:
        rows.append({"model": "teacher", "total": safetensors_numel(teacher / "model.safetensors")})
    for student in students:
        counts = parameter_counts(MiniAlbertConfig.from_pretrained(student))
        summary_path = student / "summary.json"
        summary = _load_json(summary_path) if summary_path.exists() else {}
        rows.append(
            {
                "model": student.name,
                **counts,
                "init": summary.get("init"),
                "distill_steps": summary.get("steps"),
            }
        )
    return pd.DataFrame(rows)


def distill_table(students: list[Path]) -> pd.DataFrame:
    rows = []
    for student in students:
        s = _load_json(student / "summary.json") if (student / "summary.json").exists() else {}
        final = s.get("final_losses") or {}
        rows.append(
            {
                "student": student.name,
                "init": s.get("init"),
                "distilled": s.get("distill"),
                "steps": s.get("steps"),
                "tokens_seen": s.get("tokens_seen"),
                "tokens_per_second": s.get("tokens_per_second"),
                "wall_seconds": s.get("wall_seconds"),
                **{f"loss_{k}": v for k, v in final.items()},
            }
        )
    return pd.DataFrame(rows)


def _fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}"


def markdown(table: pd.DataFrame, params: pd.DataFrame, distill: pd.DataFrame) -> str:
    sel = table[table["selection"]]
    lines = [
        "# MiniALBERT results",
        "",
        "Selection metric per task on the evaluation split (mean ± std over seeds at the learning rate",
        "with the best mean dev score). `random-init` and `teacher-init` students were not distilled:",
        "they show what distillation itself adds.",
        "",
    ]
    tasks = sorted(sel["task"].unique())
    header = ["model", "mode", *[f"{t} ({_metric_name(sel, t)}, {_split(sel, t)})" for t in tasks]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (model, mode), group in sel.groupby(["model", "mode"], sort=False):
        cells = []
        for t in tasks:
            row = group[group["task"] == t]
            cells.append(_fmt(row["mean"].iloc[0], row["std"].iloc[0], row["n_seeds"].iloc[0]) if len(row) else "-")
        lines.append(f"| {model} | {mode} | " + " | ".join(cells) + " |")
    lines += ["", "## All metrics", "", table_to_markdown(table.drop(columns=["selection"])), ""]
    lines += ["## Parameters", "", table_to_markdown(params), ""]
    if len(distill):
        lines += ["## Distillation", "", table_to_markdown(distill), ""]
    return "\n".join(lines)


def _metric_name(sel: pd.DataFrame, task: str) -> str:
    return sel[sel["task"] == task]["metric"].iloc[0]


def _split(sel: pd.DataFrame, task: str) -> str:
    return sel[sel["task"] == task]["eval_split"].iloc[0]


def table_to_markdown(df: pd.DataFrame) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}" if not math.isnan(v) else ""
        return "" if v is None else str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = table[table["selection"]]
    tasks = sorted(sel["task"].unique())
    arms = list(dict.fromkeys(zip(sel["model"], sel["mode"])))
    width = 0.8 / max(len(arms), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks) + 0.25 * len(arms)), 4))
    for i, (model, mode) in enumerate(arms):
        vals, errs = [], []
        for t in tasks:
            row = sel[(sel["task"] == t) & (sel["model"] == model) & (sel["mode"] == mode)]
            vals.append(row["mean"].iloc[0] if len(row) else float("nan"))
            errs.append(row["std"].iloc[0] if len(row) else 0.0)
        xs = [k + (i - (len(arms) - 1) / 2) * width for k in range(len(tasks))]
        ax.bar(xs, vals, width, yerr=errs, label=f"{model} / {mode}", capsize=2)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels([f"{t}\n({_metric_name(sel, t)})" for t in tasks])
    ax.set_ylabel("score on evaluation split")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    ax.set_ylim(bottom=min(0.0, float(sel["mean"].min()) - 0.05))
    fig.tight_layout()
    with atomic.staged_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def run(args) -> None:
    out = Path(args.out)
    students = [Path(s) for s in args.students]
    table = summarise(load_runs(args.metrics))
    params = parameter_table(students, Path(args.teacher) if args.teacher else None)
    distill = distill_table(students)

    sel = table[table["selection"]]
    dvc_metrics: dict = {}
    for row in sel.itertuples(index=False):
        dvc_metrics.setdefault(row.task, {})[f"{row.model}/{row.mode}"] = round(float(row.mean), 6)

    plot(table, out / "scores.png")
    with atomic.staged_file(out / "results.csv") as tmp:
        table.drop(columns=["selection"]).to_csv(tmp, index=False)
    with atomic.staged_file(out / "params.csv") as tmp:
        params.to_csv(tmp, index=False)
    atomic.write_text(out / "results.md", markdown(table, params, distill))
    atomic.write_json(out / "metrics.json", dvc_metrics)
    print(markdown(table, params, distill))


def register(subparsers) -> None:
    p = subparsers.add_parser("aggregate", help="summarise fine-tuning results into tables and a plot")
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.json files of fine-tuning runs")
    p.add_argument("--students", nargs="*", default=[], help="distilled student checkpoint folders")
    p.add_argument("--teacher", default=None, help="teacher model folder (for its parameter count)")
    p.add_argument("--out", required=True, help="output folder (results/summary)")
    p.set_defaults(func=run)
