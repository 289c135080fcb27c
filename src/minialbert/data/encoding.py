"""Encoding batches of documents into windows, in this process or in worker processes.

`workers` 1 encodes in this process and lets the Rust tokenizer spread each batch over all cores
(its own thread pool; `TOKENIZERS_PARALLELISM=false` turns that off); N > 1 uses N forked
processes, each with cores/N tokenizer threads, fed batches in order with a bounded number in
flight. Results come back in input order either way, so the output is byte-identical for every
`workers`; benchmarks/results/tokenize.md has the measurements behind the schema's default.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import multiprocessing as mp
import os
import sys
from typing import Any, Iterator

import numpy as np

from .packed import load_teacher_tokenizer
from .windows import make_windows, n_windows_for

# a batch of documents: their numbers in the corpus (the window sample's key) and their texts
Batch = tuple[np.ndarray, list[str]]
# the tokenizer and window parameters of this process (set in each worker by its initializer)
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


def _encode_batch(batch: Batch) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The unit of work: one batch (document numbers, texts) -> (windows, lengths, counts)."""
    doc_numbers, texts = batch
    tok, p = _STATE["tok"], _STATE["params"]
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    id_lists = [e.ids for e in encode(texts, add_special_tokens=False)]
    doc_lens = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
    ids = np.fromiter(
        itertools.chain.from_iterable(id_lists), dtype=p["dtype"], count=int(doc_lens.sum())
    )
    windows, lengths = make_windows(ids, doc_lens, doc_numbers, **p)
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


def _results_serial(batches: Iterator[Batch]):
    """Encode in this process (Rust threads on all cores) on two helper threads, so reading,
    converting and writing overlap with encoding (the tokenizer releases the GIL); results are
    yielded in input order."""
    global _RUST_POOL_USED
    _RUST_POOL_USED = _RUST_POOL_USED or _rust_parallelism_on()
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="tokenize") as pool:
        pending: collections.deque = collections.deque()
        try:
            for batch in batches:
                pending.append(pool.submit(_encode_batch, batch))
                if len(pending) >= 3:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


def _results_parallel(batches: Iterator[Batch], workers: int, teacher: str, params: dict):
    """Process batches in `workers` processes; yields results in input order, bounded in flight."""
    method = "fork" if "fork" in mp.get_all_start_methods() and sys.platform != "darwin" else "spawn"
    ctx = mp.get_context(method)
    threads = 1 if _RUST_POOL_USED else max(1, (os.cpu_count() or 1) // workers)
    with ctx.Pool(workers, initializer=_setup, initargs=(teacher, params, threads)) as pool:
        pending: collections.deque = collections.deque()
        for batch in batches:
            pending.append(pool.apply_async(_encode_batch, (batch,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def encoded_batches(batches: Iterator[Batch], *, workers: int, teacher: str, params: dict, tok):
    """(windows, lengths, counts) per batch of (document numbers, texts), in input order; `tok` is
    the loaded tokenizer of `teacher` (used in this process), `params` the keyword arguments of
    `windows.make_windows` after the ids."""
    if workers > 1:
        yield from _results_parallel(batches, workers, teacher, params)
        return
    _setup(teacher, params, None, tok)
    try:
        yield from _results_serial(batches)
    finally:
        _STATE.clear()
