"""Table records -> task rows: the spec's column keys, label conversion and label-type checks.

Shared by the files and hf sources; errors name the file (or hub split), the line and the column.
"""

from __future__ import annotations

import math
from typing import Any

from .readers import Row
from .spec import option


def is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return True
    if isinstance(v, str):
        try:
            float(v)
        except ValueError:
            return False
        return v.strip() != ""
    return False


def column(columns: list[str], key: str, col: str, path: str) -> str:
    """`col` (the spec's `key`), checked to be one of `columns`."""
    if col not in columns:
        avail = ", ".join(columns) if columns else "(none: the file is empty)"
        raise ValueError(f"{path}: no column {col!r} (the task's {key}); available columns: {avail}")
    return col


def convert_label(value: Any, kind: str, path: str, line: int, col: str) -> Any:
    """A label as written to jsonl: a float for regression, else a string (1.0 -> "1")."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{path}: line {line}: empty or missing value in label column {col!r}")
    # NaN / inf is how pandas and spreadsheets write a missing number: never a label to train on
    if is_number(value) and not math.isfinite(float(value)):
        raise ValueError(f"{path}: line {line}: label column {col!r} holds {value!r}, not a "
                         f"finite number")
    if kind == "regression":
        if not is_number(value):
            raise ValueError(f"{path}: line {line}: label column {col!r} must be numeric for a "
                             f"regression task, got {value!r}")
        return float(value)
    if isinstance(value, (dict, list)):
        raise ValueError(f"{path}: line {line}: label column {col!r} holds a "
                         f"{type(value).__name__}, expected a string or number")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def check_label_types(records: list[tuple[str, int, Any]], col: str) -> None:
    """A label column must be all numbers or all strings (across every file of the task)."""
    numeric = [(p, ln, v) for p, ln, v in records if is_number(v)]
    strings = [(p, ln, v) for p, ln, v in records if not is_number(v)]
    if numeric and strings:
        (p1, l1, v1), (p2, l2, v2) = numeric[0], strings[0]
        raise ValueError(f"label column {col!r} mixes numbers and strings: {p1} line {l1} has "
                         f"{v1!r}, {p2} line {l2} has {v2!r}")


def _token_rows(path: str, split: str, columns: list[str], records: list[tuple[int, dict]],
                spec: dict) -> list[Row]:
    tok_col = column(columns, "token_column", option(spec, "token_column", "tokens"), path)
    tag_col = column(columns, "tag_column", option(spec, "tag_column", "tags"), path)
    rows = []
    for line, rec in records:
        toks, tags = rec.get(tok_col), rec.get(tag_col)
        if not isinstance(toks, list) or not isinstance(tags, list) or len(toks) != len(tags):
            raise ValueError(f"{path}: line {line}: {tok_col!r} and {tag_col!r} must be lists "
                             f"of equal length")
        for t in tags:
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"{path}: line {line}: tag {t!r} is not a non-empty string")
        if toks:
            rows.append(Row({"tokens": [str(t) for t in toks], "tags": tags},
                            f"{split}:{len(rows)}", path, line))
    return rows


def rows_from_records(path: str, split: str, kind: str, columns: list[str],
                      records: list[tuple[int, dict]], spec: dict,
                      label_values: list[tuple[str, int, Any]]) -> list[Row]:
    """The rows of one file; raw labels are appended to `label_values` for the type check."""
    if kind == "token_classification":
        return _token_rows(path, split, columns, records, spec)
    text_col = column(columns, "text_column", option(spec, "text_column", "text"), path)
    pair_col = spec.get("text_pair_column")
    if pair_col is not None:
        column(columns, "text_pair_column", pair_col, path)
    label_col = option(spec, "label_column", "label")
    has_label = label_col in columns
    if split == "train" or (split == "dev" and not has_label):
        column(columns, "label_column", label_col, path)  # only test may come without labels
    rows = []
    for line, rec in records:
        fields: dict[str, Any] = {}
        for key, col in (("text", text_col), ("text_pair", pair_col)):
            if col is None:
                continue
            v = rec.get(col)
            if v is None:
                raise ValueError(f"{path}: line {line}: no value in column {col!r}")
            fields[key] = str(v)
        if has_label:
            raw = rec.get(label_col)
            label_values.append((path, line, raw))
            fields["label"] = convert_label(raw, kind, path, line, label_col)
        rows.append(Row(fields, f"{split}:{len(rows)}", path, line))
    return rows
