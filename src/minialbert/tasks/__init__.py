"""`minialbert prepare-task`: read a downstream task, split it deterministically, write it to disk.

    minialbert prepare-task --name NAME --spec JSON --out DIR

turns one entry of the config's `tasks:` mapping (its keys, defaults and the keys each `source`
allows: the `task` definition in `src/minialbert/config.schema.yaml`) into `DIR/{train,dev,test}.jsonl`
+ `DIR/task.json`. Every later job (each model x mode x learning rate x seed) reads these files, so
all of them see the same split; rerunning with the same spec writes byte-identical files.

Sources: `package` (the offline default's datasets, docs/method.md "The offline default", and
`lee_similarity`, a document-similarity pair task from gensim's test data), `files` (csv / tsv /
jsonl, or conll for token tasks: BioBERT-format NER TSVs are `format: conll`) and `hf` (a hub
dataset, or a `glue` preset of everything for `nyu-mll/glue`; the revision is resolved to a commit,
recorded and loaded). GLUE test labels are hidden: test.jsonl is written without labels and
fine-tuning reports dev. MNLI's dev is validation_matched; validation_mismatched becomes the extra
eval split `dev_mismatched`.

Splits we carve drop exact duplicates (normalised text) first; splits that come with the source are
kept as they are and their overlaps counted. Token tasks take any tag set: BIO tags are scored by
entity, others (POS, chunk, morphology) per tag (`tag_scheme`).

Rows: `{"text", "text_pair"?, "label"}` (label a string, a float for regression; no label in a
test split without labels) or `{"tokens", "tags"}` for token tasks. Files keep the source order
within a split. task.json: `name`, `kind`, `labels` (for two-class tasks `labels[1]` is the
positive class of the binary F1; BIO token tasks get a complete B-/I- pair per entity type),
`tag_scheme` (token tasks: `bio` | `plain`, else null), `metric` (the selection metric), `metrics`
(reported, the selection metric first), `counts`, `test_has_labels`, `text_keys`, `extra_splits`,
`seed`, `source` (provenance: package version, file sha256s or hub id, revision and
`revision_resolved`), `carved` ({split: how it was carved}), `duplicates` (`dropped` before
carving, `cross_split` {"train-test", "train-dev", "dev-test": rows of the later split with a copy
in the earlier one}), and `label_counts` (classification) or `n_tokens` (token tasks) per split.

Modules: `spec` (the spec's cross-key checks, GLUE presets, package datasets), `readers` (csv /
tsv / jsonl / conll files), `columns` (records -> rows), `packages` (the package datasets),
`hub` (hub revisions), `loaders` (the three sources), `duplicates` (normalised-text duplicates),
`splitting` (hash-ordered carving and stratified subsampling), `tags` (the tag scheme), `labels`
(the label set and its checks), `build` (the task), `folder` (the folder contract: writing it, and
`read_task_json` / `load_task` / `task_files` for the later stages).
"""

from __future__ import annotations

import sys


def _cmd_prepare(args) -> None:
    from .build import prepare_task

    task = prepare_task(args.name, args.spec, args.out)
    counts = ", ".join(f"{k} {v}" for k, v in task["counts"].items())
    dups = task["duplicates"]
    dropped = f"; {dups['dropped']} exact duplicates dropped" if dups["dropped"] else ""
    print(f"prepared task {task['name']} ({task['kind']}, {len(task['labels'])} labels): {counts}"
          f"{dropped} -> {args.out}")
    overlaps = ", ".join(f"{pair} {n}" for pair, n in dups["cross_split"].items() if n)
    if overlaps:
        print(f"note: rows with a copy in an earlier split (the source's splits are kept): "
              f"{overlaps}", file=sys.stderr)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare-task", help="read a downstream task, split it deterministically, write jsonl",
        description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="task name (the key under `tasks:`)")
    p.add_argument("--spec", required=True, help="the task's config entry as a JSON object")
    p.add_argument("--out", required=True, help="output folder (resources/tasks/<name>)")
    p.set_defaults(func=_cmd_prepare)
