"""`minialbert tokenize`: documents -> fixed-length `[CLS] ... [SEP]` windows in packed arrays.

Each document is encoded with the teacher's fast tokenizer without special tokens. With
`C = max_length - 2` content tokens per window, windows start at token 0, stride, 2*stride, ...;
a document of n tokens gives `1 + ceil(max(n - C, 0) / stride)` windows (the last one ends at the
document's end and may be shorter; a document of at most C tokens gives one window), of which the
first `max_windows_per_doc` are kept (null: all). A document with no tokens gives none. Each
window is written as `[CLS] tokens [SEP]` padded with `pad_id` to `max_length`.

Output (docs/ARCHITECTURE.md): `input_ids.bin` (`[n_windows, max_length]`, uint16 when the vocab
has at most 65535 ids, else uint32), `lengths.bin` (int32, real tokens per window incl. the two
specials) and `meta.json`. `meta.n_tokens` is the sum of `lengths` (what a model sees, specials
included); `n_doc_tokens` counts the documents' own tokens before windowing.

Streaming: documents are read shard by shard in batches of `batch_docs`, each batch is encoded
with `encode_batch_fast`, windowed with numpy (no per-token Python loop) and appended to the
output files in corpus order, so memory is bounded by a few batches, not the corpus.

Parallelism (`workers`): 1 (the default) encodes in this process and lets the Rust tokenizer
spread each batch over all cores (its own thread pool; `TOKENIZERS_PARALLELISM=false` turns that
off); N > 1 uses N forked processes, each with cores/N tokenizer threads, fed batches in order
with a bounded number in flight; results are written in corpus order, so the output is
byte-identical for every `workers`. benchmarks/results/tokenize.md has the measurements behind
the default.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import itertools
import json
import multiprocessing as mp
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .atomic import staged_dir, write_json
from .data import tokenizer_info, load_teacher_tokenizer
from .sources import _positive_int, parse_spec

TOKENIZE_KEYS: dict[str, Any] = {
    "max_length": 256,
    "stride": 128,
    "max_windows_per_doc": 10,
    "workers": 1,
    "batch_docs": 256,
}
NULLABLE = ("max_windows_per_doc",)  # null means "no cap"


def parse_tokenize_spec(text: str | dict | None) -> dict[str, Any]:
    raw = json.loads(text) if isinstance(text, str) and text.strip() else (text or {})
    spec = parse_spec(text, TOKENIZE_KEYS, "tokenize")
    for key in NULLABLE:
        if isinstance(raw, dict) and key in raw and raw[key] is None:
            spec[key] = None
    for key in TOKENIZE_KEYS:
        _positive_int(spec, key, "tokenize")
    if spec["max_length"] < 3:
        raise ValueError(f"tokenize spec: 'max_length' must be >= 3, got {spec['max_length']}")
    if spec["stride"] > spec["max_length"] - 2:
        raise ValueError(
            f"tokenize spec: 'stride' ({spec['stride']}) must be <= max_length - 2 "
            f"({spec['max_length'] - 2}) or windows would skip tokens"
        )
    return spec


def n_windows_for(n_tokens: np.ndarray, content: int, stride: int, cap: int | None) -> np.ndarray:
    """Windows per document (vectorised); see the module docstring for the rule."""
    n_tokens = np.asarray(n_tokens, dtype=np.int64)
    extra = np.maximum(n_tokens - content, 0)
    nw = np.where(n_tokens > 0, 1 + (extra + stride - 1) // stride, 0)
    if cap is not None:
        nw = np.minimum(nw, cap)
    return nw


def make_windows(
    ids: np.ndarray, doc_lens: np.ndarray, *, max_length: int, stride: int, cap: int | None,
    cls_id: int, sep_id: int, pad_id: int, dtype: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated token ids of a batch of documents -> (windows [W, max_length], lengths [W])."""
    content = max_length - 2
    doc_lens = np.asarray(doc_lens, dtype=np.int64)
    nw = n_windows_for(doc_lens, content, stride, cap)
    total = int(nw.sum())
    if total == 0:
        return np.zeros((0, max_length), dtype=dtype), np.zeros((0,), dtype=np.int32)
    doc_start = np.cumsum(doc_lens) - doc_lens
    doc_of = np.repeat(np.arange(len(doc_lens)), nw)
    k = np.arange(total) - np.repeat(np.cumsum(nw) - nw, nw)  # window number within its doc
    start = k * stride
    wlen = np.minimum(content, doc_lens[doc_of] - start)
    src = doc_start[doc_of] + start
    cols = np.arange(content)
    valid = cols[None, :] < wlen[:, None]
    gather = np.where(valid, src[:, None] + cols[None, :], 0)
    out = np.full((total, max_length), pad_id, dtype=dtype)
    out[:, 1:-1] = np.where(valid, ids[gather], pad_id)
    out[:, 0] = cls_id
    out[np.arange(total), wlen + 1] = sep_id
    return out, (wlen + 2).astype(np.int32)


# ----------------------------------------------------------------------------------------------
# per-process state and the unit of work (one batch of documents)

_STATE: dict[str, Any] = {}
# Set once this process has used the Rust thread pool: a forked child must not use it then (the
# pool's threads do not survive a fork), so workers get one tokenizer thread each.
_RUST_POOL_USED = False


def _rust_parallelism_on() -> bool:
    return os.environ.get("TOKENIZERS_PARALLELISM", "true").strip().lower() not in ("false", "0", "off", "no", "")


def _setup(teacher_dir: str, params: dict, threads: int | None, tok=None) -> None:
    """Load the tokenizer into this process; `threads` sets the Rust thread count (None: as is)."""
    if threads is not None:
        if threads <= 1:
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = "true"
            os.environ["RAYON_NUM_THREADS"] = str(threads)
    if tok is None:
        tok, _ = load_teacher_tokenizer(teacher_dir)
    _STATE.update(tok=tok, params=params, teacher=teacher_dir)


def _encode_batch(texts: list[str]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    tok, p = _STATE["tok"], _STATE["params"]
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    id_lists = [e.ids for e in encode(texts, add_special_tokens=False)]
    doc_lens = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
    ids = np.fromiter(
        itertools.chain.from_iterable(id_lists), dtype=p["dtype"], count=int(doc_lens.sum())
    )
    windows, lengths = make_windows(
        ids, doc_lens, max_length=p["max_length"], stride=p["stride"], cap=p["cap"],
        cls_id=p["cls_id"], sep_id=p["sep_id"], pad_id=p["pad_id"], dtype=p["dtype"],
    )
    capped = 0
    if p["cap"] is not None:
        full = n_windows_for(doc_lens, p["max_length"] - 2, p["stride"], None)
        capped = int((full > p["cap"]).sum())
    stats = {
        "n_docs": len(texts),
        "n_doc_tokens": int(doc_lens.sum()),
        "n_docs_empty": int((doc_lens == 0).sum()),
        "n_docs_capped": capped,
    }
    return windows, lengths, stats


def corpus_shards(corpus: Path) -> list[Path]:
    """The corpus shards in order (by shard number, so shard-100000 comes after shard-99999)."""
    def number(p: Path) -> tuple[int, str]:
        digits = p.name[len("shard-"):-len(".jsonl")]
        return (int(digits) if digits.isdigit() else -1, p.name)

    return sorted(corpus.glob("shard-*.jsonl"), key=number)


def _read_batches(corpus: Path, batch_docs: int) -> Iterator[list[str]]:
    shards = corpus_shards(corpus)
    batch: list[str] = []
    for shard in shards:
        with open(shard, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)["text"]
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    raise ValueError(
                        f"corpus shard {shard}: line {lineno}: expected a JSON object with 'text' ({err})"
                    ) from None
                batch.append(text)
                if len(batch) >= batch_docs:
                    yield batch
                    batch = []
    if batch:
        yield batch


def _results_serial(batches: Iterator[list[str]]):
    """Encode in this process (Rust threads on all cores) on two helper threads, so reading,
    converting and writing overlap with encoding (the tokenizer releases the GIL); results are
    yielded in input order."""
    global _RUST_POOL_USED
    _RUST_POOL_USED = _RUST_POOL_USED or _rust_parallelism_on()
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="tokenize") as pool:
        pending: collections.deque = collections.deque()
        try:
            for texts in batches:
                pending.append(pool.submit(_encode_batch, texts))
                if len(pending) >= 3:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


def _results_parallel(batches: Iterator[list[str]], workers: int, teacher: str, params: dict):
    """Process batches in `workers` processes; yields results in input order, bounded in flight."""
    method = "fork" if "fork" in mp.get_all_start_methods() and sys.platform != "darwin" else "spawn"
    ctx = mp.get_context(method)
    threads = 1 if _RUST_POOL_USED else max(1, (os.cpu_count() or 1) // workers)
    with ctx.Pool(workers, initializer=_setup, initargs=(teacher, params, threads)) as pool:
        pending: collections.deque = collections.deque()
        for texts in batches:
            pending.append(pool.apply_async(_encode_batch, (texts,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def run_tokenize(
    corpus: str | Path, teacher: str | Path, spec: str | dict | None, out: str | Path,
    workers: int | None = None,
) -> dict[str, Any]:
    spec = parse_tokenize_spec(spec)
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers!r}")
        spec["workers"] = workers
    corpus, teacher, out = Path(corpus), Path(teacher), Path(out)
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

    tok, _ = load_teacher_tokenizer(teacher)
    info = tokenizer_info(teacher, tok)
    if info["vocab_size"] > 2**32:
        raise ValueError(f"vocabulary of {info['vocab_size']} ids does not fit uint32")
    dtype_name = "uint16" if info["vocab_size"] <= 65535 else "uint32"
    params = {
        "max_length": spec["max_length"], "stride": spec["stride"],
        "cap": spec["max_windows_per_doc"], "dtype": np.dtype(dtype_name),
        "cls_id": info["cls_id"], "sep_id": info["sep_id"], "pad_id": info["pad_id"],
    }
    totals = collections.Counter()
    n_windows = n_tokens = 0
    batches = _read_batches(corpus, spec["batch_docs"])
    with staged_dir(out) as tmp:
        if spec["workers"] == 1:
            _setup(str(teacher), params, None, tok)
            results = _results_serial(batches)
        else:
            results = _results_parallel(batches, spec["workers"], str(teacher), params)
        with open(tmp / "input_ids.bin", "wb") as f_ids, open(tmp / "lengths.bin", "wb") as f_len:
            for windows, lengths, stats in results:
                windows.tofile(f_ids)
                lengths.tofile(f_len)
                n_windows += len(lengths)
                n_tokens += int(lengths.sum(dtype=np.int64))
                totals.update(stats)
        _STATE.clear()
        if n_windows == 0:
            raise ValueError(
                f"corpus {corpus} gave no windows ({totals['n_docs']} documents, all empty after "
                f"tokenisation)" if totals["n_docs"] else f"no documents found in corpus {corpus}"
            )
        manifest = _corpus_manifest(corpus)
        if manifest.get("n_docs") is not None and manifest["n_docs"] != totals["n_docs"]:
            raise ValueError(
                f"corpus {corpus}: manifest.json says {manifest['n_docs']} documents but the shards "
                f"hold {totals['n_docs']}; the corpus folder is incomplete"
            )
        meta = {
            "n_windows": n_windows,
            "max_length": spec["max_length"],
            "stride": spec["stride"],
            "max_windows_per_doc": spec["max_windows_per_doc"],
            "dtype": dtype_name,
            **info,
            "n_docs": totals["n_docs"],
            "n_docs_empty": totals["n_docs_empty"],
            "n_docs_capped": totals["n_docs_capped"],
            "n_doc_tokens": totals["n_doc_tokens"],
            "n_tokens": n_tokens,
            "corpus": manifest.get("name"),
            "corpus_dir": str(corpus),
            "teacher_dir": str(teacher),
            "spec": {k: v for k, v in spec.items() if k not in ("workers", "batch_docs")},
        }
        write_json(tmp / "meta.json", meta)
    return meta


def _teacher_max_positions(teacher: Path) -> int | None:
    cfg = teacher / "config.json"
    if not cfg.is_file():
        return None
    try:
        value = json.loads(cfg.read_text(encoding="utf-8")).get("max_position_embeddings")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"teacher {cfg}: not valid JSON ({err})") from None
    return int(value) if isinstance(value, int) else None


def _corpus_manifest(corpus: Path) -> dict:
    path = corpus / "manifest.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"corpus {path}: not valid JSON ({err})") from None


def _cmd_tokenize(args: argparse.Namespace) -> None:
    meta = run_tokenize(args.corpus, args.teacher, args.spec, args.out, workers=args.workers)
    print(
        f"tokenize: {meta['n_docs']} documents -> {meta['n_windows']} windows of "
        f"{meta['max_length']} ({meta['n_tokens']} tokens, {meta['dtype']}) -> {args.out}"
    )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tokenize",
        help="cut corpus documents into [CLS] ... [SEP] windows, packed uint16/uint32 arrays",
        description="Keys of --spec: " + ", ".join(TOKENIZE_KEYS),
    )
    p.add_argument("--corpus", required=True, help="a download-corpus output folder")
    p.add_argument("--teacher", required=True, help="a download-teacher output folder")
    p.add_argument("--spec", default="{}", help="the tokenize config section as JSON")
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--workers", type=int, default=None, help="overrides spec.workers")
    p.set_defaults(func=_cmd_tokenize)
