"""results.md: the summary a reader opens first.

It leads with one table: a row per (model, mode), teacher first, then the students in config
order, floors last, then published numbers; a column per task and evaluation split holding the
task's selection metric as "mean [95% interval]", plus the fine-tuned model's parameter count and
the retention of the teacher's mean score. The text after it states which comparisons (`compare`)
are distinguishable from zero, and which teachers are not clearly above the majority floor.
"""

from __future__ import annotations

import math

import pandas as pd

from .compare import MEAN_OVER_TASKS
from .select import FLOOR_MODE, TEACHER, Arm
from .stats import N_RESAMPLES

FLOOR_LABELS = {"majority": "majority", "tfidf-logreg": "tf-idf + LR"}
PROTOCOLS = {
    "dev": "epoch and learning rate chosen on dev, test reported",
    "train_slice": "epoch and learning rate chosen on a held-out slice of train, dev reported",
    "reference": "the reference code's rule: last epoch, learning rate chosen on the reported dev itself",
}


def millions(n) -> str:
    if n is None or n is pd.NA or (isinstance(n, float) and math.isnan(n)):
        return ""
    if n >= 50_000:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.1f}k" if n >= 1000 else str(int(n))


def _cell(mean: float, low: float, high: float, std: float, n_seeds: int) -> str:
    if math.isnan(mean):
        return "n/a"
    if not math.isnan(low):
        return f"{mean:.3f} [{low:.3f}, {high:.3f}]"
    return f"{mean:.3f} ± {std:.3f}" if n_seeds > 1 else f"{mean:.3f}"


def _init(model: str, summaries: dict) -> str:
    s = summaries.get(model) or {}
    if not s.get("init"):
        return ""
    return f"{s['init']} + distillation" if s.get("distill") and s.get("steps", 1) else s["init"]


def _frozen_random(model: str, mode: str, summaries: dict) -> bool:
    """A random-init student that was never distilled, adapter-tuned: its encoder is frozen noise."""
    s = summaries.get(model)
    random_undistilled = (s.get("init") == "random" and not (s.get("distill") and s.get("steps", 1))
                          if s else model == "random-init")
    return mode == "adapter" and random_undistilled


def display_name(model: str, mode: str, summaries: dict) -> str:
    if mode == FLOOR_MODE:
        return FLOOR_LABELS.get(model, model)
    if _frozen_random(model, mode, summaries):
        return f"{model} (frozen random encoder)"
    return model


def _columns(results: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(task, split, selection metric) per column, in the order the tasks first appear."""
    sel = results[results["metric"] == results["selection_metric_name"]]
    return list(dict.fromkeys(zip(sel["task"], sel["split"], sel["metric"])))


def _retention_cells(comparisons: pd.DataFrame) -> dict[str, str]:
    mean = comparisons[comparisons["task"] == MEAN_OVER_TASKS]
    out = {}
    for row in mean.itertuples(index=False):
        ci = "" if math.isnan(row.ci_low) else f" [{row.ci_low:.1f}, {row.ci_high:.1f}]"
        out[row.a] = f"{row.diff:.1f}%{ci}"
    return out


def main_table(results: pd.DataFrame, comparisons: pd.DataFrame, arms: list[Arm], summaries: dict,
               published: list[dict]) -> list[str]:
    selection_metric = {a.task: a.first.selection_metric for a in arms}
    results = results.assign(selection_metric_name=results["task"].map(selection_metric))
    columns = _columns(results)
    retention = _retention_cells(comparisons)
    header = ["model", "mode", "init", "params", "trainable",
              *[f"{task} {metric} ({split})" for task, split, metric in columns], "retention"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|---|" + "---:|" * (len(header) - 3)]
    for (model, mode), group in results.groupby(["model", "mode"], sort=False):
        first = group.iloc[0]
        cells = []
        for task, split, metric in columns:
            hit = group[(group["task"] == task) & (group["split"] == split) & (group["metric"] == metric)]
            r = hit.iloc[0] if len(hit) else None
            cells.append("-" if r is None else
                         _cell(r["mean"], r["ci_low"], r["ci_high"], r["std"], r["n_seeds"]))
        keep = "—" if model == TEACHER else retention.get(f"{model}/{mode}", "")
        head = [display_name(model, mode, summaries), mode, _init(model, summaries),
                millions(first["unique_params"]), millions(first["trainable_params"])]
        lines.append("| " + " | ".join([*head, *cells, "" if mode == FLOOR_MODE else keep]) + " |")
    reported = {}
    for arm in arms:
        reported.setdefault(arm.task, arm.first.reported_split)
    lines += _published_rows(published, columns, reported)
    return lines


def _published_rows(published: list[dict], columns: list[tuple], reported: dict[str, str]) -> list[str]:
    """One row per published model, its numbers in the columns of the same task, split and metric."""
    rows: dict[str, dict] = {}
    for p in published:
        split = p.get("split") or reported.get(p["task"])
        key = (p["task"], split, p["metric"])
        if key in columns:
            rows.setdefault(f"published ({p['protocol']}): {p['model']}", {})[key] = f"{p['value']:.3f}"
    out = []
    for label, cells in rows.items():
        row = [label, "", "", "", "", *[cells.get(c, "") for c in columns], ""]
        out.append("| " + " | ".join(row) + " |")
    return out


def _describe(row) -> str:
    if row.comparison == "retention %":
        ci = "" if math.isnan(row.ci_low) else f" [{row.ci_low:.1f}, {row.ci_high:.1f}]"
        return f"{row.a} retains {row.diff:.1f}%{ci} of {row.b}"
    return f"{row.a} - {row.b} = {row.diff:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"


def findings(comparisons: pd.DataFrame, flags: list[dict]) -> list[str]:
    lines = ["## Which differences are distinguishable from zero", "",
             "Paired bootstrap: both arms on the same resampled examples. A difference is distinguishable "
             "when its 95% interval excludes 0; a retention (student / teacher) when it excludes 100%.", ""]
    hits = comparisons[comparisons["distinguishable"]]
    grouped: dict[str, list[str]] = {}  # one line per task and split
    for row in hits.itertuples(index=False):
        where = MEAN_OVER_TASKS if row.task == MEAN_OVER_TASKS else f"{row.task} {row.metric} ({row.split})"
        grouped.setdefault(where, []).append(_describe(row))
    lines += [f"- {where}: " + "; ".join(found) for where, found in grouped.items()]
    if not len(hits):
        lines.append("- none")
    rest = len(comparisons) - len(hits)
    if rest:
        lines += ["", f"Not distinguishable: the other {rest} comparison(s) in comparisons.csv."]
    for f in flags:
        lines.append("")
        lines.append(f"**{f['task']} ({f['split']}): teacher not clearly above majority** "
                     f"({f['teacher']} {f['metric']} {f['teacher_mean']:.3f}, interval "
                     f"[{f['teacher_ci'][0]:.3f}, {f['teacher_ci'][1]:.3f}]; majority "
                     f"{f['majority_mean']:.3f}, [{f['majority_ci'][0]:.3f}, {f['majority_ci'][1]:.3f}]).")
    return lines


def table_to_markdown(df: pd.DataFrame) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}" if not math.isnan(v) else ""
        return "" if v is None or v is pd.NA else str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def markdown(results: pd.DataFrame, comparisons: pd.DataFrame, flags: list[dict], arms: list[Arm],
             summaries: dict, published: list[dict], params: pd.DataFrame, distill: pd.DataFrame) -> str:
    several_seeds = bool((results["n_seeds"] > 1).any())
    lines = [
        "# MiniALBERT results",
        "",
        "Each task's selection metric on its reported split, at the learning rate with the best mean "
        "score on the selection split: mean over seeds [95% interval]. Intervals: percentile bootstrap, "
        f"{N_RESAMPLES} resamples of the reported split's examples"
        + (" and of the seeds (two levels) where an arm has more than one" if several_seeds else "")
        + "; they cover test sampling" + (" and seed variation" if several_seeds else "") + " only. "
        "params: the fine-tuned model (encoder + task head; no MLM head). retention: the arm's mean "
        "score over tasks as % of the teacher's (same mode, else full).",
        "",
        *main_table(results, comparisons, arms, summaries, published),
        "",
    ]
    protocols = {}
    for arm in arms:
        protocols.setdefault(arm.task, arm.first.protocol)
    lines += [f"- {task}: {PROTOCOLS.get(p, p)}" for task, p in protocols.items()]
    sources = [f"- published ({p['protocol']}): {p['model']}, {p['task']} {p['metric']}: {p['source']}"
               for p in published if p["task"] in protocols]
    lines += ["", *sources, ""] if sources else [""]
    lines += [*findings(comparisons, flags), ""]
    lines += ["## All metrics", "", table_to_markdown(results), ""]
    if len(params):
        lines += ["## Parameters", "", table_to_markdown(params), ""]
    if len(distill):
        lines += ["## Distillation", "", table_to_markdown(distill), ""]
    return "\n".join(lines)
