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
from pathlib import Path
from typing import Any

import torch

from ..atomic import staged_file

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
