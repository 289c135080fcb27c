"""Reading the results: fine-tuning and floor metrics files, the students' summaries, published numbers.

Every metrics file becomes one `Run`. Files written before the protocol keys existed still load:
their selection split is dev, their reported split `eval_split`, and they carry no predictions
(their intervals then come from seeds alone, or are absent).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import read_json

REQUIRED_KEYS = ("model", "task", "mode", "lr", "seed", "dev", "eval_split", "selection_metric")
# metric keys that are never scores (bookkeeping inside metrics dicts)
NON_SCORE_KEYS = {"loss", "n", "examples"}
PUBLISHED_COLUMNS = ("task", "model", "metric", "value", "source", "protocol")


def scores(metrics: dict | None) -> dict[str, float]:
    """The numeric scores of a metric dict; an undefined one (None) becomes NaN."""
    out = {}
    for name, value in (metrics or {}).items():
        if name in NON_SCORE_KEYS or isinstance(value, bool):
            continue
        if value is None:
            out[name] = math.nan
        elif isinstance(value, (int, float)):
            out[name] = float(value)
    return out


@dataclass
class Run:
    """One metrics file: a (task, model, mode, lr, seed) result."""

    path: str
    task: str
    model: str
    mode: str
    lr: float
    seed: int
    kind: str | None
    protocol: str
    selection_split: str
    selection_metric: str
    selection: dict[str, float]  # scores on the selection split at the chosen epoch
    reported_split: str
    splits: dict[str, dict[str, float]]  # reported split first, then the extra eval splits
    predictions: dict[str, tuple[list, list]] = field(default_factory=dict)  # split -> (gold, pred)
    labels: list[str] | None = None
    trainable_params: int | None = None
    total_params: int | None = None

    @property
    def selection_score(self) -> float:
        return self.selection.get(self.selection_metric, math.nan)


def _predictions(m: dict, path: Path, splits: dict) -> dict[str, tuple[list, list]]:
    out = {}
    for split, entry in (m.get("predictions") or {}).items():
        if not (isinstance(entry, dict) and isinstance(entry.get("gold"), list)
                and isinstance(entry.get("pred"), list)):
            raise ValueError(f"{path}: predictions.{split} must hold lists 'gold' and 'pred'")
        gold, pred = entry["gold"], entry["pred"]
        if len(gold) != len(pred) or not gold:
            raise ValueError(f"{path}: predictions.{split}: {len(pred)} predictions for "
                             f"{len(gold)} gold labels")
        n = (splits.get(split) or {}).get("n")
        if n is not None and n != len(gold):
            raise ValueError(f"{path}: predictions.{split} has {len(gold)} examples but its "
                             f"metrics say n = {n}")
        out[split] = (gold, pred)
    return out


def parse_run(m: Any, path: Path) -> Run:
    if not isinstance(m, dict):
        raise ValueError(f"{path}: expected a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in m]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}")
    reported_split = m.get("reported_split") or m["eval_split"]
    reported = m.get("reported") or (m.get("test") if reported_split == "test" else m["dev"])
    if not reported:
        raise ValueError(f"{path}: the reported split {reported_split!r} has no metrics")
    protocol = m.get("protocol") or ("dev" if reported_split == "test" else "reference")
    selection = m.get("selection") or m["dev"] or (reported if protocol == "reference" else None)
    if not selection or m["selection_metric"] not in selection:
        raise ValueError(f"{path}: no {m['selection_metric']!r} score on the selection split")
    raw_splits = {reported_split: reported, **(m.get("extra") or {})}
    return Run(
        path=str(path), task=str(m["task"]), model=str(m["model"]), mode=str(m["mode"]),
        lr=float(m["lr"]), seed=int(m["seed"]), kind=m.get("kind"), protocol=protocol,
        selection_split=m.get("selection_split") or "dev", selection_metric=m["selection_metric"],
        selection=scores(selection), reported_split=reported_split,
        splits={split: scores(metrics) for split, metrics in raw_splits.items()},
        predictions=_predictions(m, path, raw_splits), labels=m.get("labels"),
        trainable_params=m.get("trainable_params"), total_params=m.get("total_params"),
    )


def load_runs(paths: list[str | Path], required: bool = True) -> list[Run]:
    """Every metrics file as a `Run`; files a floors job skipped are left out (with a note)."""
    runs, seen = [], {}
    for path in map(Path, paths):
        m = read_json(path)
        if isinstance(m, dict) and m.get("skipped"):
            print(f"aggregate: {path}: skipped by its job ({m['skipped']})")
            continue
        run = parse_run(m, path)
        key = (run.task, run.model, run.mode, run.lr, run.seed)
        if key in seen:
            raise ValueError(f"{path}: the same task/model/mode/lr/seed as {seen[key]}")
        seen[key] = path
        runs.append(run)
    if required and not runs:
        raise ValueError("no fine-tuning metrics to aggregate")
    return runs


def student_summaries(students: list[Path]) -> dict[str, dict]:
    """name -> the student's summary.json (empty when the folder has none), in config order."""
    out = {}
    for student in students:
        path = Path(student) / "summary.json"
        out[Path(student).name] = read_json(path) if path.exists() else {}
    return out


def load_published(path: str | Path | None) -> list[dict]:
    """Rows of config/published.csv: task, model, metric, value (our scale), source, protocol
    (+ optional split, default: the task's reported split)."""
    if path is None:
        return []
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in PUBLISHED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        rows = []
        for lineno, row in enumerate(reader, start=2):
            try:
                row["value"] = float(row["value"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}: line {lineno}: value {row['value']!r} is not a number") from None
            rows.append(row)
    return rows
