"""Bootstrap intervals and paired comparisons.

Every arm (one task, model and mode at its chosen learning rate) gets B replicates of each metric
on each evaluation split. Within a replicate the examples of the split are resampled with
replacement (index matrix shared by every arm of that task and split, so two arms are compared on
the same resampled examples: a paired bootstrap), and, when the arm has several seeds, the seeds
are resampled too (two levels); the replicate is the mean over the drawn seeds of the metric on the
drawn examples. Intervals are the 2.5th and 97.5th percentiles of the replicates.

An arm without predictions (older metrics files) has seed-only replicates when it has several
seeds and none otherwise (its interval is then NaN). Everything is seeded: the same inputs give
the same intervals.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from .resample import metric_samples
from .select import Arm

N_RESAMPLES = 1000
SEED = 0
LEVEL = 0.95


def _rng(*parts: object) -> np.random.Generator:
    key = zlib.crc32("\x00".join(map(str, parts)).encode())  # stable across processes (not hash())
    return np.random.default_rng([SEED, key])


def interval(replicates: np.ndarray | None) -> tuple[float, float]:
    """The central 95% percentile interval; NaN when there are no (finite) replicates."""
    if replicates is None:
        return math.nan, math.nan
    finite = replicates[np.isfinite(replicates)]
    if not len(finite):
        return math.nan, math.nan
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


@dataclass
class Estimate:
    """One metric of one arm on one split: point value (mean over seeds), spread, replicates."""

    mean: float
    std: float
    n_seeds: int
    replicates: np.ndarray | None
    examples: str | None  # fingerprint of the gold labels: paired only when they agree

    @property
    def ci(self) -> tuple[float, float]:
        return interval(self.replicates)


class Bootstrap:
    """Replicates per (arm, split), with the example resamples shared across arms."""

    def __init__(self, n_resamples: int = N_RESAMPLES):
        self.n_resamples = n_resamples
        self._indices: dict[tuple, np.ndarray] = {}
        self._cache: dict[tuple, dict[str, Estimate]] = {}
        self.problems: list[str] = []

    def indices(self, task: str, split: str, n: int) -> np.ndarray:
        key = (task, split, n)
        if key not in self._indices:
            self._indices[key] = _rng("examples", *key).integers(0, n, size=(self.n_resamples, n))
        return self._indices[key]

    def _seed_draws(self, arm: Arm, split: str) -> np.ndarray:
        s = len(arm.runs)
        return _rng("seeds", arm.task, split, arm.model, arm.mode).integers(0, s, size=(self.n_resamples, s))

    def _per_seed(self, arm: Arm, split: str) -> tuple[dict[str, np.ndarray], str | None]:
        """{metric: [S, B]} from the predictions of every seed (empty when one lacks them)."""
        if not all(split in r.predictions for r in arm.runs):
            return {}, None
        per_metric: dict[str, list[np.ndarray]] = {}
        fingerprint = None
        for run in arm.runs:
            gold, pred = run.predictions[split]
            fp = format(zlib.crc32(repr(gold).encode()), "08x") + f"-{len(gold)}"
            if fingerprint not in (None, fp):
                raise ValueError(f"{run.path}: predictions.{split} gold labels differ from the other seeds'")
            fingerprint = fp
            if run.kind is None:
                raise ValueError(f"{run.path}: has predictions but no 'kind'")
            samples, problems = metric_samples(run.kind, gold, pred, run.labels,
                                               self.indices(arm.task, split, len(gold)), run.splits[split])
            self.problems += [f"{run.path}: {split}: {p}; its interval cannot resample the examples"
                              for p in problems]
            for metric, values in samples.items():
                per_metric.setdefault(metric, []).append(values)
        complete = {m: np.stack(v) for m, v in per_metric.items() if len(v) == len(arm.runs)}
        return complete, fingerprint

    def estimates(self, arm: Arm, split: str) -> dict[str, Estimate]:
        """{metric: Estimate} for every score the arm reports on `split`."""
        key = (arm.task, arm.model, arm.mode, split)
        if key in self._cache:
            return self._cache[key]
        per_seed, fingerprint = self._per_seed(arm, split)
        draws = self._seed_draws(arm, split) if len(arm.runs) > 1 else None
        cols = np.arange(self.n_resamples)[:, None]
        out = {}
        for metric in arm.first.splits[split]:
            values = np.array(arm.values(split, metric), dtype=np.float64)
            if metric in per_seed:
                m = per_seed[metric]  # [S, B]
                reps = m[0] if draws is None else m[draws, cols].mean(axis=1)
            elif draws is not None:
                reps = values[draws].mean(axis=1)
            else:
                reps = None
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            out[metric] = Estimate(float(np.mean(values)), std, len(values), reps,
                                   fingerprint if metric in per_seed else None)
        self._cache[key] = out
        return out


@dataclass
class Comparison:
    value: float
    ci_low: float
    ci_high: float
    null: float  # 0 for a difference, 100 for a retention %

    @property
    def distinguishable(self) -> bool:
        return bool(not math.isnan(self.ci_low) and (self.ci_low > self.null or self.ci_high < self.null))


def _paired(a: Estimate, b: Estimate) -> bool:
    return a.replicates is not None and b.replicates is not None and (
        a.examples == b.examples or a.examples is None or b.examples is None)


def difference(a: Estimate, b: Estimate) -> Comparison:
    """a - b on the same resampled examples."""
    reps = a.replicates - b.replicates if _paired(a, b) else None
    return Comparison(a.mean - b.mean, *interval(reps), null=0.0)


def retention(student: list[Estimate], teacher: list[Estimate]) -> Comparison:
    """100 x (mean of the student's scores) / (mean of the teacher's), over paired tasks."""
    reps = None
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero teacher score: no finite ratio
        value = 100 * np.mean([e.mean for e in student]) / np.mean([e.mean for e in teacher])
        if all(_paired(s, t) for s, t in zip(student, teacher)):
            reps = (100 * np.mean([e.replicates for e in student], axis=0)
                    / np.mean([e.replicates for e in teacher], axis=0))
    return Comparison(float(value), *interval(reps), null=100.0)
