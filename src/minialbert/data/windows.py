"""Window arithmetic: documents' token ids -> fixed-length `[CLS] ... [SEP]` windows, with numpy.

The windows are the Hugging Face tokenizer's overflow windows (`truncation=True,
return_overflowing_tokens=True, stride=stride`): with `C = max_length - 2` content tokens, two
consecutive windows of a document overlap by `stride` tokens, so windows start every `C - stride`
tokens, and the last one is the first to reach the document's end (it may be shorter). A document
of n > 0 tokens gives `1 + ceil(max(n - C, 0) / (C - stride))` windows; one with no tokens gives
none (the tokenizer would give one empty window). Each window is written as `[CLS] tokens [SEP]`
padded with `pad_id` to `max_length`.

A document with more than `cap` windows keeps `cap` of them, in document order: the first ones
(`choice="first"`) or a seeded random sample (`"random"`): the `cap` windows with the smallest
keys `splitmix64(seed, document number, window number)`. The document number is its place in the
corpus, so the sample does not depend on batching or on which process encodes the document, and
integer hashing (unlike a numpy Generator's `choice`) gives the same sample on every numpy version.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def n_windows_for(n_tokens: np.ndarray, content: int, stride: int, cap: int | None) -> np.ndarray:
    """Windows per document (vectorised); `stride` is the overlap, see the module docstring."""
    n_tokens = np.asarray(n_tokens, dtype=np.int64)
    step = content - stride
    extra = np.maximum(n_tokens - content, 0)
    nw = np.where(n_tokens > 0, 1 + (extra + step - 1) // step, 0)
    if cap is not None:
        nw = np.minimum(nw, cap)
    return nw


def _mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a bijection of uint64 that scrambles every bit."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sample_keys(seed: int, doc_numbers: np.ndarray, window_numbers: np.ndarray) -> np.ndarray:
    """Pseudo-random uint64 key per (document, window): distinct within a document."""
    per_doc = _mix64(_mix64(np.full(1, seed, dtype=np.uint64)) ^ doc_numbers.astype(np.uint64))
    return _mix64(per_doc ^ window_numbers.astype(np.uint64))


def kept_windows(
    n_full: np.ndarray, doc_numbers: np.ndarray, *, cap: int | None, choice: str, seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(document, window number) of every window kept, in document order, given each document's
    full window count `n_full`."""
    total = int(n_full.sum())
    doc_of = np.repeat(np.arange(len(n_full)), n_full)
    k = np.arange(total) - np.repeat(np.cumsum(n_full) - n_full, n_full)  # window number in its doc
    if cap is None or total == 0 or int(n_full.max()) <= cap:
        return doc_of, k
    if choice == "first":
        keep = k < cap
    else:
        # sorted by (document, key), the i-th window of the order is the k[i]-th smallest key of
        # its document, so scattering k back gives each window its rank within its document
        order = np.lexsort((sample_keys(seed, doc_numbers[doc_of], k), doc_of))
        rank = np.empty_like(k)
        rank[order] = k
        keep = rank < cap
    return doc_of[keep], k[keep]


def make_windows(
    ids: np.ndarray, doc_lens: np.ndarray, doc_numbers: np.ndarray, *, max_length: int, stride: int,
    cap: int | None, choice: str, seed: int, cls_id: int, sep_id: int, pad_id: int, dtype: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated token ids of a batch of documents -> (windows [W, max_length], lengths [W]);
    `doc_numbers` are the documents' places in the corpus (the random sample's key)."""
    content = max_length - 2
    doc_lens = np.asarray(doc_lens, dtype=np.int64)
    n_full = n_windows_for(doc_lens, content, stride, None)
    doc_of, k = kept_windows(n_full, np.asarray(doc_numbers), cap=cap, choice=choice, seed=seed)
    total = len(doc_of)
    if total == 0:
        return np.zeros((0, max_length), dtype=dtype), np.zeros((0,), dtype=np.int32)
    start = k * (content - stride)
    wlen = np.minimum(content, doc_lens[doc_of] - start)
    src = (np.cumsum(doc_lens) - doc_lens)[doc_of] + start
    cols = np.arange(content)
    valid = cols[None, :] < wlen[:, None]
    gather = np.where(valid, src[:, None] + cols[None, :], 0)
    out = np.full((total, max_length), pad_id, dtype=dtype)
    out[:, 1:-1] = np.where(valid, ids[gather], pad_id)
    out[:, 0] = cls_id
    out[np.arange(total), wlen + 1] = sep_id
    return out, (wlen + 2).astype(np.int32)
