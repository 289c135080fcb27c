"""The selection protocol: which split chooses the epoch (and, in the aggregate, the learning
rate) and which split is reported.

- `dev`: the task has its own dev and a labelled test: the best epoch on dev, test reported.
- `train_slice` (GLUE-like tasks, whose test labels are hidden and whose dev is reported): a
  stratified slice of train is held out, the model trains on the rest, the best epoch on the slice
  is kept and dev is reported, so nothing is chosen on the reported numbers.
- `reference`: the reference code's rule: all of train, the last epoch, dev reported (the
  aggregate then chooses the learning rate on that same dev).

`finetune.settings.selection` picks between the last two (see the schema); a task with a labelled
test always uses `dev`. The slice depends only on the task (its seed and file order), never on the
model, mode, learning rate or run seed, so every run of a task holds out the same examples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..tasks.splitting import subsample_indices
from .batches import stratum_keys, task_seed

SLICE_PURPOSE = "selection_slice"  # salt of the slice's hash order (see tasks.splitting)


@dataclass(frozen=True)
class Protocol:
    name: str  # dev | train_slice | reference
    selection_split: str  # dev | train_slice
    reported_split: str  # test | dev
    last_epoch: bool  # reference: no epoch selection


def choose_protocol(test_has_labels: bool, selection: str) -> Protocol:
    if test_has_labels:
        return Protocol("dev", "dev", "test", last_epoch=False)
    if selection == "train_slice":
        return Protocol("train_slice", "train_slice", "dev", last_epoch=False)
    return Protocol("reference", "dev", "dev", last_epoch=True)


def slice_indices(arrays: dict[str, np.ndarray], task: dict, fraction: float, at_most: int) -> list[int]:
    """Indices (into train) of the selection slice: `fraction` of train, at most `at_most`."""
    n = len(arrays["offsets"]) - 1
    size = min(at_most, int(math.floor(n * fraction + 0.5)))  # round half up, as tasks.splitting
    if not 1 <= size < n:
        raise ValueError(f"finetune.settings.slice_fraction: {fraction:g} of {n} train examples "
                         f"gives a selection slice of {size}; it needs at least one example and "
                         f"must leave some to train on (or use selection: reference)")
    uids = [str(i) for i in range(n)]
    return subsample_indices(stratum_keys(arrays, task["kind"]), uids, size, task_seed(task),
                             SLICE_PURPOSE)
