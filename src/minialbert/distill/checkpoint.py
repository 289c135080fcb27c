"""Resumable training state: `<out>.state/latest.pt`, written atomically.

The state lives *beside* the output folder (`results/distill/foo.state/` for
`results/distill/foo/`) so a workflow manager never mistakes a half-trained run for an output. It
holds everything needed to continue exactly: student and projection weights, optimiser and
scheduler state, every rank's RNG states (as tensors), the step (which fixes the data position:
epoch and offset in that epoch's permutation), tokens seen, elapsed time, the log so far, and the
hash of the method settings it was made with. It is written with `torch.save` to a temporary
file that is renamed over `latest.pt`, so a kill at any instant leaves the previous state intact,
and read back with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..atomic import staged_file

if TYPE_CHECKING:
    from .setup import Setup

FORMAT = 1
LATEST = "latest.pt"


def state_dir_for(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".state")


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_state(state_dir: str | os.PathLike, payload: dict[str, Any]) -> Path:
    path = Path(state_dir) / LATEST
    payload = {"format": FORMAT, **payload}
    with staged_file(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
    return path


def load_state(state_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(state_dir) / LATEST
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a corrupt file is a user-facing condition
        raise ValueError(f"cannot read the training state {path} ({err}); delete it to start fresh") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a distill state of format {FORMAT}; delete it to start fresh")
    return state


def to_cpu(obj: Any) -> Any:
    """Recursively move tensors to the CPU (optimizer states of a CUDA run)."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_cpu(v) for v in obj)
    return obj


# ---- the run's state: progress + weights + optimiser + RNGs ------------------------------------

@dataclass
class Progress:
    """How far the run is; saved in the state and restored on resume."""

    step: int = 0  # optimiser steps done; fixes the data position and the masks
    tokens_seen: int = 0
    train_seconds: float = 0.0  # in training steps, over all invocations (no eval, no checkpoints)
    wall_seconds: float = 0.0  # of earlier invocations
    log: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    resumed_from: int | None = None
    started: float = field(default_factory=time.perf_counter)  # this invocation

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def wall(self) -> float:
        return self.wall_seconds + self.elapsed()


def save(s: "Setup", p: Progress) -> None:
    """Collective: every rank sends its RNG states; rank 0 writes."""
    rngs = s.rt.gather_objects(rng_state())
    if s.rt.is_main:
        save_state(s.state_dir, {
            "hash": s.state_hash, "step": p.step, "tokens_seen": p.tokens_seen,
            "data_position": list(s.order.position(p.step * s.global_batch)),
            "train_seconds": p.train_seconds, "wall_seconds": p.wall(),
            "model": to_cpu(s.models.student.state_dict()),
            "proj": to_cpu(s.net.proj.state_dict()) if s.net.proj is not None else {},
            "optimizer": to_cpu(s.optimizer.state_dict()), "scheduler": s.scheduler.state_dict(),
            "log": p.log, "evals": p.evals, "world_size": s.rt.world, "rng": rngs,
        })
    s.rt.barrier()


def resume(s: "Setup", p: Progress) -> None:
    """Continue from the saved state when there is one made with the same settings."""
    state = load_state(s.state_dir)
    if state is not None and state.get("hash") != s.state_hash:
        s.rt.say(f"distill: {s.state_dir / LATEST} was made with different settings "
                 f"(state hash {state.get('hash')} != {s.state_hash}); ignoring it and starting fresh")
        state = None
    if state is None:
        return
    s.models.student.load_state_dict(state["model"])
    if s.net.proj is not None:
        s.net.proj.load_state_dict(state["proj"])
    s.optimizer.load_state_dict(state["optimizer"])
    s.scheduler.load_state_dict(state["scheduler"])
    rngs = state["rng"]
    set_rng_state(rngs[s.rt.rank] if len(rngs) == s.rt.world else rngs[0])
    p.step, p.tokens_seen = int(state["step"]), int(state["tokens_seen"])
    p.train_seconds, p.wall_seconds = float(state["train_seconds"]), float(state["wall_seconds"])
    p.log, p.evals = list(state["log"]), list(state["evals"])
    p.resumed_from = p.step
    s.rt.say(f"distill: resumed from {s.state_dir / LATEST} at step {p.step}")
