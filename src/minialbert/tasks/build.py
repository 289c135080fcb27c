"""Build a task: load its source, carve and subsample the splits, fix the labels and the metric."""

from __future__ import annotations

import os
from collections import Counter

from ..metrics import metric_names
from .folder import write_task
from .labels import task_labels
from .loaders import Source, load_source
from .readers import Row
from .spec import DEFAULT_SELECTION, GLUE, load_spec
from .splitting import carve, subsample


def _carve_missing(name: str, spec: dict, source: Source) -> dict[str, str]:
    """Carve the dev/test splits the source lacks out of train; {split: how} for task.json."""
    splits = source.splits
    fractions = {}
    for split in ("dev", "test"):
        if splits[split] is None:
            frac = spec[f"{split}_fraction"]
            if frac <= 0:
                raise ValueError(f"tasks.{name}: the source has no {split} split and "
                                 f"{split}_fraction is 0")
            fractions[split] = frac
    if not fractions:
        return {}
    n_train = len(splits["train"])
    # fractions are of the whole data when both are carved, of train otherwise
    parts = carve(splits["train"], fractions, spec["seed"], spec["kind"])
    splits.update(parts)
    return {split: f"train ({frac:g} of {n_train})" for split, frac in fractions.items()}


def _subsample_all(spec: dict, source: Source) -> None:
    seed, kind = spec["seed"], spec["kind"]
    source.splits["train"] = subsample(source.splits["train"], spec["max_train"], seed, kind,
                                       "max_train")
    for group in (source.splits, source.extra):
        for split in group:
            if split != "train":
                group[split] = subsample(group[split], spec["max_eval"], seed, kind,
                                         f"max_eval:{split}")


def _check_not_empty(spec: dict, splits: dict[str, list[Row]], carved: dict[str, str]) -> None:
    for split, rows in splits.items():
        if rows:
            continue
        where, how = spec.get(split), ""
        if split in carved:
            where = spec.get("train") or spec.get("dataset")
            how = f" (carved from {carved[split]}: raise {split}_fraction or provide one)"
        raise ValueError(f"{where or split}: the {split} split is empty{how}")


def _metrics(name: str, spec: dict, n_labels: int) -> tuple[str, list[str]]:
    """(selection metric, reported metrics with the selection metric first)."""
    kind = spec["kind"]
    allowed = metric_names(kind, n_labels)
    if spec.get("glue"):
        _, _, default_metric, reported = GLUE[spec["glue"]]
    else:
        default_metric, reported = DEFAULT_SELECTION[kind], allowed
    metric = spec["metric"] or default_metric
    if metric not in allowed:
        raise ValueError(f"tasks.{name}.metric: {metric!r} is not reported for this task; "
                         f"choose from {', '.join(allowed)}")
    return metric, [metric] + [m for m in reported if m != metric]


def build_task(name: str, spec: str | dict | None) -> tuple[dict, dict[str, list[Row]]]:
    """Read and split a task; returns (task.json content, {split: rows}) without writing."""
    spec = load_spec(name, spec)
    kind = spec["kind"]
    source = load_source(spec)
    if not source.splits["train"]:
        where = spec.get("train") or source.info.get("dataset") or "train split"
        raise ValueError(f"{where}: the train split is empty")
    carved = _carve_missing(name, spec, source)
    _subsample_all(spec, source)
    splits = {**source.splits, **source.extra}
    _check_not_empty(spec, splits, carved)

    # An entity type missing from train is an error when the user gave every split in full (a
    # data problem, e.g. a misspelt tag); after carving or max_train subsampling it can happen.
    strict = not carved and not spec["max_train"]
    labels, test_has_labels = task_labels(kind, splits, spec["label_list"] or source.label_order,
                                          strict)
    if kind in ("classification", "pair_classification") and len(labels) < 2:
        raise ValueError(f"tasks.{name}: a classification task needs at least two labels, "
                         f"found {labels}")
    metric, reported = _metrics(name, spec, len(labels))

    if kind == "token_classification":
        text_keys = ["tokens"]
    elif any("text_pair" in r for r in splits["train"]):
        text_keys = ["text", "text_pair"]
    else:
        text_keys = ["text"]

    task = {
        "name": name,
        "kind": kind,
        "labels": labels,
        "metric": metric,
        "metrics": reported,
        "counts": {split: len(rows) for split, rows in splits.items()},
        "test_has_labels": test_has_labels,
        "text_keys": text_keys,
        "extra_splits": sorted(source.extra),
        "seed": spec["seed"],
        "source": source.info,
        "carved": carved,
    }
    if kind in ("classification", "pair_classification"):
        task["label_counts"] = {
            split: dict(sorted(Counter(r["label"] for r in rows if "label" in r).items()))
            for split, rows in splits.items()}
    elif kind == "token_classification":
        task["n_tokens"] = {split: sum(len(r["tokens"]) for r in rows)
                            for split, rows in splits.items()}
    return task, splits


def prepare_task(name: str, spec: str | dict | None, out: str | os.PathLike) -> dict:
    """Build the task and write it atomically to `out` (nothing is left behind on error)."""
    task, splits = build_task(name, spec)
    write_task(out, task, splits)
    return task
