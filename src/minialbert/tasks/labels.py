"""The label set of a task, checked against every split.

A dev/test label never seen in train is an error. For token tasks an unseen entity type (BIO) or
tag (plain) is an error when the user gave all three splits in full, and a warning after carving
or `max_train` subsampling (a rare type can then legitimately miss train). `labels` is sorted
(numerically when every label is a number) unless `label_list` (or a hub ClassLabel) fixes the
order.
"""

from __future__ import annotations

import sys
from typing import Iterable

from .columns import is_number
from .readers import Row


def entity_types(tags: Iterable[str]) -> set[str]:
    return {t.split("-", 1)[1] if "-" in t else "_" for t in tags if t != "O"}


def _token_labels(splits: dict[str, list[Row]], strict: bool, scheme: str) -> list[str]:
    # what must be seen in train: the entity type of a BIO tag, the tag itself otherwise
    units, what = (entity_types, "entity type") if scheme == "bio" else (set, "tag")
    train_units = units(t for r in splits["train"] for t in r["tags"])
    for split, rows in splits.items():
        if split == "train":
            continue
        unseen: dict[str, Row] = {}
        for r in rows:
            for t in sorted(units(r["tags"]) - train_units):
                unseen.setdefault(t, r)
        for t, r in unseen.items():
            msg = (f"{r.path}: line {r.line}: {what} {t!r} in the {split} split never "
                   f"occurs in the train split")
            if strict:
                raise ValueError(msg)
            print(f"warning: {msg}", file=sys.stderr)
    found = {t for rows in splits.values() for r in rows for t in r["tags"]}
    if scheme == "bio":
        # a complete B/I pair per entity type, so sub-token labelling (B- continuation -> I-) and
        # the head can express every tag even when a type only ever spans one word in the data
        for t in list(found):
            if t[:1] in ("B", "I") and (len(t) == 1 or t[1] == "-"):
                found |= {"B" + t[1:], "I" + t[1:]}
    return sorted(found)


def _test_has_labels(splits: dict[str, list[Row]]) -> bool:
    """Train and dev need a label on every row; test has all or none (hidden GLUE labels)."""
    test_has_labels = True
    for split, rows in splits.items():
        missing = [r for r in rows if "label" not in r]
        if split == "train" and missing:
            r = missing[0]
            raise ValueError(f"{r.path}: line {r.line}: the train split needs labels")
        if missing and len(missing) != len(rows):
            r = missing[0]
            raise ValueError(f"{r.path}: line {r.line}: some rows of the {split} split have no label")
        if missing:
            if split == "dev":
                raise ValueError(f"{rows[0].path}: the dev split has no labels")
            if split == "test":
                test_has_labels = False
    return test_has_labels


def _class_labels(splits: dict[str, list[Row]]) -> list[str]:
    seen = {r["label"] for r in splits["train"]}
    for split, rows in splits.items():
        for r in rows:
            if "label" in r and r["label"] not in seen:
                raise ValueError(f"{r.path}: line {r.line}: label {r['label']!r} in the {split} "
                                 f"split never occurs in the train split "
                                 f"(train labels: {', '.join(sorted(seen))})")
    return sorted(seen, key=lambda s: (0, float(s), s) if is_number(s) else (1, 0.0, s))


def _check_order(splits: dict[str, list[Row]], kind: str, order: list[str]) -> None:
    for rows in splits.values():
        for r in rows:
            values = r["tags"] if kind == "token_classification" else [r.get("label")]
            for v in values:
                if v is not None and v not in order:
                    raise ValueError(f"{r.path}: line {r.line}: label {v!r} is not in "
                                     f"label_list {order}")


def task_labels(kind: str, splits: dict[str, list[Row]], order: list[str] | None,
                strict: bool, tag_scheme: str | None = None) -> tuple[list[str], bool]:
    """(labels, test_has_labels); `order` fixes the label order, `strict` see the docstring,
    `tag_scheme` is the token task's (`minialbert.tasks.tags`)."""
    if kind == "token_classification":
        labels, test_has_labels = _token_labels(splits, strict, tag_scheme or "bio"), True
    else:
        test_has_labels = _test_has_labels(splits)
        labels = [] if kind == "regression" else _class_labels(splits)
    if order and kind != "regression":
        _check_order(splits, kind, order)
        labels = list(order)
    return labels, test_has_labels
