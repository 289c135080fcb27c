"""The distillation loop: a short, explicit training loop (in the spirit of nanoGPT).

One optimiser step:
  1. the step's global batch (batch_size x world x grad_accum windows) is read from a seeded
     per-epoch permutation of the training windows; every rank masks the *whole* global batch with
     a generator seeded by (seed, step) and keeps its own slice, so the loss denominators are
     global counts known without communication, and the trajectory does not depend on the number
     of processes nor on interruptions;
  2. per micro-batch: teacher forward (eval mode, inference mode, bf16 weights when precision is
     bf16, SDPA; attention maps recomputed only for mapped layers, vocab head only at the masked
     slots), student forward under autocast (SDPA; attention probabilities only for mapped
     recursions; vocab head only at the masked slots), loss = sum_k w_k * sum_k / global_den_k,
     backward (DDP gradient all-reduce only on the last micro-batch);
  3. gradient clipping, AdamW, linear warm-up + linear decay.
Per-term losses accumulate on the device; the host reads them (one sync) only every `log_every`
steps, when it also checks for non-finite values. Every `checkpoint_every` steps the full state is
written atomically to `<out>.state/latest.pt`; SIGTERM checkpoints at the next step boundary and
exits with code 143; a non-finite loss stops the run with `NonFiniteLossError` and never
overwrites the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..atomic import staged_dir, write_json
from ..cli import StageError
from . import losses as L
from .checkpoint import load_state, rng_state, save_state, set_rng_state, state_dir_for, to_cpu
from .distributed import Runtime, autocast, resolve_precision, setup, teardown
from .flops import step_flops_per_token
from .masking import IGNORE_INDEX, MaskedBatch, mask_tokens, num_mask_slots, step_generator
from .spec import DistillSpec, StudentSpec, parse_spec, parse_student_spec, resolve_layer_map, state_hash
from .teacher import TeacherRunner, detach_outputs, load_teacher, teacher_has_mlm_head, teacher_identity

EXIT_PREEMPTED = 143  # 128 + SIGTERM: "terminated, resumable" for SLURM / Snakemake retries
TERMS = ("mlm", "kd", "att", "hid")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "added_tokens.json", "spiece.model", "sentencepiece.bpe.model")
FAULT_ENV = "MINIALBERT_DISTILL_FAULT"  # test hook, see _Faults


class NonFiniteLossError(StageError):
    """The loss became NaN/inf: the run stops; the last good checkpoint is kept."""


# ---------------------------------------------------------------------------------------------
# pieces


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
        return divmod(start, self.n)


class _Faults:
    """Test-only fault injection from $MINIALBERT_DISTILL_FAULT, e.g. "nan@3,sleep=0.2,sigkill@5".

    nan@K: the loss of step K (0-based optimiser step) is multiplied by NaN; sigkill@K / sigterm@K:
    the process sends itself that signal in the middle of step K (after the forward pass);
    sleep=S: each step sleeps S seconds (so an external signal lands mid-run).
    """

    def __init__(self, text: str | None):
        self.nan = self.sigkill = self.sigterm = -1
        self.sleep = 0.0
        for item in filter(None, (text or "").split(",")):
            key, _, val = item.partition("@") if "@" in item else item.partition("=")
            if key in ("nan", "sigkill", "sigterm"):
                setattr(self, key, int(val))
            elif key == "sleep":
                self.sleep = float(val)

    def mid_step(self, step: int) -> None:
        if self.sleep:
            time.sleep(self.sleep)
        if step == self.sigkill:
            os.kill(os.getpid(), signal.SIGKILL)
        if step == self.sigterm:
            os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class Terms:
    """Which terms are on, their weights, and the layer pairs they use."""

    weights: dict[str, float]
    pairs: list[tuple[int, int]]  # (student recursion, teacher layer)
    temperature: float
    hid_loss: str
    heads: int  # compared heads in ATT (1 when head-averaged)
    on: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self):
        self.on = {k: self.weights[k] > 0 for k in TERMS}

    @property
    def need_teacher(self) -> bool:
        return self.on["kd"] or self.on["att"] or self.on["hid"]

    @property
    def need_logits(self) -> bool:
        return self.on["mlm"] or self.on["kd"]


def global_dens(mb: MaskedBatch, attention_mask: torch.Tensor, heads: int) -> dict[str, float]:
    n_mask = float(max(1, int((mb.labels != IGNORE_INDEX).sum())))
    n_real = float(max(1, int(attention_mask.sum())))
    return {"mlm": n_mask, "kd": n_mask, "att": n_real * heads, "hid": n_real}


def loss_sums(net, runner, terms: Terms, ids, am, positions, labels, precision: str, device,
              eval_mlm: bool = False, faults: _Faults | None = None, step: int = -1) -> dict[str, torch.Tensor]:
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
                     precision: str, device, scale: float = 1.0, faults: _Faults | None = None, step: int = -1):
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


def lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return step / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def make_optimizer(params_named: list[tuple[str, nn.Parameter]], spec: DistillSpec, device: torch.device):
    decay = [p for n, p in params_named if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in params_named if p.requires_grad and p.ndim < 2]  # biases, LayerNorm
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs: dict[str, Any] = {"lr": spec.lr, "betas": (0.9, 0.999), "eps": 1e-6}
    try:  # the fused kernel (CUDA and CPU): one pass over the parameters, ~5x faster than foreach on CPU
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, **kwargs)


# ---------------------------------------------------------------------------------------------
# set-up helpers


def student_config(sspec: StudentSpec, teacher_cfg, meta: dict | None):
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


def check_kd(spec: DistillSpec, teacher_dir) -> None:
    if spec.weights["kd"] > 0 and not teacher_has_mlm_head(teacher_dir):
        raise ValueError(
            f"distill.weights.kd > 0 needs a teacher with an MLM head (teacher {teacher_dir} has none); "
            f"set distill.weights.kd to 0")


def eval_indices(n: int) -> tuple[int, np.ndarray]:
    """(number of training windows, held-out window indices): the last 2% (<= 256, >= 1 when n >= 20)."""
    n_eval = min(256, max(1, n // 50)) if n >= 20 else 0
    return n - n_eval, np.arange(n - n_eval, n, dtype=np.int64)


def copy_tokenizer(teacher_dir: Path, dest: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        src = Path(teacher_dir) / name
        if src.is_file():
            shutil.copy2(src, dest / name)
            copied.append(name)
    return copied


def write_final(out: Path, student, teacher_dir: Path, summary: dict, log: dict, tb_dir: Path | None) -> None:
    """The results folder appears atomically (built in a temporary sibling, then renamed)."""
    with staged_dir(out) as tmp:
        student.save_pretrained(tmp)
        summary["tokenizer_files"] = copy_tokenizer(teacher_dir, tmp)
        write_json(tmp / "train_log.json", log)
        write_json(tmp / "summary.json", summary)
        if tb_dir is not None and tb_dir.is_dir():
            shutil.copytree(tb_dir, tmp / "tb")
        _umask_perms(tmp)


def _umask_perms(root: Path) -> None:
    """Temporary files/folders are created 0600/0700; give the output the usual umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [root, *root.rglob("*")]:
        with contextlib.suppress(OSError):
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _print(rt: Runtime, msg: str) -> None:
    if rt.is_main:
        try:
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)
        except ImportError:
            print(msg, file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# the run


def run(teacher: str | os.PathLike, tokens: str | os.PathLike | None, student_spec, spec, out,
        resume: bool = False, max_steps: int | None = None) -> dict[str, Any]:
    """Distil (or just initialise) one student. Returns the summary (rank 0; {} elsewhere)."""
    spec = spec if isinstance(spec, DistillSpec) else parse_spec(spec)
    sspec = student_spec if isinstance(student_spec, StudentSpec) else parse_student_spec(student_spec)
    teacher, out = Path(teacher), Path(out)
    if max_steps is not None and max_steps < 0:
        raise ValueError(f"--max-steps must be >= 0, got {max_steps}")
    check_kd(spec, teacher)
    if sspec.distill and tokens is None:
        raise ValueError("--tokens is required when the student is distilled (student.distill: true)")
    rt = setup()
    try:
        return _run(rt, teacher, Path(tokens) if tokens is not None else None, sspec, spec, out, resume, max_steps)
    finally:
        teardown(rt)


def _run(rt: Runtime, teacher_dir: Path, tokens_dir: Path | None, sspec: StudentSpec, spec: DistillSpec,
         out: Path, resume: bool, max_steps: int | None) -> dict[str, Any]:
    from ..data import PackedWindows, check_vocab_compatible
    from ..modeling_minialbert import MiniAlbertForMaskedLM, parameter_counts

    t_setup = time.perf_counter()
    if spec.threads:
        torch.set_num_threads(spec.threads)
    data = meta = None
    if tokens_dir is not None:
        data = PackedWindows(tokens_dir)
        meta = data.meta
        check_vocab_compatible(tokens_dir, teacher_dir)
    # with its MLM head when it has one: KD needs it and `init: teacher` copies it
    teacher_model, has_head = load_teacher(teacher_dir, need_head=True)
    tcfg = teacher_model.config
    cfg = student_config(sspec, tcfg, meta)
    layer_map = resolve_layer_map(spec.layer_map, cfg.num_recursions, int(tcfg.num_hidden_layers))
    if spec.weights["kd"] > 0 and cfg.vocab_size != tcfg.vocab_size:
        raise ValueError(f"distill.weights.kd > 0 needs the student vocab_size ({cfg.vocab_size}) to equal "
                         f"the teacher's ({tcfg.vocab_size})")
    precision = resolve_precision(spec.precision, rt.device)

    torch.manual_seed(spec.seed)
    student = MiniAlbertForMaskedLM(cfg)
    init_info = None
    if sspec.init == "teacher":
        from ..teacher_init import init_student_from_teacher

        init_info = init_student_from_teacher(student, teacher_model)
    name = sspec.name or out.name
    summary: dict[str, Any] = {
        "name": name, "init": sspec.init, "distill": sspec.distill, "preset": sspec.preset,
        "student_config": {k: cfg.to_dict().get(k) for k in (
            "vocab_size", "embedding_size", "hidden_size", "num_recursions", "num_attention_heads",
            "intermediate_size", "use_adapters", "adapter_reduction_factor")},
        "teacher": str(teacher_dir), "teacher_has_mlm_head": has_head, "tokens": str(tokens_dir) if tokens_dir else None,
        "init_info": _jsonable(init_info), "parameter_counts": parameter_counts(student),
        "layer_map": layer_map, "weights": spec.weights, "spec": spec.to_dict(), "student_spec": sspec.to_dict(),
    }
    if not sspec.distill:
        summary.update(steps=0, tokens_seen=0, wall_seconds=0.0, train_seconds=0.0, tokens_per_second=None,
                       final_losses={}, eval_losses=None, precision=None, world_size=rt.world)
        if rt.is_main:
            write_final(out, student, teacher_dir, summary, {"train": [], "eval": []}, None)
            _print(rt, f"distill: {name}: saved the {sspec.init}-initialised student (steps 0) to {out}")
        rt.barrier()
        return summary if rt.is_main else {}

    assert data is not None and meta is not None
    return Trainer(rt, teacher_dir, data, meta, teacher_model, tcfg, student, cfg, sspec, spec, out, resume,
                   max_steps, layer_map, precision, summary, t_setup).train()


def _jsonable(obj):
    try:
        return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    except (TypeError, ValueError):
        return str(obj)


class Trainer:
    def __init__(self, rt, teacher_dir, data, meta, teacher_model, tcfg, student, cfg, sspec, spec, out, resume,
                 max_steps, layer_map, precision, summary, t_setup):
        self.rt, self.data, self.meta, self.spec, self.out = rt, data, meta, spec, out
        self.teacher_dir, self.student, self.cfg, self.tcfg = teacher_dir, student, cfg, tcfg
        self.summary, self.precision, self.resume, self.t_setup = summary, precision, resume, t_setup
        dev = rt.device
        self.state_dir = state_dir_for(out)
        self.faults = _Faults(os.environ.get(FAULT_ENV))

        hs, ht = cfg.hidden_size, int(tcfg.hidden_size)
        pairs = [(i, l) for i, l in enumerate(layer_map) if l is not None]
        heads = cfg.num_attention_heads if cfg.num_attention_heads == int(tcfg.num_attention_heads) else 1
        self.terms = Terms(dict(spec.weights), pairs, spec.temperature, spec.hid_loss, heads)
        proj = None
        if self.terms.on["hid"]:
            if spec.hid_projection == "always" or (spec.hid_projection == "auto" and hs != ht):
                proj = nn.Linear(hs, ht)  # initialised from the seeded global RNG
            elif hs != ht:
                raise ValueError(f"distill.hid_projection is 'never' but the student hidden size ({hs}) differs "
                                 f"from the teacher's ({ht}); use 'auto'")
        if not self.terms.need_logits:  # no MLM/KD: the vocab head gets no gradient; keep it out of DDP
            base = {id(p) for p in student.base_model.parameters()}
            for p in student.parameters():
                if id(p) not in base:
                    p.requires_grad_(False)

        student.to(dev).train()
        self.net = DistillStudent(student, proj).to(dev)
        self.runner = None
        if self.terms.need_teacher:
            teacher_model.to(dev)
            self.runner = TeacherRunner(teacher_model, dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
        self.model = self.net
        if rt.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(self.net, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.fwd = self.model
        if spec.compile:
            self.fwd = torch.compile(self.model)
            if self.runner is not None:
                self.runner.compile()
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(list(self.net.named_parameters()), spec, dev)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(spec.warmup_steps, spec.steps))

        self.T = data.max_length
        self.M = num_mask_slots(self.T, spec.mask_prob)
        self.n_train, self.eval_idx = eval_indices(len(data))
        self.order = DataOrder(self.n_train, spec.seed)
        self.micro = spec.batch_size * rt.world
        self.G = self.micro * spec.grad_accum
        self.stop_at = spec.steps if max_steps is None else min(spec.steps, max_steps)
        self.hash = state_hash({
            "method": spec.method_dict(), "global_batch": self.G,
            "student": {k: v for k, v in sspec.to_dict().items() if k != "name"},
            "teacher": teacher_identity(teacher_dir),
            "tokens": {k: meta.get(k) for k in ("n_windows", "max_length", "vocab_sha256", "n_tokens")},
        })
        self.flops_per_token = step_flops_per_token(
            cfg, tcfg, self.T, student_head_fraction=self.M / self.T if self.terms.need_logits else 0.0,
            teacher_head_fraction=self.M / self.T if self.terms.on["kd"] else 0.0, teacher=self.terms.need_teacher)

        # progress
        self.step = 0
        self.tokens_seen = 0
        self.train_seconds = 0.0
        self.wall_seconds = 0.0
        self.log: list[dict] = []
        self.evals: list[dict] = []
        self.resumed_from: int | None = None

    # ---- state ---------------------------------------------------------------------------------

    def _payload(self) -> dict[str, Any]:
        return {
            "hash": self.hash, "step": self.step, "tokens_seen": self.tokens_seen,
            "data_position": list(self.order.position(self.step * self.G)),
            "train_seconds": self.train_seconds, "wall_seconds": self.wall_seconds + self._elapsed(),
            "model": to_cpu(self.student.state_dict()),
            "proj": to_cpu(self.net.proj.state_dict()) if self.net.proj is not None else {},
            "optimizer": to_cpu(self.optimizer.state_dict()), "scheduler": self.scheduler.state_dict(),
            "log": self.log, "evals": self.evals, "world_size": self.rt.world,
        }

    def save(self) -> None:
        self.check_finite()
        rngs = self.rt.gather_objects(rng_state())
        if self.rt.is_main:
            save_state(self.state_dir, {**self._payload(), "rng": rngs})
        self.rt.barrier()

    def maybe_resume(self) -> None:
        rt = self.rt
        state = None
        if self.resume:
            state = load_state(self.state_dir)
            if state is not None and state.get("hash") != self.hash:
                _print(rt, f"distill: {self.state_dir / 'latest.pt'} was made with different settings "
                           f"(state hash {state.get('hash')} != {self.hash}); ignoring it and starting fresh")
                state = None
        if state is None:
            return
        self.student.load_state_dict(state["model"])
        if self.net.proj is not None:
            self.net.proj.load_state_dict(state["proj"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        rngs = state["rng"]
        set_rng_state(rngs[rt.rank] if len(rngs) == rt.world else rngs[0])
        self.step, self.tokens_seen = int(state["step"]), int(state["tokens_seen"])
        self.train_seconds, self.wall_seconds = float(state["train_seconds"]), float(state["wall_seconds"])
        self.log, self.evals = list(state["log"]), list(state["evals"])
        self.resumed_from = self.step
        _print(rt, f"distill: resumed from {self.state_dir / 'latest.pt'} at step {self.step}")

    # ---- checks --------------------------------------------------------------------------------

    def check_finite(self) -> None:
        bad = self.rt.all_reduce_(self.bad_step.clone(), op=dist.ReduceOp.MIN if self.rt.distributed else None)
        first = int(bad.item())
        if first < _BIG:
            last = load_state(self.state_dir) if self.rt.is_main else None
            kept = (f"the last good checkpoint (step {last['step']}) is kept in {self.state_dir / 'latest.pt'}"
                    if last is not None else "no checkpoint had been written yet")
            raise NonFiniteLossError(
                f"distill: non-finite loss or gradient at step {first + 1} (precision {self.precision}, "
                f"lr {self.spec.lr}); the run is stopped and {kept}. Lower distill.lr, raise "
                f"distill.warmup_steps or set distill.grad_clip / precision fp32 and rerun")

    def _elapsed(self) -> float:
        return time.perf_counter() - self.t0

    # ---- evaluation ----------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float] | None:
        rt, spec = self.rt, self.spec
        if len(self.eval_idx) == 0:
            return None
        self.net.eval()
        keys = ["mlm"] + [k for k in TERMS if k != "mlm" and self.terms.on[k]]
        sums = torch.zeros(len(keys), dtype=torch.float64, device=rt.device)
        dens = torch.zeros(len(keys), dtype=torch.float64, device=rt.device)
        b = spec.batch_size
        for j, lo in enumerate(range(0, len(self.eval_idx), self.micro)):
            idx = self.eval_idx[lo: lo + self.micro]
            ids, am = self.data.batch(idx)
            mb = mask_tokens(ids, am, num_slots=self.M, mask_id=self.data.mask_id, special_ids=self.data.special_ids,
                             vocab_size=self.data.vocab_size, mask_prob=spec.mask_prob,
                             generator=step_generator(spec.seed, j, stream=1))
            sl = slice(rt.rank * b, (rt.rank + 1) * b)
            if sl.start >= len(idx):
                continue
            x, a, pos, lab = (t[sl].to(rt.device) for t in (mb.input_ids, am, mb.positions, mb.labels))
            s = loss_sums(self.net, self.runner, self.terms, x, a, pos, lab, self.precision, rt.device, eval_mlm=True)
            d = global_dens(mb[sl], a, self.terms.heads)
            for n, k in enumerate(keys):
                sums[n] += s[k].double()
                dens[n] += d[k]
        rt.all_reduce_(sums)
        rt.all_reduce_(dens)
        self.net.train()
        vals = (sums / dens.clamp_min(1)).tolist()
        res = dict(zip(keys, vals))
        res["total"] = sum(self.terms.weights[k] * res[k] for k in keys if self.terms.on[k])
        return res

    # ---- the loop ------------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        rt, spec, dev = self.rt, self.spec, self.rt.device
        self.t0 = time.perf_counter()
        self.bad_step = torch.full((), _BIG, dtype=torch.int64, device=dev)
        self.maybe_resume()
        writer = self._tb_writer()
        stop_flag = {"sigterm": False}
        old_handler = None
        with contextlib.suppress(ValueError):  # not the main thread (e.g. in-process tests)
            old_handler = signal.signal(signal.SIGTERM, lambda *_: stop_flag.__setitem__("sigterm", True))
        bar = self._bar()
        keys = [k for k in TERMS if self.terms.on[k]]
        running = torch.zeros(len(keys) + 1, dtype=torch.float32, device=dev)
        n_running, tokens_at_log, time_at_log, paused = 0, self.tokens_seen, time.perf_counter(), 0.0
        budget = spec.max_minutes * 60 if spec.max_minutes else None
        stopped = None
        last_eval_step = -1
        b, accum = spec.batch_size, spec.grad_accum
        lo_rank = rt.rank * b
        pin = dev.type == "cuda"
        gnorm = torch.zeros((), device=dev)
        try:
            while self.step < self.stop_at:
                sigterm, over = rt.any_flags([stop_flag["sigterm"],
                                              budget is not None and self._elapsed() > budget])
                if sigterm:
                    stopped = "sigterm"
                    break
                if over:
                    stopped = "max_minutes"
                    break
                step = self.step
                idx = self.order.take(step * self.G, self.G)
                ids, am = self.data.batch(idx)
                mb = mask_tokens(ids, am, num_slots=self.M, mask_id=self.data.mask_id,
                                 special_ids=self.data.special_ids, vocab_size=self.data.vocab_size,
                                 mask_prob=spec.mask_prob, generator=step_generator(spec.seed, step))
                dens = global_dens(mb, am, self.terms.heads)
                step_loss = torch.zeros((), device=dev)
                for a in range(accum):
                    sl = slice(a * self.micro + lo_rank, a * self.micro + lo_rank + b)
                    x, m_, pos, lab = (t[sl].pin_memory() if pin else t[sl]
                                       for t in (mb.input_ids, am, mb.positions, mb.labels))
                    x, m_, pos, lab = (t.to(dev, non_blocking=True) for t in (x, m_, pos, lab))
                    sync = contextlib.nullcontext() if (a == accum - 1 or not rt.distributed) else self.model.no_sync()
                    with sync:
                        parts, loss = forward_backward(self.fwd, self.runner, self.terms, keys, x, m_, pos, lab, dens,
                                                       self.precision, dev, scale=rt.world,
                                                       faults=self.faults if a == 0 else None, step=step)
                    running[:-1] += parts
                    running[-1] += loss
                    step_loss = step_loss + loss
                gnorm = torch.nn.utils.clip_grad_norm_(self.params, spec.grad_clip or float("inf"), foreach=True)
                ok = torch.isfinite(step_loss) & torch.isfinite(gnorm)
                self.bad_step = torch.minimum(self.bad_step, torch.where(ok, _BIG, step))
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                n_running += 1
                self.tokens_seen += self.G * self.T
                if bar is not None:
                    bar.update(1)

                last = self.step == self.stop_at
                if self.step % spec.log_every == 0 or last:
                    vals = (rt.all_reduce_(running.clone()) / max(1, n_running)).tolist()  # host sync
                    self.check_finite()
                    now = time.perf_counter()
                    interval = max(1e-9, now - time_at_log - paused)
                    self.train_seconds += interval
                    tps = (self.tokens_seen - tokens_at_log) / interval
                    rec = {"step": self.step, "tokens": self.tokens_seen, "lr": self.scheduler.get_last_lr()[0],
                           "loss": vals[-1], **{k: v for k, v in zip(keys, vals)},
                           "grad_norm": float(gnorm), "tokens_per_second": tps,
                           "tflops": tps * self.flops_per_token / 1e12, "elapsed": self.wall_seconds + self._elapsed()}
                    self.log.append(rec)
                    self._emit(writer, bar, rec)
                    running.zero_()
                    n_running, tokens_at_log, time_at_log, paused = 0, self.tokens_seen, now, 0.0
                t_pause = time.perf_counter()
                if spec.eval_every and self.step % spec.eval_every == 0 and not last:
                    self._eval(writer)
                    last_eval_step = self.step
                if spec.checkpoint_every and self.step % spec.checkpoint_every == 0 and not last:
                    self.save()
                paused += time.perf_counter() - t_pause
            # ---- end of loop
            if stopped == "sigterm":
                self.save()
                _print(rt, f"distill: SIGTERM: checkpoint written at step {self.step} to {self.state_dir}; "
                           f"exiting with code {EXIT_PREEMPTED} (rerun with --resume to continue)")
                if bar is not None:
                    bar.close()
                if writer is not None:
                    writer.close()
                raise SystemExit(EXIT_PREEMPTED)
            self.check_finite()
            if self.step != last_eval_step:
                self._eval(writer)
            complete = self.step >= self.spec.steps
            if not complete and stopped is None:
                stopped = "max_steps"
            if not complete:
                self.save()  # keep the state so `--resume` can continue past the budget
        finally:
            if old_handler is not None:
                with contextlib.suppress(ValueError):
                    signal.signal(signal.SIGTERM, old_handler)
            if bar is not None:
                bar.close()
        if writer is not None:
            writer.close()
        return self._finish(stopped, complete)

    # ---- outputs -------------------------------------------------------------------------------

    def _eval(self, writer) -> None:
        res = self.evaluate()
        if res is None:
            return
        rec = {"step": self.step, "tokens": self.tokens_seen, **res}
        self.evals.append(rec)
        if writer is not None:
            for k, v in res.items():
                writer.add_scalar(f"eval/{k}", v, self.step)
        _print(self.rt, f"eval step {self.step}: " + " ".join(f"{k} {v:.4f}" for k, v in res.items()))

    def _tb_writer(self):
        if not (self.spec.tensorboard and self.rt.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            _print(self.rt, "distill: tensorboard is not installed; no TensorBoard events are written")
            return None
        tb = self.state_dir / "tb"
        if self.resumed_from is None:
            shutil.rmtree(tb, ignore_errors=True)
        tb.mkdir(parents=True, exist_ok=True)
        return SummaryWriter(log_dir=str(tb), purge_step=self.resumed_from)

    def _bar(self):
        if not self.rt.is_main:
            return None
        from tqdm import tqdm

        tty = sys.stderr.isatty()
        return tqdm(total=self.stop_at, initial=self.step, unit="step", desc=f"distill {self.summary['name']}",
                    file=sys.stderr, mininterval=0.5 if tty else 30.0, dynamic_ncols=True)

    def _emit(self, writer, bar, rec: dict) -> None:
        terms = " ".join(f"{k} {rec[k]:.4f}" for k in TERMS if k in rec)
        if bar is not None:
            bar.set_postfix_str(f"loss {rec['loss']:.4f} | {rec['tokens_per_second']:,.0f} tok/s", refresh=False)
        if writer is not None:
            for k in ("loss", *TERMS, "lr", "grad_norm", "tokens_per_second"):
                if k in rec:
                    writer.add_scalar(f"train/{k}", rec[k], rec["step"])
        if not sys.stderr.isatty():
            _print(self.rt, f"step {rec['step']}/{self.stop_at} | loss {rec['loss']:.4f} | {terms} | "
                            f"lr {rec['lr']:.2e} | {rec['tokens_per_second']:,.0f} tok/s")

    def _steady_tps(self) -> float | None:
        recs = [r for r in self.log if self.resumed_from is None or r["step"] > self.resumed_from][1:]
        if not recs:
            return None
        vals = sorted(r["tokens_per_second"] for r in recs)
        return vals[len(vals) // 2]

    def _finish(self, stopped: str | None, complete: bool) -> dict[str, Any]:
        rt = self.rt
        wall = self.wall_seconds + self._elapsed()
        last = self.log[-1] if self.log else {}
        final = {k: last[k] for k in ("loss", *TERMS) if k in last}
        if "loss" in final:
            final["total"] = final.pop("loss")
        self.summary.update(
            steps=self.step, steps_planned=self.spec.steps, complete=complete, stopped_early=stopped,
            resumed_from=self.resumed_from, tokens_seen=self.tokens_seen, global_batch=self.G,
            seq_len=self.T, mask_slots=self.M, wall_seconds=wall, train_seconds=self.train_seconds,
            tokens_per_second=self.tokens_seen / max(1e-9, self.train_seconds),
            # median over the log intervals after the first of this invocation (compilation, warm-up)
            steady_tokens_per_second=self._steady_tps(),
            flops_per_token=self.flops_per_token,
            achieved_tflops=self.tokens_seen / max(1e-9, self.train_seconds) * self.flops_per_token / 1e12,
            final_losses=final, eval_losses=self.evals[-1] if self.evals else None,
            precision=self.precision, device=str(rt.device), world_size=rt.world,
            n_train_windows=self.n_train, n_eval_windows=int(len(self.eval_idx)),
            state_dir=str(self.state_dir), hid_projection=self.net.proj is not None,
        )
        if rt.is_main:
            tb = self.state_dir / "tb" if self.spec.tensorboard else None
            write_final(self.out, self.student, self.teacher_dir, self.summary,
                        {"train": self.log, "eval": self.evals}, tb)
            if complete:
                shutil.rmtree(self.state_dir, ignore_errors=True)
            _print(rt, f"distill: {self.summary['name']}: {self.step} steps, {self.tokens_seen:,} tokens, "
                       f"{self.summary['tokens_per_second']:,.0f} tok/s ({self.precision}); wrote {self.out}")
        rt.barrier()
        return self.summary if rt.is_main else {}


_BIG = 2**62
