"""`minialbert tokenize`: corpus shards -> packed `[CLS] ... [SEP]` windows (see `windows`).

Each document is encoded with the teacher's fast tokenizer without special tokens. Streaming:
documents are read shard by shard in batches of `batch_docs`, each batch is encoded with
`encode_batch_fast`, windowed with numpy (no per-token Python loop) and appended to the output
files in corpus order (`encoding`), so memory is bounded by a few batches, not the corpus.
Documents that are eval texts of an `--exclude-task`, or near copies of one, are dropped as they
are read (`leakage`); the others keep their document numbers, so their window samples do not
move.
"""

from __future__ import annotations

import collections
import itertools
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .. import settings
from ..atomic import staged_dir, write_json
from ..files import json_object
from .encoding import Batch, encoded_batches
from .leakage import Exclusions
from .packed import load_teacher_tokenizer, tokenizer_info
from .sources import read_json

# settings that change how fast windows are made, not which: left out of meta.json's spec
SPEED_KEYS = ("workers", "batch_docs")
# what `stride` counts, recorded in meta.json (it once counted tokens between window starts)
STRIDE_SEMANTICS = "overlap"


def tokenize_spec(value: str | dict | None, workers: int | None = None) -> dict[str, Any]:
    """The `tokenize` section, validated; `workers` (the --workers flag) overrides its own."""
    spec = settings.load_section("tokenize", value)
    content = spec["max_length"] - 2
    if spec["stride"] >= content:
        raise ValueError(
            f"tokenize.stride: {spec['stride']} must be below max_length - 2 = {content}: "
            f"consecutive windows overlap by `stride` tokens, so a window must start at least one "
            f"token after the one before"
        )
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers!r}")
        spec["workers"] = workers
    return spec


def corpus_shards(corpus: Path) -> list[Path]:
    """The corpus shards in order (by shard number, so shard-100000 comes after shard-99999)."""
    def number(p: Path) -> tuple[int, str]:
        digits = p.name[len("shard-"):-len(".jsonl")]
        return (int(digits) if digits.isdigit() else -1, p.name)

    return sorted(corpus.glob("shard-*.jsonl"), key=number)


def read_documents(corpus: Path) -> Iterator[str]:
    """The texts of a corpus folder, in corpus order."""
    for shard in corpus_shards(corpus):
        with open(shard, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                doc = json_object(line, shard, lineno)
                if "text" not in doc:
                    raise ValueError(f"corpus shard {shard}: line {lineno}: no 'text' field")
                yield doc["text"]


def read_batches(corpus: Path, batch_docs: int, exclusions: Exclusions | None = None) -> Iterator[Batch]:
    """(document numbers, texts) of a corpus folder in corpus order, `batch_docs` documents read
    at a time, without the documents `exclusions` drops (their numbers are skipped)."""
    docs = enumerate(read_documents(corpus))
    while batch := list(itertools.islice(docs, batch_docs)):
        if exclusions is not None:
            dropped = exclusions.drop([text for _, text in batch])
            batch = [doc for doc, drop in zip(batch, dropped) if not drop]
        if batch:
            numbers, texts = zip(*batch)
            yield np.array(numbers, dtype=np.int64), list(texts)


def _teacher_max_positions(teacher: Path) -> int | None:
    cfg = teacher / "config.json"
    value = read_json(cfg, "teacher").get("max_position_embeddings") if cfg.is_file() else None
    return int(value) if isinstance(value, int) else None


def _check_inputs(corpus: Path, teacher: Path, spec: dict) -> None:
    if not corpus.is_dir():
        raise FileNotFoundError(f"corpus folder {corpus} does not exist")
    if not corpus_shards(corpus):
        raise FileNotFoundError(f"corpus folder {corpus} has no shard-*.jsonl files")
    max_pos = _teacher_max_positions(teacher)
    if max_pos is not None and spec["max_length"] > max_pos:
        raise ValueError(
            f"tokenize spec: max_length {spec['max_length']} exceeds the teacher's "
            f"max_position_embeddings {max_pos} ({teacher / 'config.json'})"
        )


def run_tokenize(
    corpus: str | Path, teacher: str | Path, spec: str | dict | None, out: str | Path,
    workers: int | None = None, exclude_tasks: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Tokenise `corpus` into `out`; `exclude_tasks` are prepared task folders whose eval texts
    are left out (the `--exclude-task` flags)."""
    spec = tokenize_spec(spec, workers)
    corpus, teacher, out = Path(corpus), Path(teacher), Path(out)
    _check_inputs(corpus, teacher, spec)
    exclusions = Exclusions(list(exclude_tasks))

    tok, _ = load_teacher_tokenizer(teacher)
    info = tokenizer_info(teacher, tok)
    if info["vocab_size"] > 2**32:
        raise ValueError(f"vocabulary of {info['vocab_size']} ids does not fit uint32")
    dtype_name = "uint16" if info["vocab_size"] <= 65535 else "uint32"
    params = {
        "max_length": spec["max_length"], "stride": spec["stride"],
        "cap": spec["max_windows_per_doc"], "choice": spec["window_choice"], "seed": spec["seed"],
        "dtype": np.dtype(dtype_name),
        "cls_id": info["cls_id"], "sep_id": info["sep_id"], "pad_id": info["pad_id"],
    }
    totals: collections.Counter = collections.Counter()
    n_windows = n_tokens = 0
    results = encoded_batches(read_batches(corpus, spec["batch_docs"], exclusions),
                              workers=spec["workers"], teacher=str(teacher), params=params, tok=tok)
    with staged_dir(out) as tmp:
        with open(tmp / "input_ids.bin", "wb") as f_ids, open(tmp / "lengths.bin", "wb") as f_len:
            for windows, lengths, stats in results:
                windows.tofile(f_ids)
                lengths.tofile(f_len)
                n_windows += len(lengths)
                n_tokens += int(lengths.sum(dtype=np.int64))
                totals.update(stats)
        totals["n_docs"] += exclusions.n_docs  # the corpus's documents, dropped ones included
        if n_windows == 0:
            raise ValueError(
                f"corpus {corpus} gave no windows ({totals['n_docs']} documents: "
                f"{exclusions.n_docs} dropped as eval texts of --exclude-task, the others empty "
                f"after tokenisation)" if totals["n_docs"] else f"no documents found in corpus {corpus}"
            )
        manifest_file = corpus / "manifest.json"
        manifest = read_json(manifest_file, "corpus") if manifest_file.is_file() else {}
        if manifest.get("n_docs") is not None and manifest["n_docs"] != totals["n_docs"]:
            raise ValueError(
                f"corpus {corpus}: manifest.json says {manifest['n_docs']} documents but the shards "
                f"hold {totals['n_docs']}; the corpus folder is incomplete"
            )
        meta = {
            "n_windows": n_windows,
            "max_length": spec["max_length"],
            "stride": spec["stride"],
            "stride_semantics": STRIDE_SEMANTICS,
            "max_windows_per_doc": spec["max_windows_per_doc"],
            "window_choice": spec["window_choice"],
            "seed": spec["seed"],
            "dtype": dtype_name,
            **info,
            "n_docs": totals["n_docs"],
            "n_docs_empty": totals["n_docs_empty"],
            "n_docs_capped": totals["n_docs_capped"],
            "n_doc_tokens": totals["n_doc_tokens"],
            **exclusions.summary(),
            "n_tokens": n_tokens,
            "corpus": manifest.get("name"),
            "corpus_dir": str(corpus),
            "teacher_dir": str(teacher),
            "spec": {k: v for k, v in spec.items() if k not in SPEED_KEYS},
        }
        write_json(tmp / "meta.json", meta)
    return meta
