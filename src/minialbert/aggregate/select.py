"""Learning-rate selection: one arm per (task, model, mode), at the learning rate with the best mean
selection score over seeds.

The score is each run's `selection` dict on its `selection_split` (docs/method.md, "Reference
hyper-parameters"): dev for tasks with their own dev and test ("dev" protocol), a held-out slice
of train where the reported split is the only labelled one ("train_slice"), or the reported dev
itself ("reference", the reference code's rule). Higher is better; an undefined score (NaN)
counts as the worst, and ties go to the smaller learning rate.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from .load import Run


@dataclass
class Arm:
    """The runs of one (task, model, mode) at its chosen learning rate, sorted by seed."""

    task: str
    model: str
    mode: str
    best_lr: float
    selection_mean: float
    runs: list[Run]

    @property
    def label(self) -> str:
        return f"{self.model}/{self.mode}"

    @property
    def first(self) -> Run:
        return self.runs[0]

    def splits(self) -> list[str]:
        """The reported split, then the extra eval splits every seed has."""
        names = list(self.first.splits)
        return [s for s in names if all(s in r.splits for r in self.runs)]

    def values(self, split: str, metric: str) -> list[float]:
        return [r.splits[split].get(metric, math.nan) for r in self.runs]


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if len(finite) == len(values) and finite else -math.inf


def _consistent(runs: list[Run], attr: str, what: str) -> None:
    found = {getattr(r, attr) for r in runs}
    if len(found) > 1:
        r = runs[0]
        raise ValueError(f"{r.task} / {r.model} / {r.mode}: runs disagree on the {what} "
                         f"({', '.join(map(str, sorted(found)))}); e.g. {r.path}")


def choose_arms(runs: list[Run]) -> list[Arm]:
    """One `Arm` per (task, model, mode), in the order the runs came."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.task, run.model, run.mode)].append(run)
    arms = []
    for (task, model, mode), group in groups.items():
        _consistent(group, "protocol", "protocol")
        _consistent(group, "selection_metric", "selection metric")
        _consistent(group, "reported_split", "reported split")
        by_lr: dict[float, list[Run]] = defaultdict(list)
        for run in group:
            by_lr[run.lr].append(run)
        best_lr = max(sorted(by_lr), key=lambda lr: _mean([r.selection_score for r in by_lr[lr]]))
        chosen = sorted(by_lr[best_lr], key=lambda r: r.seed)
        arms.append(Arm(task, model, mode, best_lr, _mean([r.selection_score for r in chosen]), chosen))
    return arms


TEACHER = "teacher"
FLOOR_MODE = "floor"
MODE_ORDER = ("full", "adapter", "lora", FLOOR_MODE)


def ordered(arms: list[Arm], students: list[str]) -> list[Arm]:
    """Teacher first, then the students in config order, other models as they came, floors last."""
    models = list(dict.fromkeys(a.model for a in arms))
    rank = {m: i for i, m in enumerate([TEACHER, *students, *models])}

    def key(arm: Arm) -> tuple:
        mode = MODE_ORDER.index(arm.mode) if arm.mode in MODE_ORDER else len(MODE_ORDER)
        return (arm.mode == FLOOR_MODE, rank[arm.model], mode, arm.mode)

    return sorted(arms, key=key)
