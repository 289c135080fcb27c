"""One command line for every pipeline stage: `minialbert <stage> ...` (or `python -m minialbert`).

Each stage module owns its arguments through `register(subparsers)`, which adds one or more
sub-commands and sets `func` on them; this file only collects them. Stage modules are imported
lazily so that `minialbert --help` stays fast and a broken optional stage cannot break the others.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from .errors import StageError

# module -> the sub-commands it registers (listed here so the help text can show them cheaply)
STAGES = {
    "minialbert.params_report": ["params"],
    "minialbert.data": ["download-teacher", "download-corpus", "tokenize"],
    "minialbert.tasks": ["prepare-task"],
    "minialbert.distill": ["distill"],
    "minialbert.finetune": ["finetune"],
    "minialbert.floors": ["floors"],
    "minialbert.aggregate": ["aggregate"],
    "minialbert.report": ["figures", "report-tables", "bench-inference"],
}

# Test hook: `MINIALBERT_FAIL_ONCE=aggregate,finetune` makes the first run of those sub-commands fail
# (exit 1) and later runs work, so a test can watch Snakemake/SLURM retry a job. The marker lives
# in `logs/.fail_once/` of the working directory.
FAIL_ONCE_ENV = "MINIALBERT_FAIL_ONCE"


def _fail_once(command: str) -> None:
    wanted = {c.strip() for c in os.environ.get(FAIL_ONCE_ENV, "").split(",") if c.strip()}
    if command not in wanted:
        return
    marker = Path("logs/.fail_once") / command
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    print(f"{FAIL_ONCE_ENV}: failing {command} on purpose", file=sys.stderr)
    sys.exit(1)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minialbert", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="<stage>")
    sub.required = True
    for module, commands in STAGES.items():
        if only is not None and only not in commands:
            continue
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    only = argv[0] if argv and not argv[0].startswith("-") else None
    if only is not None and not any(only in cmds for cmds in STAGES.values()):
        only = None  # unknown command: let argparse list the valid ones
    args = build_parser(only).parse_args(argv)
    _fail_once(args.command)
    try:
        result = args.func(args)
    except (StageError, ValueError, FileNotFoundError, KeyError) as err:
        if os.environ.get("MINIALBERT_DEBUG"):
            raise
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"minialbert {args.command}: error: {msg}", file=sys.stderr)
        sys.exit(1)
    return 0 if result is None else int(result)
