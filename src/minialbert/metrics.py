"""Evaluation metrics for the downstream tasks (scikit-learn, SciPy and seqeval underneath).

`compute_metrics(kind, predictions, references, labels, tag_scheme=None)` returns a flat dict of floats, the same
keys for every run of a task kind, so the summary can tabulate them:

| kind | keys |
|---|---|
| `classification`, `pair_classification` | `accuracy`, `macro_f1`, `matthews`, and `f1` (binary F1 of the positive class `labels[1]`) when the task has exactly two labels |
| `regression` | `pearson`, `spearman`, `mse` |
| `token_classification`, BIO tags | `precision`, `recall`, `f1` (seqeval entity level, default (conlleval) mode, micro average), `accuracy` (per tag) |
| `token_classification`, plain tags | `accuracy` (per tag), `macro_f1` (per-tag F1 averaged over the tags) |

Every dict also has `n` (number of examples / sentences scored). A metric that is undefined (a
Pearson correlation of constant predictions) is `None` rather than NaN, so JSON stays valid.

Conventions (so every number is checkable by hand):
- Classification predictions and references are label ids (indices into `labels`) or label strings.
- `macro_f1` averages the per-class F1 over the classes present in references or predictions
  (scikit-learn's default); classes with no support either way do not drag the mean down.
- GLUE's MRPC/QQP "F1" is the binary F1 of the positive class: with `labels` in the dataset's own
  order (`not_equivalent`, `equivalent`), that is `labels[1]`; sorted string labels such as
  `negative`/`positive` also put the positive class second.
- Token classification takes lists of tag sequences (strings, or ids into `labels`). `tag_scheme`
  `bio` is scored with seqeval's default mode, which treats IOB1/IOB2 the way conlleval does (an
  `I-X` after `O` starts an entity); `plain` (POS, chunk or morphology tags) makes every tag a
  class, scored per token. None infers it: `bio` when every tag of `labels` (or, without labels,
  every tag seen) is `O`, `B-X`, `I-X`, `E-X` or `S-X`, else `plain` (task.json's `tag_scheme`).
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any, Iterable, Sequence

KINDS = ("classification", "pair_classification", "regression", "token_classification")
TAG_SCHEMES = ("bio", "plain")

# one BIO / BIOES tag: O, or a B/I/E/S marker with an optional entity type
BIO_TAG_RE = re.compile(r"^(O|[BIES](-.+)?)$")


def is_bio(tags: Iterable[str]) -> bool:
    """Whether every tag is a BIO/BIOES tag (so entity-level scoring applies)."""
    return all(isinstance(t, str) and BIO_TAG_RE.match(t) for t in tags)


def metric_names(kind: str, n_labels: int, tag_scheme: str = "bio") -> list[str]:
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
    if tag_scheme not in TAG_SCHEMES:
        raise ValueError(f"unknown tag scheme {tag_scheme!r}; expected one of {', '.join(TAG_SCHEMES)}")
    return ["precision", "recall", "f1", "accuracy"] if tag_scheme == "bio" else ["accuracy", "macro_f1"]


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


def _token_metrics(pred_tags: list[list[str]], ref_tags: list[list[str]], labels: list[str],
                   tag_scheme: str | None) -> dict[str, float | None]:
    for i, (p, r) in enumerate(zip(pred_tags, ref_tags)):
        if len(p) != len(r):
            raise ValueError(f"sentence {i}: {len(p)} predicted tags for {len(r)} reference tags")
    if tag_scheme is None:
        seen = labels or {t for seqs in (pred_tags, ref_tags) for seq in seqs for t in seq}
        tag_scheme = "bio" if is_bio(seen) else "plain"
    flat_ref = [t for seq in ref_tags for t in seq]
    flat_pred = [t for seq in pred_tags for t in seq]
    n_tags = len(flat_ref)
    accuracy = _clean(sum(a == b for a, b in zip(flat_pred, flat_ref)) / n_tags) if n_tags else None
    if tag_scheme == "plain":
        from sklearn.metrics import f1_score

        # every tag is a class: macro-F1 over the tags present in references or predictions
        macro_f1 = _clean(f1_score(flat_ref, flat_pred, average="macro", zero_division=0)) \
            if n_tags else None
        return {"accuracy": accuracy, "macro_f1": macro_f1}
    if tag_scheme != "bio":
        raise ValueError(f"unknown tag scheme {tag_scheme!r}; expected one of {', '.join(TAG_SCHEMES)}")
    from seqeval.metrics import f1_score, precision_score, recall_score

    return {
        "precision": _clean(precision_score(ref_tags, pred_tags, zero_division=0)),
        "recall": _clean(recall_score(ref_tags, pred_tags, zero_division=0)),
        "f1": _clean(f1_score(ref_tags, pred_tags, zero_division=0)),
        "accuracy": accuracy,
    }


def compute_metrics(
    kind: str,
    predictions: Sequence[Any],
    references: Sequence[Any],
    labels: Sequence[str] | None = None,
    tag_scheme: str | None = None,
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
        result = _token_metrics(_to_tags(predictions, labels), _to_tags(references, labels),
                                labels, tag_scheme)

    result["n"] = len(references)
    return result
