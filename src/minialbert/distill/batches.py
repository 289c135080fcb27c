"""Which windows, masked how, a step sees: a pure function of (seed, step), whatever the processes.

The training windows are read in a seeded per-epoch permutation (`DataOrder`); the last 2% of the
corpus is held out for evaluation (`eval_indices`). Every rank masks the *whole* global batch with a
generator seeded by (seed, step) and keeps its own slice, so the loss denominators are global
counts known without communication, and the trajectory survives interruptions and a change of the
number of processes.
"""

from __future__ import annotations

import numpy as np
import torch

from .masking import MaskedBatch, mask_tokens


class DataOrder:
    """An endless stream of training-window indices: epoch e is a permutation seeded by (seed, e)."""

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError("the tokenised corpus has no training windows")
        self.n, self.seed = n, seed
        self._cache: dict[int, np.ndarray] = {}

    def perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            self._cache = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return self._cache[epoch]

    def take(self, start: int, count: int) -> np.ndarray:
        out = []
        k = start
        while len(out) < count:
            epoch, off = divmod(k, self.n)
            chunk = self.perm(epoch)[off: off + count - len(out)]
            out.extend(chunk.tolist())
            k += len(chunk)
        return np.asarray(out, dtype=np.int64)

    def position(self, start: int) -> tuple[int, int]:
        """(epoch, offset in that epoch's permutation) of stream position `start`."""
        return divmod(start, self.n)


def eval_indices(n: int) -> tuple[int, np.ndarray]:
    """(number of training windows, held-out window indices): the last 2% (<= 256, >= 1 when n >= 20)."""
    n_eval = min(256, max(1, n // 50)) if n >= 20 else 0
    return n - n_eval, np.arange(n - n_eval, n, dtype=np.int64)


def masked_batch(data, idx: np.ndarray, *, num_slots: int, mask_prob: float, generator: torch.Generator
                 ) -> tuple[MaskedBatch, torch.Tensor]:
    """Windows `idx` of a PackedWindows, masked: (MaskedBatch, attention mask), on the CPU."""
    ids, am = data.batch(idx)
    mb = mask_tokens(ids, am, num_slots=num_slots, mask_id=data.mask_id, special_ids=data.special_ids,
                     vocab_size=data.vocab_size, mask_prob=mask_prob, generator=generator)
    return mb, am

