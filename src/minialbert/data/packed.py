"""The reader side of the tokenised corpus, and the teacher's tokenizer as every stage loads it.

`PackedWindows(path)` memory-maps `input_ids.bin` (`[n_windows, max_length]`, uint16/uint32) and
`lengths.bin` (int32 `[n_windows]`) described by `meta.json` (see docs/ARCHITECTURE.md); nothing is
loaded into memory until indexed, and a pickled instance (e.g. sent to a DataLoader worker) only
carries the path.

The vocabulary fingerprint `vocab_sha256` is the sha256 of the UTF-8 bytes of the tokenizer's
vocabulary (added tokens included) written as `"<token>\\t<id>"` lines, sorted as strings and joined
with `"\\n"` (no trailing newline). `check_vocab_compatible` compares it between a tokenised corpus
and a teacher so a student is never trained on ids from another vocabulary.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..files import sha256_file
from .sources import read_json

DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
META_KEYS = (
    "n_windows", "max_length", "stride", "dtype", "vocab_size", "vocab_sha256", "pad_id", "cls_id",
    "sep_id", "mask_id", "special_ids", "n_docs", "n_tokens",
)
# special-token roles and the names tried when the tokenizer's config does not say
SPECIAL_ROLES = {
    "cls": ("[CLS]", "<s>"),
    "sep": ("[SEP]", "</s>"),
    "pad": ("[PAD]", "<pad>"),
    "mask": ("[MASK]", "<mask>"),
    "unk": ("[UNK]", "<unk>"),
}


# ----------------------------------------------------------------------------------------------
# the teacher's tokenizer


def load_teacher_tokenizer(teacher_dir: str | Path):
    """(tokenizers.Tokenizer without truncation/padding, the file it came from).

    `tokenizer.json` is used when present; otherwise transformers builds a fast tokenizer from the
    folder's local files only (never the hub).
    """
    from tokenizers import Tokenizer

    folder = Path(teacher_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"teacher folder {folder} does not exist")
    tok_file = folder / "tokenizer.json"
    if tok_file.is_file():
        try:
            tok = Tokenizer.from_file(str(tok_file))
        except Exception as err:  # noqa: BLE001 - the Rust error type is not exported
            raise ValueError(f"tokenizer {tok_file}: cannot be loaded ({err})") from None
    else:
        from transformers import AutoTokenizer

        vocab = folder / "vocab.txt"
        if not vocab.is_file():
            raise FileNotFoundError(f"teacher folder {folder} has neither tokenizer.json nor vocab.txt")
        hf_tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, use_fast=True,
                                               trust_remote_code=False)
        tok = getattr(hf_tok, "backend_tokenizer", None)
        if tok is None:
            raise ValueError(f"teacher folder {folder}: no fast tokenizer could be built")
        tok_file = vocab
    tok.no_truncation()
    tok.no_padding()
    return tok, tok_file


def vocab_sha256(tokenizer) -> str:
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    lines = sorted(f"{token}\t{idx}" for token, idx in vocab.items())
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _configured_special_tokens(folder: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):  # the latter wins
        path = folder / name
        if not path.is_file():
            continue
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        for role in SPECIAL_ROLES:
            value = cfg.get(f"{role}_token")
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                found[role] = value
    return found


def special_token_ids(tokenizer, teacher_dir: str | Path) -> dict[str, Any]:
    """{'cls_id', 'sep_id', 'pad_id', 'mask_id', 'unk_id', 'special_ids'} for a teacher tokenizer."""
    configured = _configured_special_tokens(Path(teacher_dir))
    ids: dict[str, Any] = {}
    for role, defaults in SPECIAL_ROLES.items():
        candidates = ([configured[role]] if role in configured else []) + list(defaults)
        idx = next((tokenizer.token_to_id(t) for t in candidates if tokenizer.token_to_id(t) is not None), None)
        if idx is None and role != "unk":
            raise ValueError(
                f"teacher tokenizer in {teacher_dir}: no {role} token (tried {', '.join(candidates)})"
            )
        ids[f"{role}_id"] = idx
    special = {v for v in ids.values() if v is not None}
    getter = getattr(tokenizer, "get_added_tokens_decoder", None)
    if getter is not None:
        special |= {int(i) for i, tok in getter().items() if getattr(tok, "special", False)}
    ids["special_ids"] = sorted(special)
    return ids


def tokenizer_info(teacher_dir: str | Path, tok=None) -> dict[str, Any]:
    """Everything meta.json records about the tokenizer (vocab size and hash, special ids, file);
    `tok` is the already loaded tokenizer of `teacher_dir`, if any."""
    if tok is None:
        tok, tok_file = load_teacher_tokenizer(teacher_dir)
    else:
        tok_file = Path(teacher_dir) / "tokenizer.json"
        tok_file = tok_file if tok_file.is_file() else Path(teacher_dir) / "vocab.txt"
    vocab = tok.get_vocab(with_added_tokens=True)
    info = {
        "vocab_size": max(vocab.values()) + 1,
        "vocab_sha256": vocab_sha256(tok),
        "tokenizer_file": tok_file.name,
        "tokenizer_sha256": sha256_file(tok_file),
    }
    info.update(special_token_ids(tok, teacher_dir))
    return info


# ----------------------------------------------------------------------------------------------
# the packed windows


def read_meta(path: str | Path) -> dict[str, Any]:
    meta_path = Path(path) / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no meta.json in {path} (is it a `minialbert tokenize` output?)")
    meta = read_json(meta_path, "tokenised corpus")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{meta_path}: missing key(s) {', '.join(missing)}")
    if meta["dtype"] not in DTYPES:
        raise ValueError(f"{meta_path}: dtype must be uint16 or uint32, got {meta['dtype']!r}")
    return meta


class PackedWindows:
    """Random access to the tokenised windows; `batch` gives model-ready tensors."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._meta = read_meta(self.path)
        n, t = int(self._meta["n_windows"]), int(self._meta["max_length"])
        dtype = np.dtype(DTYPES[self._meta["dtype"]])
        self._check_size("input_ids.bin", n * t * dtype.itemsize, f"{n} windows x {t} x {dtype.name}")
        self._check_size("lengths.bin", n * 4, f"{n} windows x int32")
        if n == 0:
            self.ids = np.zeros((0, t), dtype=dtype)
            self.lengths = np.zeros((0,), dtype=np.int32)
        else:
            self.ids = np.memmap(self.path / "input_ids.bin", dtype=dtype, mode="r", shape=(n, t))
            self.lengths = np.memmap(self.path / "lengths.bin", dtype=np.int32, mode="r", shape=(n,))

    def _check_size(self, name: str, expected: int, how: str) -> None:
        file = self.path / name
        if not file.is_file():
            raise FileNotFoundError(f"{file} does not exist")
        actual = file.stat().st_size
        if actual != expected:
            raise ValueError(
                f"{file}: {name} has {actual} bytes, meta.json says {expected} ({how}); "
                f"the tokenised corpus is incomplete or corrupt, rerun `minialbert tokenize`"
            )

    # pickling carries the path only (no copy of the arrays)
    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def __len__(self) -> int:
        return int(self._meta["n_windows"])

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        n = len(self)
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"PackedWindows index must be an int, got {type(i).__name__}")
        if i < -n or i >= n:
            raise IndexError(f"window {i} out of range for {n} windows")
        return np.array(self.ids[i]), int(self.lengths[i])

    def batch(self, indices: Sequence[int] | np.ndarray, trim: bool = False):
        """(input_ids LongTensor [B, T], attention_mask LongTensor [B, T]); T = max_length, or the
        longest window of the batch when `trim` is true."""
        import torch

        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"batch index out of range for {n} windows")
        ids = np.asarray(self.ids[idx], dtype=np.int64)
        lengths = np.asarray(self.lengths[idx], dtype=np.int64)
        if trim and idx.size:
            ids = ids[:, : int(lengths.max())]
        mask = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)
        return torch.from_numpy(np.ascontiguousarray(ids)), torch.from_numpy(mask)

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self._meta)

    @property
    def pad_id(self) -> int:
        return int(self._meta["pad_id"])

    @property
    def mask_id(self) -> int:
        return int(self._meta["mask_id"])

    @property
    def cls_id(self) -> int:
        return int(self._meta["cls_id"])

    @property
    def sep_id(self) -> int:
        return int(self._meta["sep_id"])

    @property
    def special_ids(self) -> list[int]:
        return [int(i) for i in self._meta["special_ids"]]

    @property
    def vocab_size(self) -> int:
        return int(self._meta["vocab_size"])

    @property
    def max_length(self) -> int:
        return int(self._meta["max_length"])

    def __repr__(self) -> str:
        return f"PackedWindows({str(self.path)!r}, n_windows={len(self)}, max_length={self.max_length})"


def check_vocab_compatible(tokens_dir: str | Path, teacher_dir: str | Path) -> dict[str, Any]:
    """Raise ValueError unless the tokenised corpus was made with the teacher's vocabulary."""
    meta = read_meta(tokens_dir)
    tok, _ = load_teacher_tokenizer(teacher_dir)
    actual = vocab_sha256(tok)
    if meta["vocab_sha256"] != actual:
        raise ValueError(
            f"vocabulary mismatch: tokens in {tokens_dir} have vocab_sha256 {meta['vocab_sha256']} "
            f"(meta.json) but the tokenizer of teacher {teacher_dir} has {actual}; "
            f"re-tokenise the corpus with this teacher"
        )
    return meta
