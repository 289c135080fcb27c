"""The HTML report's ingredients: figures, tables and the inference benchmark.

    minialbert figures --summary results/summary --distill results/distill/* \
        --finetune-metrics results/finetune/.../metrics.json ... \
        --inference results/summary/inference.csv --out results/summary/figures
    minialbert report-tables --summary results/summary --distill results/distill/* \
        --inference results/summary/inference.csv --out results/summary/report
    minialbert bench-inference --model DIR ... [--names NAME ...] --out results/summary/inference.csv

Every input of `figures` and `report-tables` is optional: what is missing becomes a placeholder
that says so, so a partial run still reports. `snakemake --report results/report.html` assembles
the report from these files and the captions in workflow/report/.

Modules: `style` (palette, model order, PNG + SVG output), `inputs` (reading the results),
`figures`, `tables`, `inference`. Heavy libraries are imported only when a command runs.
"""

from __future__ import annotations

import argparse

# figure file stem -> what it shows (report labels; `figures.DRAW` draws each)
FIGURES = {
    "1_score_vs_params": "score vs unique parameters",
    "2_adapter_minus_full": "adapters only minus full fine-tuning",
    "3_distill_losses": "distillation losses",
    "4_inference": "inference speed",
    "5_anytime": "anytime inference (fewer recursions)",
}


def _cmd(module: str):
    def run(args: argparse.Namespace) -> None:
        import importlib

        importlib.import_module(f"{__name__}.{module}").run(args)

    return run


def _inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--summary", default=None, help="the aggregate's folder (results/summary)")
    p.add_argument("--distill", nargs="*", default=[], help="distillation result folders, in config order")
    p.add_argument("--order", nargs="*", default=None,
                   help="model order of legends and tables (default: teacher, then the --distill folders)")
    p.add_argument("--out", required=True, help="output folder")


def register(subparsers) -> None:
    p = subparsers.add_parser("figures", help="draw the report's figures (PNG and SVG)",
                              description="Draw the report's five figures; missing inputs give placeholders.")
    _inputs(p)
    p.add_argument("--finetune-metrics", nargs="*", default=[], help="fine-tuning metrics.json files")
    p.add_argument("--inference", default=None, help="inference.csv of `minialbert bench-inference`")
    p.set_defaults(func=_cmd("figures"))

    p = subparsers.add_parser("report-tables", help="write the report's HTML tables",
                              description="Render results.md and the per-task, parameter, distillation "
                                          "and inference tables.")
    _inputs(p)
    p.add_argument("--inference", default=None, help="inference.csv of `minialbert bench-inference`")
    p.set_defaults(func=_cmd("tables"))

    from . import inference  # constants only: torch is imported inside its functions

    p = subparsers.add_parser("bench-inference", help="time model folders' encoders on this machine",
                              description=inference.__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="+", required=True, help="model folders (teacher, students)")
    p.add_argument("--names", nargs="*", default=None, help="one name per --model (default: folder names)")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=list(inference.BATCH_SIZES))
    p.add_argument("--seq-len", type=int, default=inference.SEQ_LEN)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.set_defaults(func=_cmd("inference"))
