"""What the figures and tables read: the aggregate's summary, the distillation logs, the fine-tuning
metrics and the inference benchmark. Every input is optional (a missing file reads as nothing), so
a partial run still reports; a file that exists but does not parse is an error naming it.

File formats: docs/ARCHITECTURE.md, "Files between stages".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import files
from .style import ModelStyle


def number(value) -> float | None:
    """The value as a float when it is a finite number; CSV blanks, None, NA and NaN are not."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_json(path: Path) -> dict | None:
    """The file's content, or None when it is absent (a partial run still reports)."""
    return files.read_json(path, missing_ok=True)


def read_csv(path: Path | None) -> pd.DataFrame | None:
    """The table, or None when the file is absent or has no rows."""
    if path is None or not Path(path).is_file():
        return None
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None
    except pd.errors.ParserError as err:
        raise ValueError(f"{path}: not a CSV table ({err})") from None
    return table if len(table) else None


@dataclass
class DistillRun:
    """One results/distill/<student> folder: its summary and its logged train / eval losses."""

    name: str
    summary: dict
    train: list[dict]
    eval: list[dict]

    @classmethod
    def read(cls, folder: Path) -> "DistillRun":
        folder = Path(folder)
        log = read_json(folder / "train_log.json") or {}
        return cls(folder.name, read_json(folder / "summary.json") or {}, log.get("train") or [],
                   log.get("eval") or [])

    @property
    def frozen_random(self) -> bool:
        """Random init, never distilled: its adapter arm tunes adapters on a frozen random encoder
        (the aggregate's results.md labels it the same way)."""
        s = self.summary
        return s.get("init") == "random" and not (s.get("distill") and s.get("steps", 1))


@dataclass
class Inputs:
    """Everything a figure or table may use; `style` orders and colours the models."""

    results: pd.DataFrame | None = None
    comparisons: pd.DataFrame | None = None
    params: pd.DataFrame | None = None
    distill: list[DistillRun] = field(default_factory=list)
    finetune: list[dict] = field(default_factory=list)
    inference: pd.DataFrame | None = None
    results_md: str | None = None
    style: ModelStyle = field(default_factory=lambda: ModelStyle([]))

    @classmethod
    def read(cls, summary: Path | None = None, distill: list[Path] = (), finetune: list[Path] = (),
             inference: Path | None = None, order: list[str] | None = None) -> "Inputs":
        summary = Path(summary) if summary else None
        runs = [DistillRun.read(d) for d in distill if Path(d).is_dir()]
        metrics = [m for m in (read_json(p) for p in finetune) if m is not None]
        md = summary / "results.md" if summary else None
        data = cls(
            results=read_csv(summary / "results.csv") if summary else None,
            comparisons=read_csv(summary / "comparisons.csv") if summary else None,
            params=read_csv(summary / "params.csv") if summary else None,
            distill=runs, finetune=metrics, inference=read_csv(inference),
            results_md=md.read_text(encoding="utf-8") if md and md.is_file() else None,
            style=ModelStyle(order or [r.name for r in runs], {r.name for r in runs if r.frozen_random}),
        )
        for table in (data.results, data.comparisons):
            if table is not None and "model" in table:
                data.style.add(table["model"])
        return data

    # ---- the number each task is judged by ----------------------------------------------------

    def tasks(self) -> list[str]:
        seen = []
        if self.results is not None:
            seen += list(self.results["task"])
        seen += [m["task"] for m in self.finetune if "task" in m]
        return sorted(dict.fromkeys(seen))

    def headline(self, task: str) -> tuple[str | None, str | None]:
        """(selection metric, reported split) of a task: what its fine-tuning runs selected on and
        reported, else what the summary tables hold for it."""
        for m in self.finetune:
            if m.get("task") == task and m.get("selection_metric"):
                return m["selection_metric"], m.get("reported_split") or m.get("eval_split")
        metric = split = None
        if self.comparisons is not None and "task" in self.comparisons:
            rows = self.comparisons[self.comparisons["task"] == task]
            if len(rows):
                metric, split = rows["metric"].iloc[0], rows["split"].iloc[0]
        if self.results is not None:
            rows = self.results[self.results["task"] == task]
            if metric is None and len(rows):
                metric = sorted(rows["metric"].unique())[0]
            if split is None and len(rows):
                split = "test" if "test" in set(rows["split"]) else sorted(rows["split"].unique())[0]
        return metric, split

    def scores(self) -> pd.DataFrame | None:
        """results.csv cut to each task's headline metric on its reported split."""
        if self.results is None:
            return None
        keep = []
        for task in self.tasks():
            metric, split = self.headline(task)
            keep.append((self.results["task"] == task) & (self.results["metric"] == metric)
                        & (self.results["split"] == split))
        if not keep:
            return None
        rows = self.results[pd.concat(keep, axis=1).any(axis=1)]
        return rows if len(rows) else None
