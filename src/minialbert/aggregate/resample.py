"""A task's metrics on many resamples at once: `metric_samples(kind, gold, pred, labels, idx)`.

`idx` is a [B, n] matrix of example indices (one bootstrap resample per row); the result maps
each metric of `minialbert.metrics.compute_metrics` to B values. The metrics are rebuilt from
sufficient statistics that add up over examples, so B resamples cost a few array operations:

- classification: the B confusion matrices (accuracy, macro-F1 over the classes present in the
  resample, Matthews' multiclass correlation, binary F1 of `labels[1]`);
- regression: Pearson, Spearman (Pearson of average ranks) and MSE, row-wise;
- token tasks: per sentence, seqeval's entities (default mode) and the correct tags, so
  resampling sentences sums true positives, predicted and gold entities, and tags.

On the full sample each vectorised metric must reproduce the metrics file's number (or, without
one, `compute_metrics`); one that does not, or that has no vectorised form, is computed by calling
`compute_metrics` once per resample instead, so an interval always describes the reported number.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np

from ..metrics import compute_metrics

CLASSIFICATION = ("classification", "pair_classification")
TOLERANCE = 1e-9  # the vectorised form vs compute_metrics: the same arithmetic up to rounding
EXPECTED_TOLERANCE = 1e-6  # vs the file's number (a writer may round)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's and seqeval's zero_division=0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


def _classification(gold: Sequence, pred: Sequence, labels: Sequence[str],
                    idx: np.ndarray) -> dict[str, np.ndarray]:
    index = {str(name): i for i, name in enumerate(labels)}
    g = np.array([index[str(v)] for v in gold])
    p = np.array([index[str(v)] for v in pred])
    k = len(labels)
    b, n = idx.shape
    codes = (g * k + p)[idx] + (np.arange(b) * k * k)[:, None]
    conf = np.bincount(codes.ravel(), minlength=b * k * k).reshape(b, k, k).astype(np.float64)
    tp = np.diagonal(conf, axis1=1, axis2=2)
    gold_n, pred_n = conf.sum(axis=2), conf.sum(axis=1)
    f1 = _divide(2 * tp, gold_n + pred_n)
    present = (gold_n + pred_n) > 0
    correct = tp.sum(axis=1)
    cov_gp = correct * n - (gold_n * pred_n).sum(axis=1)
    cov_pp = n * n - (pred_n * pred_n).sum(axis=1)
    cov_gg = n * n - (gold_n * gold_n).sum(axis=1)
    den = cov_pp * cov_gg
    out = {
        "accuracy": correct / n,
        "macro_f1": (f1 * present).sum(axis=1) / present.sum(axis=1),
        "matthews": np.where(den > 0, cov_gp / np.sqrt(np.where(den > 0, den, 1)), 0.0),
    }
    if k == 2:
        out["f1"] = f1[:, 1]
    return out


def _rows_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (x * y).sum(axis=1) / den
    return np.where(den > 0, np.clip(r, -1.0, 1.0), np.nan)  # constant input: undefined


def _regression(gold: Sequence, pred: Sequence, idx: np.ndarray) -> dict[str, np.ndarray]:
    from scipy.stats import rankdata

    g, p = np.asarray(gold, dtype=np.float64)[idx], np.asarray(pred, dtype=np.float64)[idx]
    return {
        "pearson": _rows_pearson(p, g),
        "spearman": _rows_pearson(rankdata(p, axis=1), rankdata(g, axis=1)),
        "mse": ((p - g) ** 2).mean(axis=1),
    }


def _token(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]],
           idx: np.ndarray) -> dict[str, np.ndarray]:
    from seqeval.metrics.sequence_labeling import get_entities

    stats = np.zeros((len(gold), 5))  # true positives, predicted, gold entities, correct tags, tags
    for i, (g, p) in enumerate(zip(gold, pred)):
        g_ent, p_ent = set(get_entities(list(g))), set(get_entities(list(p)))
        stats[i] = (len(g_ent & p_ent), len(p_ent), len(g_ent), sum(a == b for a, b in zip(g, p)), len(g))
    tp, n_pred, n_gold, correct, tags = (stats[idx].sum(axis=1)).T
    precision, recall = _divide(tp, n_pred), _divide(tp, n_gold)
    return {"precision": precision, "recall": recall, "f1": _divide(2 * tp, n_pred + n_gold),
            "accuracy": np.where(tags > 0, _divide(correct, tags), np.nan)}


def _vectorised(kind: str, gold, pred, labels, idx) -> dict[str, np.ndarray]:
    if kind in CLASSIFICATION:
        return _classification(gold, pred, labels, idx)
    if kind == "regression":
        return _regression(gold, pred, idx)
    if kind == "token_classification":
        return _token(gold, pred, idx)
    return {}


def _close(a: float | None, b: float | None, tol: float = TOLERANCE) -> bool:
    a = math.nan if a is None else float(a)
    b = math.nan if b is None else float(b)
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def _by_loop(kind: str, gold, pred, labels, idx: np.ndarray, metric: str) -> np.ndarray:
    out = np.empty(len(idx))
    for b, rows in enumerate(idx):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = compute_metrics(kind, [pred[i] for i in rows], [gold[i] for i in rows], labels)[metric]
        out[b] = math.nan if value is None else value
    return out


def infer_labels(kind: str, gold: Sequence, pred: Sequence, expected: dict[str, float] | None) -> list[str]:
    """The label order of a file that does not record it: sorted, except that a two-class task's
    positive class (`labels[1]`, whose F1 the file reports) is the one that reproduces that F1."""
    if kind not in CLASSIFICATION:
        return []
    labels = sorted({str(v) for v in gold} | {str(v) for v in pred})
    if len(labels) == 2 and expected and "f1" in expected:
        whole = np.arange(len(gold))[None, :]
        flipped = labels[::-1]
        def matches(order: list[str]) -> bool:
            f1 = _classification(gold, pred, order, whole)["f1"][0]
            return _close(f1, expected["f1"], EXPECTED_TOLERANCE)

        if not matches(labels) and matches(flipped):
            return flipped
    return labels


def metric_samples(kind: str, gold: Sequence, pred: Sequence, labels: Sequence[str] | None, idx: np.ndarray,
                   expected: dict[str, float] | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
    """({metric: [B] values} on the resamples `idx` of (gold, pred), problems).

    `expected` (the file's own numbers) names the metrics to resample; without it, every metric
    of `compute_metrics`. A metric the predictions do not reproduce gets no resamples, and a line
    in problems: its interval would describe another number.
    """
    labels = list(labels) if labels else infer_labels(kind, gold, pred, expected)
    whole = _vectorised(kind, gold, pred, labels, np.arange(len(gold))[None, :])
    reference: dict = {}

    def recomputed() -> dict:  # compute_metrics itself, only where the fast form is not enough
        if not reference:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reference.update(compute_metrics(kind, pred, gold, labels))
        return reference

    names = list(expected) if expected is not None else [m for m in recomputed() if m != "n"]
    todo, problems = {}, []
    for metric in names:
        if expected is not None and metric in whole and _close(whole[metric][0], expected[metric],
                                                               EXPECTED_TOLERANCE):
            todo[metric] = True
            continue
        if metric not in recomputed():
            problems.append(f"{metric} is not a metric of {kind} tasks that compute_metrics recomputes")
            continue
        value = recomputed()[metric]
        if expected is not None and not _close(value, expected[metric], EXPECTED_TOLERANCE):
            problems.append(f"{metric} from the predictions is {value}, the file reports {expected[metric]}")
            continue
        todo[metric] = metric in whole and _close(whole[metric][0], value)
    fast = _vectorised(kind, gold, pred, labels, idx) if any(todo.values()) else {}
    samples = {metric: fast[metric] if vectorised else _by_loop(kind, gold, pred, labels, idx, metric)
               for metric, vectorised in todo.items()}
    return samples, problems
