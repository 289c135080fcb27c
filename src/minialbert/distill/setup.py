"""Everything a distillation run is built from: the models, then the training set-up around them.

`build_models` loads the teacher, configures and initialises the student and resolves the layer
map (all a `distill: false` student needs); `Setup.build` adds the rest of a training run: the
enabled loss terms, the HID projection, devices, DDP and compilation, the teacher runner, AdamW
with its linear schedule, the data order and batch geometry, and the hash that guards `--resume`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..optim import adamw
from ..runtime import resolve_precision, seed_everything
from .batches import DataOrder, eval_indices
from .checkpoint import state_dir_for
from .distributed import Runtime
from .faults import Faults
from .flops import step_flops_per_token
from .masking import num_mask_slots
from .spec import DistillSpec, StudentSpec, resolve_layer_map, state_hash
from .step import DistillStudent, Terms
from .teacher import TeacherRunner, load_teacher, teacher_has_mlm_head, teacher_identity


def check_kd(spec: DistillSpec, teacher_dir) -> None:
    if spec.weights["kd"] > 0 and not teacher_has_mlm_head(teacher_dir):
        raise ValueError(
            f"distill.weights.kd > 0 needs a teacher with an MLM head (teacher {teacher_dir} has none); "
            f"set distill.weights.kd to 0")


def open_tokens(tokens_dir: Path, teacher_dir: Path):
    """The tokenised corpus, checked to be tokenised with the teacher's vocabulary."""
    from ..data.packed import PackedWindows, check_vocab_compatible

    data = PackedWindows(tokens_dir)
    check_vocab_compatible(tokens_dir, teacher_dir)
    return data


def student_config(sspec: StudentSpec, teacher_cfg, meta: dict | None):
    """The preset with the overrides, sized to the teacher's vocabulary and the corpus' windows."""
    from ..modeling_minialbert import preset_config

    overrides = dict(sspec.overrides)
    overrides.setdefault("vocab_size", int(teacher_cfg.vocab_size))
    pad = meta["pad_id"] if meta is not None else getattr(teacher_cfg, "pad_token_id", None)
    if pad is not None:
        overrides.setdefault("pad_token_id", int(pad))
    try:
        cfg = preset_config(sspec.preset, **overrides)
    except ValueError as err:
        raise ValueError(f"student: {err}") from None
    if meta is not None:
        if cfg.vocab_size < int(meta["vocab_size"]):
            raise ValueError(
                f"student.overrides.vocab_size = {cfg.vocab_size} is smaller than the vocabulary of the "
                f"tokenised corpus ({meta['vocab_size']}, meta.json)")
        if cfg.pad_token_id != int(meta["pad_id"]):
            raise ValueError(f"student.overrides.pad_token_id = {cfg.pad_token_id} but the tokenised corpus "
                             f"pads with {meta['pad_id']} (meta.json pad_id)")
        if cfg.max_position_embeddings < int(meta["max_length"]):
            raise ValueError(f"student.overrides.max_position_embeddings = {cfg.max_position_embeddings} < "
                             f"window length {meta['max_length']} of the tokenised corpus")
    return cfg


@dataclass
class Models:
    teacher: nn.Module  # with its MLM head when it has one: KD needs it and `init: teacher` copies it
    teacher_has_head: bool
    student: nn.Module  # MiniAlbertForMaskedLM, initialised
    layer_map: list[int | None]
    init_info: dict | None

    @property
    def cfg(self):
        return self.student.config

    @property
    def tcfg(self):
        return self.teacher.config


def build_models(teacher_dir: Path, sspec: StudentSpec, spec: DistillSpec, meta: dict | None,
                 embeddings_dir: Path | None = None) -> Models:
    from ..modeling_minialbert import MiniAlbertForMaskedLM

    teacher, has_head = load_teacher(teacher_dir, need_head=True)
    tcfg = teacher.config
    cfg = student_config(sspec, tcfg, meta)
    layer_map = resolve_layer_map(spec.layer_map, cfg.num_recursions, int(tcfg.num_hidden_layers))
    if spec.weights["kd"] > 0 and cfg.vocab_size != tcfg.vocab_size:
        raise ValueError(f"distill.weights.kd > 0 needs the student vocab_size ({cfg.vocab_size}) to equal "
                         f"the teacher's ({tcfg.vocab_size})")
    seed_everything(spec.seed)
    student = MiniAlbertForMaskedLM(cfg)
    init_info = None
    if sspec.init == "teacher":
        from ..teacher_init import init_student_from_teacher

        init_info = init_student_from_teacher(student, teacher)
    elif sspec.init == "embeddings":
        from ..embedding_init import init_embeddings_from

        init_info = init_embeddings_from(student, embeddings_dir, teacher_dir)
    return Models(teacher, has_head, student, layer_map, init_info)


def make_terms(spec: DistillSpec, models: Models) -> Terms:
    cfg, tcfg = models.cfg, models.tcfg
    pairs = [(i, l) for i, l in enumerate(models.layer_map) if l is not None]
    heads = cfg.num_attention_heads if cfg.num_attention_heads == int(tcfg.num_attention_heads) else 1
    return Terms(dict(spec.weights), pairs, spec.temperature, spec.hid_loss, heads, spec.att_normalisation)


def make_projection(spec: DistillSpec, terms: Terms, hs: int, ht: int) -> nn.Module | None:
    """The learned H_s -> H_t map of the HID term, when it is needed (or asked for)."""
    if not terms.on["hid"]:
        return None
    if spec.hid_projection == "always" or (spec.hid_projection == "auto" and hs != ht):
        return nn.Linear(hs, ht)  # initialised from the seeded global RNG
    if hs != ht:
        raise ValueError(f"distill.hid_projection is 'never' but the student hidden size ({hs}) differs "
                         f"from the teacher's ({ht}); use 'auto'")
    return None


def freeze_vocab_head(student: nn.Module) -> None:
    """Without MLM/KD the vocab head gets no gradient; frozen, it stays out of DDP's reducer."""
    base = {id(p) for p in student.base_model.parameters()}
    for p in student.parameters():
        if id(p) not in base:
            p.requires_grad_(False)


def optimizer_and_schedule(net: nn.Module, spec: DistillSpec):
    """AdamW with linear warm-up to `lr`, then linear decay to 0 at `steps`."""
    from transformers import get_scheduler

    optimizer = adamw(net.named_parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=spec.warmup_steps,
                              num_training_steps=spec.steps)
    return optimizer, scheduler


@dataclass
class Setup:
    """A ready training run: what the loop reads (it changes only the models and the optimiser)."""

    rt: Runtime
    spec: DistillSpec
    out: Path
    state_dir: Path
    teacher_dir: Path
    data: Any  # PackedWindows
    models: Models
    summary: dict[str, Any]  # filled in by outputs.finish
    precision: str  # "bf16" | "fp32"
    terms: Terms
    net: DistillStudent  # student + projection (what is saved)
    model: nn.Module  # `net`, DDP-wrapped when distributed (for no_sync)
    fwd: nn.Module  # `model`, compiled when asked (what runs)
    runner: TeacherRunner | None  # None when no term needs the teacher
    params: list[nn.Parameter]  # the trained ones
    optimizer: torch.optim.Optimizer
    scheduler: Any
    seq_len: int
    mask_slots: int
    n_train: int
    eval_idx: np.ndarray
    order: DataOrder
    micro_batch: int  # windows per accumulation micro-step, all processes
    global_batch: int  # windows per optimiser step, all processes
    stop_at: int  # min(steps, --max-steps)
    state_hash: str
    flops_per_token: float
    faults: Faults

    @classmethod
    def build(cls, rt: Runtime, models: Models, data, sspec: StudentSpec, spec: DistillSpec, out: Path,
              teacher_dir: Path, max_steps: int | None, summary: dict[str, Any]) -> "Setup":
        dev, cfg, tcfg, student = rt.device, models.cfg, models.tcfg, models.student
        precision = resolve_precision(spec.precision, dev)
        if precision == "fp32" and dev.type == "cuda":
            # the reference's arithmetic: no TF32 in cuBLAS matmuls or cuDNN, whatever the defaults
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        terms = make_terms(spec, models)
        proj = make_projection(spec, terms, cfg.hidden_size, int(tcfg.hidden_size))
        if not terms.need_logits:
            freeze_vocab_head(student)

        student.to(dev).train()
        net = DistillStudent(student, proj).to(dev)
        runner = None
        if terms.need_teacher:
            models.teacher.to(dev)
            runner = TeacherRunner(models.teacher, dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
        model = net
        if rt.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(net, device_ids=[dev.index] if dev.type == "cuda" else None)
        fwd = model
        if spec.compile:
            fwd = torch.compile(model)
            if runner is not None:
                runner.compile()
        optimizer, scheduler = optimizer_and_schedule(net, spec)

        seq_len = data.max_length
        mask_slots = num_mask_slots(seq_len, spec.mask_prob)
        n_train, eval_idx = eval_indices(len(data))
        micro = spec.batch_size * rt.world
        global_batch = micro * spec.grad_accum
        meta = data.meta
        run_hash = state_hash({
            "method": spec.method_dict(), "global_batch": global_batch,
            "student": {k: v for k, v in sspec.to_dict().items() if k != "name"},
            "teacher": teacher_identity(teacher_dir),
            "tokens": {k: meta.get(k) for k in ("n_windows", "max_length", "vocab_sha256", "n_tokens")},
        })
        head_fraction = mask_slots / seq_len
        flops = step_flops_per_token(
            cfg, tcfg, seq_len, student_head_fraction=head_fraction if terms.need_logits else 0.0,
            teacher_head_fraction=head_fraction if terms.on["kd"] else 0.0, teacher=terms.need_teacher)
        return cls(
            rt=rt, spec=spec, out=out, state_dir=state_dir_for(out), teacher_dir=teacher_dir, data=data,
            models=models, summary=summary, precision=precision, terms=terms, net=net, model=model, fwd=fwd,
            runner=runner, params=[p for p in net.parameters() if p.requires_grad], optimizer=optimizer,
            scheduler=scheduler, seq_len=seq_len, mask_slots=mask_slots, n_train=n_train, eval_idx=eval_idx,
            order=DataOrder(n_train, spec.seed), micro_batch=micro, global_batch=global_batch,
            stop_at=spec.steps if max_steps is None else min(spec.steps, max_steps), state_hash=run_hash,
            flops_per_token=flops, faults=Faults.from_env())
