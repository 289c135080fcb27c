"""Which arms are compared, on each task's selection metric and every evaluation split:

- the students with one another, in each mode (distilled vs teacher-init vs random-init in the
  offline default): the difference a - b;
- adapter vs full fine-tuning of each model: adapter - full;
- each student arm vs the teacher (same mode, else full) as retention, 100 x student / teacher,
  per task and for the mean score over the tasks both have (reported split);
- each teacher arm vs the majority floor: flagged when their intervals overlap.

A difference is distinguishable when its 95% interval excludes 0 (a retention when it excludes 100%).
"""

from __future__ import annotations

import math
from itertools import combinations

from .select import FLOOR_MODE, TEACHER, Arm
from .stats import Bootstrap, Comparison, Estimate, difference, retention

MEAN_OVER_TASKS = "mean over tasks"
MAJORITY = "majority"


def _row(task: str, metric: str, split: str, kind: str, a: Arm | str, b: Arm | str, c: Comparison) -> dict:
    return {"task": task, "metric": metric, "split": split, "comparison": kind,
            "a": a if isinstance(a, str) else a.label, "b": b if isinstance(b, str) else b.label,
            "diff": c.value, "ci_low": c.ci_low, "ci_high": c.ci_high, "distinguishable": c.distinguishable}


def _teacher_for(arm: Arm, by_key: dict) -> Arm | None:
    return by_key.get((arm.task, TEACHER, arm.mode)) or by_key.get((arm.task, TEACHER, "full"))


def _selected(boot: Bootstrap, arm: Arm, split: str) -> Estimate | None:
    return boot.estimates(arm, split).get(arm.first.selection_metric)


def comparisons(arms: list[Arm], students: list[str], boot: Bootstrap) -> list[dict]:
    """The rows of comparisons.csv (arms already in display order)."""
    models = [a.model for a in arms if a.model != TEACHER and a.mode != FLOOR_MODE]
    students = [s for s in dict.fromkeys([*students, *models]) if s in models]
    by_key = {(a.task, a.model, a.mode): a for a in arms}
    tasks = list(dict.fromkeys(a.task for a in arms))
    modes = list(dict.fromkeys(a.mode for a in arms if a.mode != FLOOR_MODE))
    rows = []

    def compare(kind: str, a: Arm, b: Arm) -> None:
        for split in a.splits():
            ea, eb = _selected(boot, a, split), _selected(boot, b, split)
            if ea is None or eb is None or split not in b.splits():
                continue
            c = difference(ea, eb) if kind == "difference" else retention([ea], [eb])
            rows.append(_row(a.task, a.first.selection_metric, split, kind, a, b, c))

    for task in tasks:
        for mode in modes:
            for sa, sb in combinations(students, 2):
                if (task, sa, mode) in by_key and (task, sb, mode) in by_key:
                    compare("difference", by_key[(task, sa, mode)], by_key[(task, sb, mode)])
        for model in [TEACHER, *students]:
            if (task, model, "adapter") in by_key and (task, model, "full") in by_key:
                compare("difference", by_key[(task, model, "adapter")], by_key[(task, model, "full")])
        for student in students:
            for mode in modes:
                arm = by_key.get((task, student, mode))
                teacher = arm and _teacher_for(arm, by_key)
                if teacher:
                    compare("retention %", arm, teacher)
    rows += _mean_retention(arms, students, modes, by_key, boot)
    return rows


def _mean_retention(arms, students, modes, by_key, boot) -> list[dict]:
    rows = []
    for student in students:
        for mode in modes:
            pairs = []
            for arm in (a for a in arms if a.model == student and a.mode == mode):
                teacher = _teacher_for(arm, by_key)
                split = arm.first.reported_split
                if teacher and split in teacher.splits():
                    s, t = _selected(boot, arm, split), _selected(boot, teacher, split)
                    if s is not None and t is not None:
                        pairs.append((s, t, teacher))
            if pairs:
                c = retention([p[0] for p in pairs], [p[1] for p in pairs])
                teacher_modes = sorted({p[2].mode for p in pairs})
                rows.append(_row(MEAN_OVER_TASKS, "selection metric", "reported", "retention %",
                                 f"{student}/{mode}", f"{TEACHER}/{'+'.join(teacher_modes)}", c))
    return rows


def floor_flags(arms: list[Arm], boot: Bootstrap) -> list[dict]:
    """Teacher arms whose interval overlaps the majority floor's (or, without intervals, whose
    mean is not above it): the task may be too easy, or the teacher too weak, to tell models apart."""
    flags = []
    floors = {(a.task, a.model): a for a in arms if a.mode == FLOOR_MODE}
    for arm in (a for a in arms if a.model == TEACHER):
        floor = floors.get((arm.task, MAJORITY))
        for split in arm.splits() if floor else []:
            t, f = _selected(boot, arm, split), _selected(boot, floor, split)
            if t is None or f is None or split not in floor.splits():
                continue
            (t_low, _), (_, f_high) = t.ci, f.ci
            overlap = t_low <= f_high if not (math.isnan(t_low) or math.isnan(f_high)) else t.mean <= f.mean
            if overlap:
                flags.append({"task": arm.task, "split": split, "metric": arm.first.selection_metric,
                              "teacher": arm.label, "teacher_ci": t.ci, "majority_ci": f.ci,
                              "teacher_mean": t.mean, "majority_mean": f.mean})
    return flags
