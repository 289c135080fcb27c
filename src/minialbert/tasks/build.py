"""Build a task: load its source, carve and subsample the splits, fix the labels and the metric."""

from __future__ import annotations

import os
from collections import Counter

from ..metrics import metric_names
from .duplicates import cross_split, drop_duplicates, drop_near_copies
from .folder import write_task
from .labels import task_labels
from .loaders import Source, load_source
from .readers import Row
from .spec import GLUE, default_metric, load_spec
from .splitting import carve, needed_to_carve, subsample
from .tags import tag_scheme


def _too_few(spec: dict, split: str, fractions: dict, pool: list[Row], n_rows: int,
             dropped: int, carved: str) -> ValueError:
    """The error for a carved split that came out empty, saying how many examples it needs."""
    needed, largest = needed_to_carve(pool, fractions, spec["kind"], split)
    group = "a label" if spec["kind"] in ("classification", "pair_classification") else "the data"
    has = "the largest has" if group == "a label" else "it has"
    dups = (f" ({dropped} of the {n_rows} rows were dropped as exact duplicates of others, "
            f"normalised text)" if dropped else "")
    where = spec.get("train") or spec.get("dataset") or "train split"
    return ValueError(f"{where}: the {split} split is empty (carved from {carved}: at "
                      f"{split}_fraction {fractions[split]:g} {group} needs at least {needed} "
                      f"distinct examples to give {split} one, {has} {largest}{dups}; add "
                      f"examples, raise {split}_fraction or provide a {split} split)")


def _carve_missing(name: str, spec: dict, source: Source) -> tuple[dict[str, str], int, int]:
    """Carve the dev/test splits the source lacks out of train, exact duplicates dropped first and
    near copies of the carved rows dropped from train after; ({split: how} for task.json, exact
    duplicates dropped, near copies dropped)."""
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
        return {}, 0, 0
    n_rows = len(splits["train"])
    # a copy on both sides of a carved split would score memorisation as generalisation
    pool, dropped = drop_duplicates(splits["train"])
    # fractions are of the whole data when both are carved, of train otherwise
    parts = carve(pool, fractions, spec["seed"], spec["kind"])
    carved = {split: f"train ({frac:g} of {len(pool)})" for split, frac in fractions.items()}
    for split in fractions:
        if not parts[split]:
            raise _too_few(spec, split, fractions, pool, n_rows, dropped, carved[split])
    # a near copy (another version of one news story) in train would leak the carved answer too
    parts["train"], near = drop_near_copies(parts["train"], [r for s in fractions for r in parts[s]])
    splits.update(parts)
    return carved, dropped, near


def _subsample_all(spec: dict, source: Source) -> None:
    seed, kind = spec["seed"], spec["kind"]
    source.splits["train"] = subsample(source.splits["train"], spec["max_train"], seed, kind,
                                       "max_train")
    for group in (source.splits, source.extra):
        for split in group:
            if split != "train":
                group[split] = subsample(group[split], spec["max_eval"], seed, kind,
                                         f"max_eval:{split}")


def _check_not_empty(spec: dict, splits: dict[str, list[Row]]) -> None:
    for split, rows in splits.items():
        if not rows:
            raise ValueError(f"{spec.get(split) or split}: the {split} split is empty")


def _metrics(name: str, spec: dict, n_labels: int, scheme: str | None) -> tuple[str, list[str]]:
    """(selection metric, reported metrics with the selection metric first)."""
    kind = spec["kind"]
    allowed = metric_names(kind, n_labels, scheme or "bio")
    if spec.get("glue"):
        _, _, default, reported = GLUE[spec["glue"]]
    else:
        default, reported = default_metric(kind, scheme), allowed
    metric = spec["metric"] or default
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
    # the tags are checked as read, before carving: a bad tag is the error to report first
    read = {split: rows for split, rows in {**source.splits, **source.extra}.items() if rows}
    scheme = tag_scheme(f"tasks.{name}", spec["tag_scheme"], read) \
        if kind == "token_classification" else None
    carved, dropped, near_copies = _carve_missing(name, spec, source)
    carved = {**source.carved, **carved}
    _subsample_all(spec, source)
    splits = {**source.splits, **source.extra}
    _check_not_empty(spec, splits)

    # An entity type missing from train is an error when the user gave every split in full (a
    # data problem, e.g. a misspelt tag); after carving or max_train subsampling it can happen.
    strict = not carved and not spec["max_train"]
    labels, test_has_labels = task_labels(kind, splits, spec["label_list"] or source.label_order,
                                          strict, scheme)
    if kind in ("classification", "pair_classification") and len(labels) < 2:
        raise ValueError(f"tasks.{name}: a classification task needs at least two labels, "
                         f"found {labels}")
    metric, reported = _metrics(name, spec, len(labels), scheme)

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
        "tag_scheme": scheme,
        "metric": metric,
        "metrics": reported,
        "counts": {split: len(rows) for split, rows in splits.items()},
        "test_has_labels": test_has_labels,
        "text_keys": text_keys,
        "extra_splits": sorted(source.extra),
        "seed": spec["seed"],
        "source": source.info,
        "carved": carved,
        "duplicates": {"dropped": dropped, "near_copies_dropped_from_train": near_copies,
                       "cross_split": cross_split(splits)},
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
