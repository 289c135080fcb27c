"""`run`: one student distilled (or only initialised), from validated settings to its results folder.

The pieces: `spec` (settings), `setup` (models and the training set-up), `head_check` (the
teacher's MLM head before KD), `loop` (training and evaluation), `outputs` (the results folder),
`checkpoint` (the resumable state), `faults` (SIGTERM, budgets, non-finite losses), `distributed`
(torchrun / DDP).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .spec import DistillSpec, StudentSpec, parse_spec, parse_student_spec


def run(teacher: str | os.PathLike, tokens: str | os.PathLike | None, student_spec, spec, out,
        resume: bool = False, max_steps: int | None = None, embeddings: str | os.PathLike | None = None
        ) -> dict[str, Any]:
    """Distil (or just initialise) one student. Returns the summary (rank 0; {} elsewhere).

    Raises `faults.RunIncomplete` (a SystemExit, status 75) when `max_minutes` or `max_steps` stop
    the run before its `steps`: the state is kept for `resume`, no results folder is written.
    """
    import torch

    from . import distributed
    from .head_check import check_teacher_head
    from .loop import train
    from .outputs import initial_summary, save_initialised
    from .setup import Setup, build_models, check_kd, open_tokens

    spec = spec if isinstance(spec, DistillSpec) else parse_spec(spec)
    sspec = student_spec if isinstance(student_spec, StudentSpec) else parse_student_spec(student_spec)
    teacher, out = Path(teacher), Path(out)
    tokens = Path(tokens) if tokens is not None else None
    if max_steps is not None and max_steps < 0:
        raise ValueError(f"--max-steps must be >= 0, got {max_steps}")
    check_kd(spec, teacher)
    if sspec.distill and tokens is None:
        raise ValueError("--tokens is required when the student is distilled (student.distill: true)")
    if (sspec.init == "embeddings") != (embeddings is not None):
        raise ValueError(f"--embeddings (a model folder) is given exactly when the student has init: embeddings "
                         f"(init is {sspec.init!r})")
    rt = distributed.setup()
    try:
        if spec.threads:
            torch.set_num_threads(spec.threads)
        data = open_tokens(tokens, teacher) if tokens is not None else None
        if data is not None:
            spec = spec.for_corpus(len(data), rt.world)
        models = build_models(teacher, sspec, spec, data.meta if data is not None else None,
                              Path(embeddings) if embeddings is not None else None)
        summary = initial_summary(sspec.name or out.name, sspec, spec, models, teacher, tokens)
        if not sspec.distill:
            return save_initialised(rt, models, summary, out, teacher, sspec.init)
        summary.update(check_teacher_head(models.teacher, models.teacher_has_head, data, spec, teacher, rt.device))
        setup = Setup.build(rt, models, data, sspec, spec, out, teacher, max_steps, summary)
        return train(setup, resume)
    finally:
        distributed.teardown(rt)
