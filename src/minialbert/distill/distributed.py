"""Process group and device for the distillation run (precision: `minialbert.runtime`).

Launched by `torchrun` (WORLD_SIZE / RANK / LOCAL_RANK in the environment) the run initialises a
process group and wraps the student in DDP, also with a single process (so the DDP path can be
checked on one GPU): NCCL when CUDA is available, gloo otherwise (so the multi-process path is
testable on CPU). Without torchrun one process runs with no process group. A second, gloo, group
carries the control plane (stop flags, RNG states): a few bytes on the CPU, so checking "did any
rank get SIGTERM?" each step never synchronises the GPU stream.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class Runtime:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    ctrl: Any = None  # gloo group for CPU-side collectives (None: default group / single process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    def say(self, msg: str) -> None:
        """A message on stderr from rank 0 only (through tqdm, so a progress bar stays intact)."""
        if not self.is_main:
            return
        try:
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)
        except ImportError:
            print(msg, file=sys.stderr)

    # ---- collectives (no-ops in a single process) ----------------------------------------------

    def all_reduce_(self, tensor: torch.Tensor, op=None) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
        return tensor

    def any_flags(self, flags: list[bool]) -> list[bool]:
        """Element-wise OR of boolean flags over ranks, on the CPU control group."""
        if not self.distributed:
            return list(flags)
        t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.ctrl)
        return [bool(x) for x in t.tolist()]

    def gather_objects(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj, group=self.ctrl)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.ctrl)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self.ctrl)


def setup() -> Runtime:
    """A Runtime for this process; initialises torch.distributed under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    if world <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:  # not started by torchrun
        return Runtime(device=device)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(minutes=30)}
        if cuda:
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
    ctrl = dist.new_group(backend="gloo") if backend != "gloo" else None
    return Runtime(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank, device=device,
                   backend=backend, ctrl=ctrl)


def teardown(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
