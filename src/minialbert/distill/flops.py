"""Model FLOPs per token of a distillation step, and MFU.

forward FLOPs/token = 2 x (matmul parameters applied per token) + 4 x L x T x d
                      + 2 x (H x H + H x V) x (fraction of positions the vocab head runs at)
training = 3 x forward; a distillation step = teacher forward + 3 x student forward. For the
recursive student the applied parameters are N x the shared layer (not the unique count), plus the
per-recursion adapters and the E -> H projector. Only model FLOPs are counted (not the recomputed
teacher attention maps of the mapped layers, not the losses), as usual for MFU.
"""

from __future__ import annotations


def encoder_layer_params(hidden: int, intermediate: int) -> int:
    return 4 * hidden * hidden + 2 * hidden * intermediate


def head_flops(hidden: int, vocab: int) -> int:
    return 2 * (hidden * hidden + hidden * vocab)


def teacher_forward_flops(cfg, seq_len: int, head_fraction: float) -> float:
    """Teacher forward FLOPs per token; head_fraction = share of positions given vocab logits (0: none)."""
    h, n_layers = cfg.hidden_size, cfg.num_hidden_layers
    f = 2 * n_layers * encoder_layer_params(h, cfg.intermediate_size) + 4 * n_layers * seq_len * h
    return f + head_fraction * head_flops(h, cfg.vocab_size)


def student_forward_flops(cfg, seq_len: int, head_fraction: float) -> float:
    h, n = cfg.hidden_size, cfg.num_recursions
    applied = n * encoder_layer_params(h, cfg.intermediate_size)
    if cfg.embedding_size != h:
        applied += cfg.embedding_size * h
    if getattr(cfg, "use_adapters", False):
        r = h // cfg.adapter_reduction_factor
        applied += 2 * n * 2 * h * r
    f = 2 * applied + 4 * n * seq_len * h
    return f + head_fraction * head_flops(h, cfg.vocab_size)


def step_flops_per_token(student_cfg, teacher_cfg, seq_len: int, *, student_head_fraction: float,
                         teacher_head_fraction: float, teacher: bool = True) -> float:
    f = 3 * student_forward_flops(student_cfg, seq_len, student_head_fraction)
    if teacher:
        f += teacher_forward_flops(teacher_cfg, seq_len, teacher_head_fraction)
    return f
