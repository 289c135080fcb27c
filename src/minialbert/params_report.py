"""`minialbert params`: the parameter-count table of the student presets (with the MLM head).

Counts are unique parameters, split by part (see `modeling_minialbert.parameter_counts`); models
are built on the meta device, so the table costs no memory and no initialisation.
"""

from __future__ import annotations

import csv
import io
import json

from .modeling_minialbert import PRESETS, parameter_counts, preset_config

COLUMNS = ["embeddings", "projector", "shared_layer", "adapters", "head", "total"]


def params_table(presets: list[str] | None = None) -> list[dict]:
    """One row per preset: {"preset": name, <COLUMNS>: int}."""
    return [{"preset": name, **parameter_counts(preset_config(name))} for name in presets or list(PRESETS)]


def format_table(rows: list[dict], fmt: str) -> str:
    header = ["preset", *COLUMNS]
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(COLUMNS)]
    lines += ["| " + " | ".join([row["preset"], *(f"{row[c]:,}" for c in COLUMNS)]) + " |" for row in rows]
    return "\n".join(lines)


def run(args) -> None:
    print(format_table(params_table(args.preset), args.format))


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "params",
        help="print the parameter counts of the student presets",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--preset",
        action="append",
        choices=list(PRESETS),
        metavar="NAME",
        help=f"preset to include (repeatable; default: all of {', '.join(PRESETS)})",
    )
    parser.add_argument("--format", choices=["md", "csv", "json"], default="md", help="output format (default: md)")
    parser.set_defaults(func=run)
