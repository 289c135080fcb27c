"""scores.png: each task's selection metric per arm, with its 95% bootstrap interval."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .. import atomic


def plot(results: pd.DataFrame, selection_metric: dict[str, str], labels: dict[tuple, str],
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = results[results["metric"] == results["task"].map(selection_metric)]
    columns = list(dict.fromkeys(zip(sel["task"], sel["split"])))
    arms = list(dict.fromkeys(zip(sel["model"], sel["mode"])))
    width = 0.8 / max(len(arms), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(columns) + 0.25 * len(arms)), 4))
    for i, arm in enumerate(arms):
        vals, low, high = [], [], []
        for task, split in columns:
            row = sel[(sel["task"] == task) & (sel["split"] == split)
                      & (sel["model"] == arm[0]) & (sel["mode"] == arm[1])]
            mean, lo, hi = (tuple(float(row[c].iloc[0]) for c in ("mean", "ci_low", "ci_high"))
                            if len(row) else (math.nan,) * 3)
            vals.append(mean)
            low.append(0.0 if math.isnan(lo) else max(0.0, mean - lo))
            high.append(0.0 if math.isnan(hi) else max(0.0, hi - mean))
        xs = [k + (i - (len(arms) - 1) / 2) * width for k in range(len(columns))]
        ax.bar(xs, vals, width, yerr=[low, high], label=labels.get(arm, "/".join(arm)), capsize=2)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([f"{t} ({s})\n{selection_metric[t]}" for t, s in columns])
    ax.set_ylabel("score on the reported split (95% interval)")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    lowest = pd.to_numeric(sel["mean"], errors="coerce").min()
    ax.set_ylim(bottom=min(0.0, float(lowest) - 0.05) if pd.notna(lowest) else 0.0)
    fig.tight_layout()
    with atomic.staged_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
