"""`minialbert finetune`: fine-tune and evaluate one model on one prepared task.

    minialbert finetune --model DIR --model-name NAME --task DIR --mode full|adapter|lora \
        --lr FLOAT --seed INT --spec JSON --out results/finetune/.../metrics.json

The model is a local checkpoint folder, a MiniALBERT student or the BERT teacher; both go through
the same code. Modes: `full` trains every parameter; `adapter` (MiniALBERT only) freezes
embeddings, projector and the shared layer and trains the 2N bottleneck adapters and the head,
creating fresh adapters for a checkpoint without them; `lora` wraps the model with PEFT LoRA on
the attention query/value Linear layers, the head fully trainable.

Training: AdamW, linear or cosine schedule, dynamic padding, length-grouped batches, all seeded.
The selection protocol (`protocol`) decides where the epoch is chosen and what is reported: a task
with a labelled test selects on dev and reports test; a GLUE-like task (hidden test labels) holds
out a stratified slice of train to select on and reports dev (`selection: train_slice`), or keeps
the last epoch and reports dev as the reference code did (`selection: reference`). Extra eval
splits (MNLI mismatched) are reported under `extra`.

metrics.json (`results/finetune/<model>/<task>/<mode>/lr<tag>/seed<seed>/`): the protocol and its
splits, the metrics on them, per-example `predictions` of the reported and extra splits (what the
aggregate bootstraps over), `anytime` scores of a student with its first k = 1..N recursions,
parameter counts, the settings and per-epoch history, and `runtime` (timings, throughput and
`minialbert.provenance`, which two runs of the same inputs may differ in; see `results`). With
`save`, the fine-tuned model goes to `checkpoint/` beside it first (`checkpoint`).

NER: `label_scheme: word` scores words by their first sub-token; `subtoken` (the reference) gives
every sub-token its word's tag and scores per sub-token. task.json's `tag_scheme` picks entity F1
(bio) or per-tag scores (plain).

Settings (`--spec`): the config's `finetune.settings` merged with the task's `per_task` overrides,
validated against `finetune_settings` in `src/minialbert/config.schema.yaml` (the defaults live
there). `--lr` reaches the optimiser and metrics.json exactly as given.

Modules: `batches` (tokenisation, the verified cache, length-grouped batches), `modes` (model
loading, full / adapter / LoRA, parameter counts), `protocol` (selection protocol, the train
slice), `evaluation` (predictions, metrics, anytime), `loop` (`run_finetune`), `results` (the
`runtime` block, `comparable`), `checkpoint` and `model_card` (the saved model). Heavy libraries
are imported only when the command runs, so `minialbert --help` stays fast.
"""

from __future__ import annotations

import argparse

MODES = ("full", "adapter", "lora")


def _cmd_finetune(args: argparse.Namespace) -> None:
    from .loop import run_finetune

    run_finetune(args.model, args.model_name, args.task, args.mode, args.lr, args.seed, args.spec,
                 args.out, cache_dir=args.cache_dir)


def register(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune and evaluate one model on one task",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="local checkpoint folder (student or teacher)")
    p.add_argument("--model-name", required=True, help="name recorded in metrics.json")
    p.add_argument("--task", required=True, help="prepared task folder (resources/tasks/<task>)")
    p.add_argument("--mode", required=True, choices=MODES)
    p.add_argument("--lr", required=True, type=float, help="learning rate, used exactly as given")
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--spec", default="{}", help="fine-tuning settings as a JSON object")
    p.add_argument("--out", required=True, help="path of the metrics.json to write")
    p.add_argument("--cache-dir", default=None,
                   help="where tokenised splits are cached (default: <task>/cache)")
    p.set_defaults(func=_cmd_finetune)
