"""One distillation micro-step: both forwards, the weighted loss over global denominators, backward.

What the training loop, its evaluation and `benchmarks/bench_distill.py` share. The loss of a
micro-batch is sum_k w_k * sum_k / global_den_k, where each term's sum runs over this micro-batch
and its denominator counts the whole global batch (every process, every accumulation micro-step),
so the gradient does not depend on how the batch is split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..runtime import autocast
from . import losses as L
from .faults import Faults
from .masking import IGNORE_INDEX, MaskedBatch
from .teacher import detach_outputs

TERMS = ("mlm", "kd", "att", "hid")


class DistillStudent(nn.Module):
    """The student plus the learned hidden-state projection (both trained, both under DDP)."""

    def __init__(self, student: nn.Module, proj: nn.Module | None):
        super().__init__()
        self.student = student
        self.proj = proj

    def forward(self, input_ids, attention_mask, positions, hid_recursions: tuple = (),
                att_recursions: tuple = (), need_logits: bool = True):
        out = self.student.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                      output_hidden_states=bool(hid_recursions),
                                      attention_recursions=list(att_recursions) if att_recursions else None)
        logits = None
        if need_logits:
            seq = out.last_hidden_state
            seq = seq.gather(1, positions.unsqueeze(-1).expand(-1, -1, seq.size(-1)))
            logits = self.student.mlm_logits(seq)
        hidden = []
        for i in hid_recursions:
            h = out.hidden_states[i + 1]
            hidden.append(self.proj(h) if self.proj is not None else h)
        return logits, hidden, list(out.attentions or ())


@dataclass
class Terms:
    """Which terms are on, their weights, and the layer pairs they use."""

    weights: dict[str, float]
    pairs: list[tuple[int, int]]  # (student recursion, teacher layer)
    temperature: float
    hid_loss: str
    heads: int  # compared heads in ATT (1 when head-averaged)
    att_normalisation: str = "reference"  # or "row" (losses.att_columns)
    on: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self):
        self.on = {k: self.weights[k] > 0 for k in TERMS}

    @property
    def keys(self) -> list[str]:
        """The enabled terms, in the fixed order of TERMS (the order of logged values)."""
        return [k for k in TERMS if self.on[k]]

    @property
    def need_teacher(self) -> bool:
        return self.on["kd"] or self.on["att"] or self.on["hid"]

    @property
    def need_logits(self) -> bool:
        return self.on["mlm"] or self.on["kd"]


def global_dens(mb: MaskedBatch, attention_mask: torch.Tensor, terms: Terms) -> dict[str, float]:
    """Each term's denominator over a (global) batch: masked slots; real tokens (ATT: x compared
    heads x the columns a row counts for, `losses.att_columns`)."""
    n_mask = float(max(1, int((mb.labels != IGNORE_INDEX).sum())))
    n_real = float(max(1, int(attention_mask.sum())))
    att = n_real * terms.heads * L.att_columns(attention_mask.shape[-1], terms.att_normalisation)
    return {"mlm": n_mask, "kd": n_mask, "att": att, "hid": n_real}


def loss_sums(net, runner, terms: Terms, ids, am, positions, labels, precision: str, device,
              eval_mlm: bool = False, faults: Faults | None = None, step: int = -1) -> dict[str, torch.Tensor]:
    """Forward both models on one (local) micro-batch and return the per-term sums."""
    on = terms.on
    hid_l = tuple(l for _, l in terms.pairs) if on["hid"] else ()
    att_l = tuple(l for _, l in terms.pairs) if on["att"] else ()
    t_hidden, t_probs, t_logits = {}, {}, None
    if terms.need_teacher:
        t_hidden, t_probs, t_logits = detach_outputs(
            *runner(ids, am, positions if on["kd"] else None, hid_l, att_l))
    need_logits = terms.need_logits or eval_mlm
    with autocast(device, precision):
        logits, s_hidden, s_att = net(
            ids, am, positions,
            hid_recursions=tuple(i for i, _ in terms.pairs) if on["hid"] else (),
            att_recursions=tuple(i for i, _ in terms.pairs) if on["att"] else (),
            need_logits=need_logits)
    if faults is not None:
        faults.mid_step(step)
    sums: dict[str, torch.Tensor] = {}
    if on["mlm"] or eval_mlm:
        sums["mlm"] = L.mlm_sum(logits, labels)
    if on["kd"]:
        sums["kd"] = L.kd_sum(logits, t_logits, labels != IGNORE_INDEX, terms.temperature)
    if on["att"]:
        sums["att"] = sum(L.att_sum(s, t_probs[l], am) for s, (_, l) in zip(s_att, terms.pairs))
    if on["hid"]:
        sums["hid"] = sum(L.hid_sum(s, t_hidden[l], am, terms.hid_loss) for s, (_, l) in zip(s_hidden, terms.pairs))
    return sums


def forward_backward(fwd, runner, terms: Terms, keys: list[str], x, am, pos, lab, dens: dict[str, float],
                     precision: str, device, scale: float = 1.0, faults: Faults | None = None, step: int = -1):
    """One micro-batch: forward both models, loss = sum_k w_k * sum_k / global_den_k, backward.

    `scale` is the number of processes (DDP averages gradients; the denominators are global).
    Returns (per-term normalised values [len(keys)], weighted loss), detached, on the device.
    """
    sums = loss_sums(fwd, runner, terms, x, am, pos, lab, precision, device, faults=faults, step=step)
    parts = [sums[k] / dens[k] for k in keys]
    loss = sum(terms.weights[k] * p for k, p in zip(keys, parts))
    if faults is not None and step == faults.nan:
        loss = loss * float("nan")
    (loss * scale).backward()
    return torch.stack([p.detach().float() for p in parts]), loss.detach().float()
