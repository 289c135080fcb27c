"""The four distillation terms, each as a *sum* plus its normaliser (docs/method.md, "Distillation
objective").

The training step divides every sum by a denominator computed over the whole global batch (all
processes, all accumulation micro-steps), so the loss and its gradient do not depend on how the
batch is split. The `*_loss` wrappers give the plain means used in tests and evaluation.

Definitions (all computed in fp32):
- MLM: cross-entropy of the student at the masked slots against the original ids;
  mean over valid masked slots.
- KD: KL(softmax(t/T) || softmax(s/T)) * T^2 at the masked slots only; "batchmean" over valid
  masked slots.
- ATT: for each mapped (student recursion, teacher layer) pair, the KL divergence
  KL(teacher row || student row) of the attention probabilities (pre-dropout), for every query
  row of a real token and every head; summed over pairs. Padded keys have probability 0 in both
  maps and contribute 0 (0 log 0 := 0, log guarded). Normalised (`distill.att_normalisation`) as
  the reference's `KLDivLoss(reduction="mean")` over the selected rows, i.e. by real rows x compared
  heads x T columns (T the padded length, padded keys included), or, with `row`, by real rows x
  compared heads only (the mean row-KL, T times larger). When the head counts differ both maps are
  head-averaged first (one compared head).
- HID: for each pair, mean over real tokens of (1 - cosine(proj(s), t)) (or, with `mse`, the
  mean over real tokens of the squared error averaged over the teacher width); summed over pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .masking import IGNORE_INDEX

_TINY = 1e-30


def mlm_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of CE over slots with label != -100. logits (B, M, V), labels (B, M)."""
    v = logits.shape[-1]
    return F.cross_entropy(logits.float().reshape(-1, v), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                           reduction="sum")


def kd_sum(s_logits: torch.Tensor, t_logits: torch.Tensor, valid: torch.Tensor, temperature: float = 1.0
           ) -> torch.Tensor:
    """Sum over valid slots of KL(softmax(t/T) || softmax(s/T)) * T^2. Logits (B, M, V), valid (B, M)."""
    temp = float(temperature)
    log_ps = F.log_softmax(s_logits.float() / temp, dim=-1)
    log_pt = F.log_softmax(t_logits.float() / temp, dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1)  # (B, M)
    return (kl * valid.to(kl.dtype)).sum() * (temp * temp)


def head_match(s_probs: torch.Tensor, t_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Equal head counts: unchanged; otherwise both maps averaged over heads -> (B, 1, T, T)."""
    if s_probs.shape[1] != t_probs.shape[1]:
        return s_probs.mean(1, keepdim=True), t_probs.mean(1, keepdim=True)
    return s_probs, t_probs


def att_sum(s_probs: torch.Tensor, t_probs: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sum over real query rows and compared heads of KL(t_row || s_row). Probs (B, H, T, T)."""
    s, t = head_match(s_probs.float(), t_probs.float())
    kl = (torch.xlogy(t, t) - t * torch.log(s.clamp_min(_TINY))).sum(-1)  # (B, H, T)
    rows = attention_mask.to(kl.dtype).unsqueeze(1)  # (B, 1, T)
    return (kl * rows).sum()


def att_heads(s_probs: torch.Tensor, t_probs: torch.Tensor) -> int:
    return s_probs.shape[1] if s_probs.shape[1] == t_probs.shape[1] else 1


def att_columns(seq_len: int, normalisation: str) -> int:
    """What one (row, head) counts for in the ATT denominator: T columns (reference) or 1 (row)."""
    if normalisation == "reference":
        return int(seq_len)
    if normalisation == "row":
        return 1
    raise ValueError(f"distill.att_normalisation must be 'reference' or 'row', got {normalisation!r}")


def hid_sum(s_hidden: torch.Tensor, t_hidden: torch.Tensor, attention_mask: torch.Tensor,
            kind: str = "cosine") -> torch.Tensor:
    """Sum over real tokens of (1 - cos) or of the per-token MSE. Hidden (B, T, H) of equal width."""
    s, t = s_hidden.float(), t_hidden.float()
    if kind == "cosine":
        per_tok = 1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8)
    elif kind == "mse":
        per_tok = (s - t).pow(2).mean(-1)
    else:
        raise ValueError(f"distill.hid_loss must be 'cosine' or 'mse', got {kind!r}")
    return (per_tok * attention_mask.to(per_tok.dtype)).sum()


# ---- plain means (tests, evaluation) ----------------------------------------------------------

def mlm_loss(logits, labels):
    return mlm_sum(logits, labels) / (labels != IGNORE_INDEX).sum().clamp_min(1)


def kd_loss(s_logits, t_logits, valid, temperature=1.0):
    return kd_sum(s_logits, t_logits, valid, temperature) / valid.sum().clamp_min(1)


def att_loss(s_probs, t_probs, attention_mask, normalisation="reference"):
    cols = att_columns(attention_mask.shape[-1], normalisation)
    n = attention_mask.sum().clamp_min(1) * att_heads(s_probs, t_probs) * cols
    return att_sum(s_probs, t_probs, attention_mask) / n


def hid_loss(s_hidden, t_hidden, attention_mask, kind="cosine"):
    return hid_sum(s_hidden, t_hidden, attention_mask, kind) / attention_mask.sum().clamp_min(1)
