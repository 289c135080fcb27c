"""How a distillation run stops before its end: non-finite losses, SIGTERM, a budget, and test
fault injection."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from ..errors import StageError
from .checkpoint import LATEST, load_state

if TYPE_CHECKING:
    from .setup import Setup

EXIT_PREEMPTED = 143  # 128 + SIGTERM: "terminated, resumable" for SLURM / Snakemake retries
EXIT_INCOMPLETE = 75  # EX_TEMPFAIL: a budget stopped the run; the state is kept, no student written
FAULT_ENV = "MINIALBERT_DISTILL_FAULT"  # test hook, see Faults
NO_BAD_STEP = 2**62  # "no non-finite step yet", so the first bad step is a running minimum


class NonFiniteLossError(StageError):
    """The loss became NaN/inf: the run stops; the last good checkpoint is kept."""


class RunIncomplete(SystemExit):
    """`max_minutes` or `--max-steps` stopped the run before `steps`: exit status EXIT_INCOMPLETE.

    The state is saved for `--resume` and no results folder is written, so a student trained
    for fewer steps than configured never reaches a table (the result does not depend on how
    fast the machine was).
    """

    def __init__(self, step: int, steps: int, reason: str, state_dir):
        super().__init__(EXIT_INCOMPLETE)
        self.step, self.steps, self.reason = step, steps, reason
        self.message = (f"distill: incomplete: stopped at step {step} of {steps} ({reason}); the state is "
                        f"kept in {state_dir} and no student was written; rerun with --resume to continue")


class Faults:
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

    @classmethod
    def from_env(cls) -> "Faults":
        return cls(os.environ.get(FAULT_ENV))

    def mid_step(self, step: int) -> None:
        if self.sleep:
            time.sleep(self.sleep)
        if step == self.sigkill:
            os.kill(os.getpid(), signal.SIGKILL)
        if step == self.sigterm:
            os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def sigterm_flag():
    """A dict whose "sigterm" turns True on SIGTERM, so the loop stops at the next step boundary."""
    flag = {"sigterm": False}
    old = None
    with contextlib.suppress(ValueError):  # not the main thread (e.g. in-process tests)
        old = signal.signal(signal.SIGTERM, lambda *_: flag.__setitem__("sigterm", True))
    try:
        yield flag
    finally:
        if old is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, old)


class FiniteGuard:
    """The first optimiser step with a non-finite loss or gradient norm, kept on the device so the
    check costs no host sync per step; `check` (a collective) raises once one was seen."""

    def __init__(self, device):
        self.first = torch.full((), NO_BAD_STEP, dtype=torch.int64, device=device)

    def update(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        ok = torch.isfinite(loss) & torch.isfinite(grad_norm)
        self.first = torch.minimum(self.first, torch.where(ok, NO_BAD_STEP, step))

    def check(self, s: "Setup") -> None:
        rt = s.rt
        first = int(rt.all_reduce_(self.first.clone(), op=dist.ReduceOp.MIN if rt.distributed else None).item())
        if first == NO_BAD_STEP:
            return
        last = load_state(s.state_dir) if rt.is_main else None
        kept = (f"the last good checkpoint (step {last['step']}) is kept in {s.state_dir / LATEST}"
                if last is not None else "no checkpoint had been written yet")
        raise NonFiniteLossError(
            f"distill: non-finite loss or gradient at step {first + 1} (precision {s.precision}, "
            f"lr {s.spec.lr}); the run is stopped and {kept}. Lower distill.lr, raise "
            f"distill.warmup_steps or set distill.grad_clip / precision fp32 and rerun")
