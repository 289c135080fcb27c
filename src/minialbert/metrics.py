"""Evaluation metrics for the downstream tasks (scikit-learn, SciPy and seqeval underneath).

`compute_metrics(kind, predictions, references, labels)` returns a flat dict of floats, the same
keys for every run of a task kind, so the summary can tabulate them:

| kind | keys |
|---|---|
| `classification`, `pair_classification` | `accuracy`, `macro_f1`, `matthews`, and `f1` (binary F1 of the positive class `labels[1]`) when the task has exactly two labels |
| `regression` | `pearson`, `spearman`, `mse` |
| `token_classification` | `precision`, `recall`, `f1` (seqeval entity level, default (conlleval) mode, micro average), `accuracy` (per tag) |

Every dict also has `n` (number of examples / sentences scored). A metric that is undefined (a
Pearson correlation of constant predictions) is `None` rather than NaN, so JSON stays valid.

Conventions (so every number is checkable by hand):
- Classification predictions and references are label ids (indices into `labels`) or label strings.
- `macro_f1` averages the per-class F1 over the classes present in references or predictions
  (scikit-learn's default); classes with no support either way do not drag the mean down.
- GLUE's MRPC/QQP "F1" is the binary F1 of the positive class: with `labels` in the dataset's own
  order (`not_equivalent`, `equivalent`), that is `labels[1]`; sorted string labels such as
  `negative`/`positive` also put the positive class second.
- Token classification takes lists of tag sequences (strings, or ids into `labels`), scored with
  seqeval's default mode, which treats IOB1/IOB2 the way conlleval does (an `I-X` after `O` starts
  an entity).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

KINDS = ("classification", "pair_classification", "regression", "token_classification")

def metric_names(kind: str, n_labels: int) -> list[str]:
    """All metric keys `compute_metrics` returns for `kind` (without `n`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind in ("classification", "pair_classification"):
        names = ["accuracy", "macro_f1", "matthews"]
        if n_labels == 2:
            names.append("f1")
        return names
    if kind == "regression":
        return ["pearson", "spearman", "mse"]
    return ["precision", "recall", "f1", "accuracy"]


def _clean(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def _to_ids(values: Sequence[Any], labels: Sequence[str], what: str) -> list[int]:
    index = {str(name): i for i, name in enumerate(labels)}
    out = []
    for v in values:
        if isinstance(v, str):
            if v not in index:
                raise ValueError(f"{what}: label {v!r} is not one of {list(labels)}")
            out.append(index[v])
        else:
            out.append(int(v))
    return out


def _to_tags(seqs: Sequence[Sequence[Any]], labels: Sequence[str]) -> list[list[str]]:
    return [[t if isinstance(t, str) else str(labels[int(t)]) for t in seq] for seq in seqs]


def compute_metrics(
    kind: str,
    predictions: Sequence[Any],
    references: Sequence[Any],
    labels: Sequence[str] | None = None,
) -> dict[str, float | int | None]:
    """Score `predictions` against `references` for a task of `kind` (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {', '.join(KINDS)}")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if len(references) == 0:
        raise ValueError("no examples to score")
    labels = list(labels or [])

    if kind in ("classification", "pair_classification"):
        from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

        pred = _to_ids(predictions, labels, "predictions")
        ref = _to_ids(references, labels, "references")
        out: dict[str, Any] = {
            "accuracy": accuracy_score(ref, pred),
            "macro_f1": f1_score(ref, pred, average="macro", zero_division=0),
            "matthews": matthews_corrcoef(ref, pred),
        }
        if len(labels) == 2:
            out["f1"] = f1_score(ref, pred, average="binary", pos_label=1, zero_division=0)
        result = {k: _clean(v) for k, v in out.items()}

    elif kind == "regression":
        from scipy.stats import pearsonr, spearmanr

        pred = [float(p) for p in predictions]
        ref = [float(r) for r in references]
        mse = sum((p - r) ** 2 for p, r in zip(pred, ref)) / len(ref)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant input: NaN, reported as None
            if len(ref) < 2:
                pearson = spearman = float("nan")
            else:
                pearson = pearsonr(pred, ref)[0]
                spearman = spearmanr(pred, ref)[0]
        result = {"pearson": _clean(pearson), "spearman": _clean(spearman), "mse": _clean(mse)}

    else:
        from seqeval.metrics import f1_score, precision_score, recall_score

        pred_tags = _to_tags(predictions, labels)
        ref_tags = _to_tags(references, labels)
        for i, (p, r) in enumerate(zip(pred_tags, ref_tags)):
            if len(p) != len(r):
                raise ValueError(f"sentence {i}: {len(p)} predicted tags for {len(r)} reference tags")
        n_tags = sum(len(r) for r in ref_tags)
        correct = sum(a == b for p, r in zip(pred_tags, ref_tags) for a, b in zip(p, r))
        result = {
            "precision": _clean(precision_score(ref_tags, pred_tags, zero_division=0)),
            "recall": _clean(recall_score(ref_tags, pred_tags, zero_division=0)),
            "f1": _clean(f1_score(ref_tags, pred_tags, zero_division=0)),
            "accuracy": _clean(correct / n_tags) if n_tags else None,
        }

    result["n"] = len(references)
    return result
