"""Window arithmetic: documents' token ids -> fixed-length `[CLS] ... [SEP]` windows, with numpy.

With `C = max_length - 2` content tokens per window, windows start at token 0, stride, 2*stride,
...; a document of n tokens gives `1 + ceil(max(n - C, 0) / stride)` windows (the last one ends at
the document's end and may be shorter; a document of at most C tokens gives one window), of which
the first `max_windows_per_doc` are kept (null: all). A document with no tokens gives none. Each
window is written as `[CLS] tokens [SEP]` padded with `pad_id` to `max_length`.
"""

from __future__ import annotations

from typing import Any

import numpy as np


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
