"""Data in: the teacher, the corpus and its tokenised windows (`download-teacher`, `download-corpus`,
`tokenize`).

Each command takes its config section as one JSON string (`--spec`; keys and defaults in
`src/minialbert/config.schema.yaml`) and writes one folder atomically (a failed run leaves no
partial output). Teachers and corpora come from one of three sources:

- `package`: files carried by an installed Python package (the offline default); `package` is the
  import name, `path` a folder (or file) inside it. The package is located, never imported.
- `hf`: the Hugging Face hub (needs a network; pin `revision`). Teachers are snapshots of weights
  and tokenizer files only (no code is ever run); corpora are streamed with `datasets`.
- `files`: a local folder (or file) named by `path`.

Outputs (the contracts later stages rely on, docs/ARCHITECTURE.md):

- `download-teacher` -> `resources/teacher/<name>/`: a Hugging Face model folder (`config.json`,
  `model.safetensors`, the tokenizer files that exist, always with a `tokenizer.json`) +
  `manifest.json` (`sha256` of `model.safetensors`, `has_mlm_head`, the source weights).
- `download-corpus` -> `resources/corpus/<name>/`: `shard-00000.jsonl`, ... (`{"id", "text"}` per
  line, `shard_docs` documents per shard, in a deterministic order: sorted paths, file order
  within a file; empty documents skipped) + `manifest.json` (counts, the files decoded with
  `fallback_encoding`).
- `tokenize` -> `resources/tokens/<teacher>/<corpus>/`: `input_ids.bin` (`[n_windows,
  max_length]`, uint16 when the vocab has at most 65535 ids, else uint32), `lengths.bin` (int32,
  real tokens per window incl. the two specials) and `meta.json`. `meta.n_tokens` is the sum of
  `lengths` (what a model sees, specials included); `n_doc_tokens` counts the documents' own
  tokens before windowing; `excluded` / `n_docs_excluded` / `n_docs_near_copies` count the
  documents dropped as eval texts of an `--exclude-task`. The output is byte-identical for every
  `workers`.

Modules: `sources` (package / files locations), `weights` and `tokenizer_json` (the teacher's
files), `teacher`, `corpus_readers` and `corpus`, `windows` (the window arithmetic and sample),
`encoding` (worker processes), `leakage` and `near_copies` (the eval texts left out of the
corpus), `tokenize`, and `packed` (the reader side: `PackedWindows`, the teacher's
tokenizer, the vocabulary fingerprint).
"""

from __future__ import annotations

import argparse

SPEC_HELP = "the config's {} section as JSON (keys and defaults: src/minialbert/config.schema.yaml)"


def _cmd_teacher(args: argparse.Namespace) -> None:
    from .teacher import download_teacher

    m = download_teacher(args.spec, args.out)
    print(
        f"teacher {m['model_type']} ({m['num_layers']} layers, H={m['hidden_size']}, "
        f"V={m['vocab_size']}, mlm head: {m['has_mlm_head']}) -> {args.out}"
    )


def _cmd_corpus(args: argparse.Namespace) -> None:
    from .corpus import download_corpus

    m = download_corpus(args.spec, args.out)
    print(f"corpus: {m['n_docs']} documents, {m['n_chars']} chars, {m['n_shards']} shard(s) -> {args.out}")


def _cmd_tokenize(args: argparse.Namespace) -> None:
    from .tokenize import run_tokenize

    meta = run_tokenize(args.corpus, args.teacher, args.spec, args.out, workers=args.workers,
                        exclude_tasks=args.exclude_task)
    print(
        f"tokenize: {meta['n_docs']} documents ({meta['n_docs_excluded']} dropped as eval texts) "
        f"-> {meta['n_windows']} windows of "
        f"{meta['max_length']} ({meta['n_tokens']} tokens, {meta['dtype']}) -> {args.out}"
    )


def register(subparsers) -> None:
    for command, section, help_text, func in (
        ("download-teacher", "teacher",
         "materialise a teacher (package|hf|files) as a HF model folder + manifest.json", _cmd_teacher),
        ("download-corpus", "corpus",
         "materialise a corpus (package|hf|files) as JSONL shards + manifest.json", _cmd_corpus),
    ):
        p = subparsers.add_parser(command, help=help_text)
        p.add_argument("--spec", required=True, help=SPEC_HELP.format(section))
        p.add_argument("--out", required=True, help="output folder (written atomically)")
        p.set_defaults(func=func)

    p = subparsers.add_parser(
        "tokenize",
        help="cut corpus documents into [CLS] ... [SEP] windows, packed uint16/uint32 arrays",
    )
    p.add_argument("--corpus", required=True, help="a download-corpus output folder")
    p.add_argument("--teacher", required=True, help="a download-teacher output folder")
    p.add_argument("--spec", default="{}", help=SPEC_HELP.format("tokenize"))
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--workers", type=int, default=None, help="overrides spec.workers")
    p.add_argument(
        "--exclude-task", action="append", default=[], metavar="DIR",
        help="a prepare-task output folder drawn from the corpus's source: corpus documents that are "
             "its dev/test/extra eval texts (or near copies of them) are dropped (repeatable)",
    )
    p.set_defaults(func=_cmd_tokenize)
