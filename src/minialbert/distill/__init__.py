"""`minialbert distill`: teacher -> MiniALBERT student distillation (docs/method.md, "Distillation objective").

    minialbert distill --teacher DIR --tokens DIR --student-spec JSON --spec JSON --out DIR
                       [--resume] [--max-steps N]

Settings: `--spec` is the config's `distill` section, `--student-spec` a `students` entry merged
with the `student` section; both are validated against `src/minialbert/config.schema.yaml`, which
holds every default.

Modules: `spec` (settings, layer map, steps from epochs, state hash), `setup` (models, terms,
optimiser, data order: one `Setup`), `head_check` (the teacher's MLM head against chance before
KD), `loop` (training, evaluation, logging), `step` (one micro-step: forwards, losses,
backward), `batches` (data order, held-out windows, masked batches), `masking` (static-shape
dynamic MLM masking), `losses` (MLM, KD, ATT, HID), `teacher` (teacher loading and the sparse
teacher forward), `outputs` (results folder, summary, TensorBoard), `checkpoint` (progress and the
atomic resumable state in `<out>.state/`), `faults` (SIGTERM, budgets, non-finite losses, test
faults), `distributed` (torchrun / DDP, device), `flops` (FLOPs per token, MFU), `engine` (`run`).
Heavy imports happen only when the command runs, so `minialbert --help` stays fast.

Training state: `<out>.state/latest.pt` beside the output folder (never inside it, so Snakemake
never sees a half-trained output), written atomically every `checkpoint_every` steps, on SIGTERM
and when a budget stops the run; removed once all `steps` are done. The final folder is built in a
temporary sibling and renamed into place. `--resume` continues from the state when it exists and
was made with the same method settings (hash of the spec without runtime keys, the global batch,
the student spec, the teacher and the tokens); a state made with other settings is ignored with a
message and the run starts fresh (so the Snakemake rule can always pass `--resume`). Without
`--resume` an existing state is ignored and overwritten.

Exit codes: 0 done (every configured step: the results folder is written); 75 incomplete
(`max_minutes` or `--max-steps` stopped the run: the state is kept for `--resume`, no results
folder is written, so a student's numbers never depend on how fast the machine was); 1 user
error, a teacher head no better than chance under KD, or a non-finite loss (the last good
checkpoint is kept); 143 SIGTERM (a checkpoint was written; rerun with `--resume`).
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "distill",
        help="distil a teacher into a MiniALBERT student (or save an initialised one)",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--teacher", required=True, help="teacher folder (HF model + manifest.json)")
    p.add_argument("--tokens", default=None,
                   help="tokenised corpus folder (input_ids.bin, lengths.bin, meta.json); "
                        "required unless the student spec has distill: false")
    p.add_argument("--student-spec", required=True,
                   help='JSON: {"name", "init": teacher|random|embeddings, "distill": bool, "preset", "overrides": {...}}')
    p.add_argument("--embeddings", default=None,
                   help="model folder whose embedding layer an `init: embeddings` student starts from")
    p.add_argument("--spec", default="{}", help="JSON: the config's distill section (unknown keys are errors)")
    p.add_argument("--out", required=True, help="results folder of the student (appears atomically)")
    p.add_argument("--resume", action="store_true",
                   help="continue from <out>.state/latest.pt when it exists and matches the settings")
    p.add_argument("--max-steps", type=int, default=None,
                   help="test hook: stop after this many optimiser steps with the state kept and exit "
                        "status 75, as max_minutes does (the schedule still follows distill.steps)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> None:
    from .engine import run

    run(teacher=args.teacher, tokens=args.tokens, student_spec=args.student_spec, spec=args.spec, out=args.out,
        resume=args.resume, max_steps=args.max_steps, embeddings=args.embeddings)
