"""The teacher's MLM head, checked before KD may learn from it.

A teacher folder can hold an MLM head that was never trained (a base model saved with a freshly
initialised head, weights whose head keys were missing): its logits are noise, and KD would
distil that noise. So before training, the teacher predicts `head_check_windows` windows of the
tokenised corpus, masked as the MLM loss masks them (seeded, `mask_prob`, 80/10/10), and its top-1
accuracy at the masked slots is compared with chance: the accuracy of always predicting the most
frequent real, non-special token of those windows, over the same slots. With `weights.kd > 0` the
run is refused unless the teacher beats chance. Both numbers go into summary.json
(`teacher_mlm_accuracy`, `teacher_mlm_chance`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import StageError
from .masking import mask_tokens, num_mask_slots, step_generator
from .teacher import TeacherRunner

STREAM = 2  # masking stream of the check (0: training steps, 1: evaluation)


def check_windows(n: int, count: int, seed: int) -> np.ndarray:
    """`count` of the n window indices, a seeded sample in corpus order (all of them when count >= n)."""
    if count >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng([seed, STREAM]).choice(n, size=count, replace=False))


@torch.no_grad()
def teacher_mlm_accuracy(teacher, data, *, windows: int, mask_prob: float, seed: int, device,
                         batch_size: int = 32) -> tuple[float, float, int]:
    """(top-1 accuracy, chance, masked tokens) of the teacher's MLM head on masked corpus windows.

    The teacher runs as loaded (fp32, eval mode): the check is about its weights, not the arithmetic.
    """
    idx = check_windows(len(data), windows, seed)
    ids, am = data.batch(idx)
    mb = mask_tokens(ids, am, num_slots=num_mask_slots(data.max_length, mask_prob), mask_id=data.mask_id,
                     special_ids=data.special_ids, vocab_size=data.vocab_size, mask_prob=mask_prob,
                     generator=step_generator(seed, 0, stream=STREAM))
    real = am.bool() & ~torch.isin(ids, torch.tensor(data.special_ids, dtype=ids.dtype))
    most_frequent = int(torch.bincount(ids[real]).argmax()) if real.any() else -1
    valid = mb.valid
    runner = TeacherRunner(teacher)
    hits = 0
    for lo in range(0, len(idx), batch_size):
        rows = slice(lo, lo + batch_size)
        x, a, pos = (t[rows].to(device) for t in (mb.input_ids, am, mb.positions))
        _, _, logits = runner(x, a, pos)
        hits += int(((logits.argmax(-1).cpu() == mb.labels[rows]) & valid[rows]).sum())
    n = int(valid.sum())
    chance = int(((mb.labels == most_frequent) & valid).sum())
    return hits / max(1, n), chance / max(1, n), n


def check_teacher_head(teacher, has_head: bool, data, spec, teacher_dir: Path, device) -> dict[str, Any]:
    """summary.json's `teacher_mlm_accuracy` / `teacher_mlm_chance`; StageError when KD is asked of
    a head that does not beat chance. A head-less teacher gives None for both (KD is refused
    before this, by `setup.check_kd`)."""
    if not has_head:
        return {"teacher_mlm_accuracy": None, "teacher_mlm_chance": None}
    acc, chance, n = teacher_mlm_accuracy(teacher.to(device), data, windows=spec.head_check_windows,
                                          mask_prob=spec.mask_prob, seed=spec.seed, device=device,
                                          batch_size=spec.batch_size)
    if spec.weights["kd"] > 0 and acc <= chance:
        raise StageError(
            f"distill.weights.kd > 0 but the MLM head of teacher {teacher_dir} is no better than chance: "
            f"top-1 accuracy {acc:.4f} on {n} masked tokens of {min(len(data), spec.head_check_windows)} "
            f"corpus windows, chance (always the most frequent token) {chance:.4f}; its head is likely "
            f"untrained: use a teacher with a pretrained MLM head or set distill.weights.kd to 0")
    return {"teacher_mlm_accuracy": acc, "teacher_mlm_chance": chance}
