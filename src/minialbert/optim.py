"""AdamW as both training loops use it: no weight decay on biases and LayerNorm weights."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def decay_groups(named_params: Iterable[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """Trainable matrices decay; vectors (biases, LayerNorm weights) do not. Empty groups dropped."""
    params = [p for _, p in named_params if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def adamw(named_params: Iterable[tuple[str, nn.Parameter]], *, lr: float, weight_decay: float,
          eps: float = 1e-8, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over `decay_groups`; the fused kernel (CUDA and CPU) where this torch has it.

    eps 1e-8 and betas (0.9, 0.999) are the defaults of `transformers.Trainer`, the reference's.
    """
    groups = decay_groups(named_params, weight_decay)
    try:  # one pass over the parameters; ~5x faster than foreach on CPU
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
