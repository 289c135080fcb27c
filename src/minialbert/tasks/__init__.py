"""`minialbert prepare-task`: read a downstream task, split it deterministically, write it to disk.

    minialbert prepare-task --name NAME --spec JSON --out DIR

turns one entry of the config's `tasks:` mapping (its keys, defaults and the keys each `source`
allows: the `task` definition in `src/minialbert/config.schema.yaml`) into `DIR/{train,dev,test}.jsonl`
+ `DIR/task.json`. Every later job (each model x mode x learning rate x seed) reads these files, so
all of them see the same split; rerunning with the same spec writes byte-identical files.

Sources: `package` (the offline default's datasets, docs/method.md "The offline default"), `files`
(csv / tsv / jsonl, or conll for token tasks: BioBERT-format NER TSVs are `format: conll`) and `hf`
(a hub dataset, or a `glue` preset of everything for `nyu-mll/glue`). GLUE test labels are hidden:
test.jsonl is written without labels and fine-tuning reports dev. MNLI's dev is validation_matched;
validation_mismatched becomes the extra eval split `dev_mismatched`.

Rows: `{"text", "text_pair"?, "label"}` (label a string, a float for regression; no label in a
test split without labels) or `{"tokens", "tags"}` for token tasks. Files keep the source order
within a split. task.json: `name`, `kind`, `labels` (for two-class tasks `labels[1]` is the
positive class of the binary F1; token tasks get a complete B-/I- pair per entity type),
`metric` (the selection metric), `metrics` (reported, the selection metric first), `counts`,
`test_has_labels`, `text_keys`, `extra_splits`, `seed`, `source` (provenance: package version,
file sha256s or hub id and revision), `carved` ({split: how it was carved from train}), and
`label_counts` (classification) or `n_tokens` (token tasks) per split.

Modules: `spec` (the spec's cross-key checks, GLUE presets, package datasets), `readers` (csv /
tsv / jsonl / conll files), `columns` (records -> rows), `packages` (the package datasets),
`loaders` (the three sources), `splitting` (hash-ordered carving and stratified subsampling),
`labels` (the label set and its checks), `build` (the task), `folder` (the folder contract:
writing it, and `read_task_json` / `load_task` / `task_files` for the later stages).
"""

from __future__ import annotations


def _cmd_prepare(args) -> None:
    from .build import prepare_task

    task = prepare_task(args.name, args.spec, args.out)
    counts = ", ".join(f"{k} {v}" for k, v in task["counts"].items())
    print(f"prepared task {task['name']} ({task['kind']}, {len(task['labels'])} labels): {counts} "
          f"-> {args.out}")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare-task", help="read a downstream task, split it deterministically, write jsonl",
        description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="task name (the key under `tasks:`)")
    p.add_argument("--spec", required=True, help="the task's config entry as a JSON object")
    p.add_argument("--out", required=True, help="output folder (resources/tasks/<name>)")
    p.set_defaults(func=_cmd_prepare)
