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

# module -> the sub-commands it registers (listed here so the help text can show them cheaply)
STAGES = {
    "minialbert.params_report": ["params"],
    "minialbert.sources": ["download-teacher", "download-corpus"],
    "minialbert.tokenization": ["tokenize"],
    "minialbert.distill": ["distill"],
    "minialbert.tasks": ["prepare-task"],
    "minialbert.finetune": ["finetune"],
    "minialbert.aggregate": ["aggregate"],
}


class StageError(Exception):
    """A user-facing failure: printed as one clear line, exit status 1, no traceback."""


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
    try:
        result = args.func(args)
    except (StageError, ValueError, FileNotFoundError, KeyError) as err:
        if os.environ.get("MINIALBERT_DEBUG"):
            raise
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"minialbert {args.command}: error: {msg}", file=sys.stderr)
        sys.exit(1)
    return 0 if result is None else int(result)
