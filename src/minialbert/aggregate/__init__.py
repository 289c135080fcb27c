"""`minialbert aggregate`: every fine-tuning (and floor) result in one summary.

    minialbert aggregate --metrics FILE... [--floors FILE...] [--students DIR...] [--teacher DIR]
        [--published CSV] --out results/summary

For each (task, model, mode) the learning rate with the best mean score over seeds on each run's
selection split is chosen (`select`); the numbers reported are that learning rate's mean over
seeds on the reported split and on every extra eval split (MNLI matched and mismatched are two
`split` rows). Intervals are 95% percentile bootstraps over the examples of the split (sentences
for NER), two-level over seeds and examples where there are several seeds (`stats`, `resample`);
paired comparisons (students with one another, adapter vs full, retention of the teacher's score)
use the same resampled examples for both arms (`compare`).

Writes results.csv, comparisons.csv, results.md, params.csv, scores.png and metrics.json (dvc
metrics, with a `runtime` provenance block); the columns are described in docs/ARCHITECTURE.md.
Floors come from `minialbert floors`; published numbers from a CSV such as config/published.csv
(task, model, metric, value on our 0-1 scale, source, protocol, optional split).

Modules: `load` (metrics files, summaries, published numbers), `select` (learning rate, order),
`resample` (metrics on many resamples at once), `stats` (intervals, differences, retention),
`compare` (which arms are compared), `tables` (the csv files), `markdown` (results.md), `params`
(checkpoint sizes), `plot` (scores.png), `build` (the stage end to end). Heavy libraries are
imported only when the command runs.
"""

from __future__ import annotations


def _cmd_aggregate(args) -> None:
    from .build import aggregate

    print(aggregate(args.metrics, args.out, students=args.students, teacher=args.teacher,
                    floors=args.floors, published=args.published))


def register(subparsers) -> None:
    p = subparsers.add_parser("aggregate", help="summarise fine-tuning results into tables and a plot",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.json files of fine-tuning runs")
    p.add_argument("--students", nargs="*", default=[],
                   help="distilled student checkpoint folders, in config order")
    p.add_argument("--teacher", default=None, help="teacher model folder (for its parameter count)")
    p.add_argument("--floors", nargs="*", default=[], help="metrics.json files of `minialbert floors`")
    p.add_argument("--published", default=None, help="CSV of published numbers (config/published.csv)")
    p.add_argument("--out", required=True, help="output folder (results/summary)")
    p.set_defaults(func=_cmd_aggregate)
