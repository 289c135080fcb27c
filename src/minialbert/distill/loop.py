"""The distillation loop: short and explicit, in the spirit of nanoGPT.

One optimiser step:
  1. the step's global batch (batch_size x world x grad_accum windows), masked as a function of
     (seed, step) (`batches`); each rank keeps its slice of every micro-batch;
  2. per micro-batch: teacher forward (eval and inference mode, bf16 weights when precision is
     bf16, SDPA; attention maps recomputed only for mapped layers, vocab head only at the masked
     slots), student forward under autocast (attention probabilities only for mapped recursions,
     vocab head only at the masked slots), loss over global denominators, backward (`step`; DDP
     all-reduces gradients only on the last micro-batch);
  3. gradient clipping, AdamW, linear warm-up + linear decay.
Per-term losses accumulate on the device; the host reads them (one sync) only every `log_every`
steps, when it also checks for non-finite values. Every `checkpoint_every` steps the state is
written (`checkpoint`); SIGTERM checkpoints at the next step boundary and exits with
EXIT_PREEMPTED; `max_minutes` / `--max-steps` stop it the same way with EXIT_INCOMPLETE and no
results folder; a non-finite loss stops the run with `NonFiniteLossError` and never overwrites the
last good checkpoint (`faults`).
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import torch

from . import checkpoint
from .batches import masked_batch
from .checkpoint import Progress
from .faults import EXIT_PREEMPTED, FiniteGuard, RunIncomplete, sigterm_flag
from .masking import step_generator
from .outputs import finish, tb_writer
from .setup import Setup
from .step import TERMS, forward_backward, global_dens, loss_sums


class Meter:
    """Per-term losses summed on the device since the last log record, and the training clock
    (time spent evaluating or checkpointing is paused out of it)."""

    def __init__(self, keys: list[str], device, tokens_seen: int):
        self.keys = keys
        self.sums = torch.zeros(len(keys) + 1, dtype=torch.float32, device=device)  # terms..., loss
        self.steps = 0
        self.tokens_at, self.time_at, self.paused = tokens_seen, time.perf_counter(), 0.0

    def add(self, parts: torch.Tensor, loss: torch.Tensor) -> None:
        self.sums[:-1] += parts
        self.sums[-1] += loss

    @contextlib.contextmanager
    def pause(self):
        t0 = time.perf_counter()
        yield
        self.paused += time.perf_counter() - t0

    def means(self, rt) -> list[float]:
        """Mean over ranks and steps since the last record: the host sync of the loop."""
        return (rt.all_reduce_(self.sums.clone()) / max(1, self.steps)).tolist()

    def record(self, p: Progress) -> tuple[float, float]:
        """(training seconds, tokens/s) of the interval; starts the next one."""
        now = time.perf_counter()
        interval = max(1e-9, now - self.time_at - self.paused)
        tps = (p.tokens_seen - self.tokens_at) / interval
        self.sums.zero_()
        self.steps, self.tokens_at, self.time_at, self.paused = 0, p.tokens_seen, now, 0.0
        return interval, tps


def to_device(tensors, rows: slice, device) -> tuple[torch.Tensor, ...]:
    """This rank's rows of CPU tensors, copied asynchronously (through pinned memory on CUDA)."""
    pin = device.type == "cuda"
    return tuple((t[rows].pin_memory() if pin else t[rows]).to(device, non_blocking=True) for t in tensors)


def optimizer_step(s: Setup, step: int, meter: Meter, guard: FiniteGuard) -> torch.Tensor:
    """Forward/backward over the step's micro-batches, clip, AdamW; returns the gradient norm."""
    rt, spec, dev = s.rt, s.spec, s.rt.device
    idx = s.order.take(step * s.global_batch, s.global_batch)
    mb, am = masked_batch(s.data, idx, num_slots=s.mask_slots, mask_prob=spec.mask_prob,
                          generator=step_generator(spec.seed, step))
    dens = global_dens(mb, am, s.terms)
    step_loss = torch.zeros((), device=dev)
    for a in range(spec.grad_accum):
        lo = a * s.micro_batch + rt.rank * spec.batch_size
        x, m_, pos, lab = to_device((mb.input_ids, am, mb.positions, mb.labels), slice(lo, lo + spec.batch_size), dev)
        last_micro = a == spec.grad_accum - 1
        with contextlib.nullcontext() if (last_micro or not rt.distributed) else s.model.no_sync():
            parts, loss = forward_backward(s.fwd, s.runner, s.terms, s.terms.keys, x, m_, pos, lab, dens,
                                           s.precision, dev, scale=rt.world,
                                           faults=s.faults if a == 0 else None, step=step)
        meter.add(parts, loss)
        step_loss = step_loss + loss
    grad_norm = torch.nn.utils.clip_grad_norm_(s.params, spec.grad_clip or float("inf"), foreach=True)
    guard.update(step, step_loss, grad_norm)
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    meter.steps += 1
    return grad_norm


@torch.no_grad()
def evaluate(s: Setup) -> dict[str, float] | None:
    """Mean of every enabled term (and MLM always) over the held-out windows, with fixed masks."""
    rt, spec, dev = s.rt, s.spec, s.rt.device
    if len(s.eval_idx) == 0:
        return None
    s.net.eval()
    keys = ["mlm"] + [k for k in s.terms.keys if k != "mlm"]
    sums = torch.zeros(len(keys), dtype=torch.float64, device=dev)
    dens = torch.zeros(len(keys), dtype=torch.float64, device=dev)
    mine = slice(rt.rank * spec.batch_size, (rt.rank + 1) * spec.batch_size)
    for j, lo in enumerate(range(0, len(s.eval_idx), s.micro_batch)):
        idx = s.eval_idx[lo: lo + s.micro_batch]
        mb, am = masked_batch(s.data, idx, num_slots=s.mask_slots, mask_prob=spec.mask_prob,
                              generator=step_generator(spec.seed, j, stream=1))
        if mine.start >= len(idx):
            continue
        x, a, pos, lab = (t[mine].to(dev) for t in (mb.input_ids, am, mb.positions, mb.labels))
        got = loss_sums(s.net, s.runner, s.terms, x, a, pos, lab, s.precision, dev, eval_mlm=True)
        den = global_dens(mb[mine], a, s.terms)
        for n, k in enumerate(keys):
            sums[n] += got[k].double()
            dens[n] += den[k]
    rt.all_reduce_(sums)
    rt.all_reduce_(dens)
    s.net.train()
    res = dict(zip(keys, (sums / dens.clamp_min(1)).tolist()))
    res["total"] = sum(s.terms.weights[k] * res[k] for k in s.terms.keys)
    return res


def run_eval(s: Setup, p: Progress, writer) -> None:
    res = evaluate(s)
    if res is None:
        return
    p.evals.append({"step": p.step, "tokens": p.tokens_seen, **res})
    if writer is not None:
        for k, v in res.items():
            writer.add_scalar(f"eval/{k}", v, p.step)
    s.rt.say(f"eval step {p.step}: " + " ".join(f"{k} {v:.4f}" for k, v in res.items()))


def progress_bar(s: Setup, p: Progress):
    if not s.rt.is_main:
        return None
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=s.stop_at, initial=p.step, unit="step", desc=f"distill {s.summary['name']}",
                file=sys.stderr, mininterval=0.5 if tty else 30.0, dynamic_ncols=True)


def emit(s: Setup, rec: dict, writer, bar) -> None:
    """One log record to the progress bar, TensorBoard, and (without a terminal) a log line."""
    if bar is not None:
        bar.set_postfix_str(f"loss {rec['loss']:.4f} | {rec['tokens_per_second']:,.0f} tok/s", refresh=False)
    if writer is not None:
        for k in ("loss", *TERMS, "lr", "grad_norm", "tokens_per_second"):
            if k in rec:
                writer.add_scalar(f"train/{k}", rec[k], rec["step"])
    if not sys.stderr.isatty():
        terms = " ".join(f"{k} {rec[k]:.4f}" for k in TERMS if k in rec)
        s.rt.say(f"step {rec['step']}/{s.stop_at} | loss {rec['loss']:.4f} | {terms} | "
                 f"lr {rec['lr']:.2e} | {rec['tokens_per_second']:,.0f} tok/s")


def train(s: Setup, resume: bool) -> dict[str, Any]:
    """Train from step 0 (or the resumed step) to `stop_at`; write the results. Returns the summary."""
    rt, spec = s.rt, s.spec
    p = Progress()
    if resume:
        checkpoint.resume(s, p)
    guard = FiniteGuard(rt.device)

    def save() -> None:
        guard.check(s)  # never overwrite the last good state with a broken one
        checkpoint.save(s, p)

    meter = Meter(s.terms.keys, rt.device, p.tokens_seen)
    budget = spec.max_minutes * 60 if spec.max_minutes else None
    stopped, last_eval = None, -1
    grad_norm = torch.zeros(())
    writer, bar = tb_writer(s, p.resumed_from), progress_bar(s, p)
    try:
        with sigterm_flag() as flag:
            while p.step < s.stop_at:
                sigterm, over = rt.any_flags([flag["sigterm"], budget is not None and p.elapsed() > budget])
                if sigterm or over:
                    stopped = "sigterm" if sigterm else "max_minutes"
                    break
                grad_norm = optimizer_step(s, p.step, meter, guard)
                p.step += 1
                p.tokens_seen += s.global_batch * s.seq_len
                if bar is not None:
                    bar.update(1)
                end = p.step == spec.steps  # the final record and evaluation follow the schedule's end
                if p.step % spec.log_every == 0 or end:
                    vals = meter.means(rt)
                    guard.check(s)
                    interval, tps = meter.record(p)
                    p.train_seconds += interval
                    rec = {"step": p.step, "tokens": p.tokens_seen, "lr": s.scheduler.get_last_lr()[0],
                           "loss": vals[-1], **dict(zip(meter.keys, vals)), "grad_norm": float(grad_norm),
                           "tokens_per_second": tps, "tflops": tps * s.flops_per_token / 1e12,
                           "elapsed": p.wall()}
                    p.log.append(rec)
                    emit(s, rec, writer, bar)
                with meter.pause():
                    if spec.eval_every and p.step % spec.eval_every == 0 and not end:
                        run_eval(s, p, writer)
                        last_eval = p.step
                    if spec.checkpoint_every and p.step % spec.checkpoint_every == 0 and p.step != s.stop_at:
                        save()  # (the state at `stop_at` is written below, once)
            if stopped == "sigterm":
                save()
                rt.say(f"distill: SIGTERM: checkpoint written at step {p.step} to {s.state_dir}; "
                       f"exiting with code {EXIT_PREEMPTED} (rerun with --resume to continue)")
                raise SystemExit(EXIT_PREEMPTED)
            guard.check(s)
            if p.step < spec.steps:  # a budget stopped it: keep the state, write no student
                save()
                reason = (f"max_minutes {spec.max_minutes:g} reached" if stopped == "max_minutes"
                          else f"--max-steps {s.stop_at}")
                incomplete = RunIncomplete(p.step, spec.steps, reason, s.state_dir)
                rt.say(incomplete.message)
                raise incomplete
            if p.step != last_eval:
                run_eval(s, p, writer)
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    return finish(s, p)
