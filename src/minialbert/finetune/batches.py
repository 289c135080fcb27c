"""From a prepared task to padded batches: tokenisation, the verified cache, `Split`.

A split is stored flat (every sequence's ids end to end, plus offsets), so the cache is a single
`.npz` and a batch is padded only to its own longest sequence (dynamic padding).

The cache lives in `<task>/cache/tok-<key>.npz` (key: tokenizer hash, max_length, label_scheme).
It is written atomically, and every hit is verified against the sha256 of the task files: a
changed task file rebuilds it, never a silent stale hit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ..atomic import staged_file
from ..files import sha256_file
from ..tasks.folder import load_task, task_files
from ..tasks.splitting import subsample_indices

CACHE_VERSION = 2  # 2: sub-token scheme labels continuations with the word's tag as is (B- kept)
MEGA_BATCH = 50  # batches per length-sorted mega-batch


# --------------------------------------------------------------------------------------------
# tokenisation


def load_tokenizer(model_dir: Path):
    """The fast tokenizer saved with the model; nothing downloaded, no remote code."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{model_dir}: fine-tuning needs a fast tokenizer (tokenizer.json)")
    if tokenizer.pad_token_id is None:
        raise ValueError(f"{model_dir}: the tokenizer has no padding token")
    return tokenizer


def tokenizer_hash(tokenizer) -> str:
    """sha256 of the tokenizer's full definition (normaliser, vocab, post-processor)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError("fine-tuning needs a fast (Rust) tokenizer: tokenizer.json in the model folder")
    spec = json.loads(backend.to_str())
    spec.pop("truncation", None)  # call-time settings, not the tokenizer
    spec.pop("padding", None)
    blob = json.dumps(spec, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob + type(tokenizer).__name__.encode()).hexdigest()


def _flatten(seqs: list[list[int]], dtype) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in seqs])
    flat = np.fromiter((x for s in seqs for x in s), dtype=dtype, count=int(offsets[-1]))
    return flat, offsets


def _token_labels(enc, rows: list[dict], label2id: dict, label_scheme: str) -> dict[str, np.ndarray]:
    """Per sub-token labels `y`, the word each first sub-token starts (`widx`), gold word tags."""
    ys, widx = [], []
    for i, r in enumerate(rows):
        y, w, prev = [], [], None
        for word in enc.word_ids(i):
            if word is None:  # special tokens
                y.append(-100)
                w.append(-1)
            elif word != prev:
                y.append(label2id[r["tags"][word]])
                w.append(word)
            else:  # a continuation: ignored, or (subtoken scheme, the reference) its word's tag as is
                y.append(label2id[r["tags"][word]] if label_scheme == "subtoken" else -100)
                w.append(-1)
            prev = word
        ys.append(y)
        widx.append(w)
    out = {"y": _flatten(ys, np.int64)[0], "widx": _flatten(widx, np.int32)[0]}
    out["gold"], out["gold_offsets"] = _flatten(
        [[label2id[t] for t in r["tags"]] for r in rows], np.int32)
    return out


def tokenize_split(tokenizer, task: dict, rows: list[dict], max_length: int,
                   label_scheme: str) -> dict[str, np.ndarray]:
    """Arrays for one split: ids/offsets, token types (pairs), labels y, NER word maps."""
    kind = task["kind"]
    label2id = {name: i for i, name in enumerate(task["labels"])}
    out: dict[str, np.ndarray] = {}
    if kind == "token_classification":
        enc = tokenizer([r["tokens"] for r in rows], is_split_into_words=True, truncation=True,
                        max_length=max_length)
        out.update(_token_labels(enc, rows, label2id, label_scheme))
        has_labels = all("tags" in r for r in rows)
    else:
        texts = [r["text"] for r in rows]
        pairs = [r["text_pair"] for r in rows] if "text_pair" in task.get("text_keys", []) else None
        enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
        if pairs is not None:
            out["tt"], _ = _flatten(enc["token_type_ids"], np.int8)
        if kind == "regression":
            out["y"] = np.array([float(r.get("label", "nan")) for r in rows], dtype=np.float32)
        else:
            out["y"] = np.array([label2id[r["label"]] if "label" in r else -1 for r in rows],
                                dtype=np.int64)
        has_labels = all("label" in r for r in rows)
    out["ids"], out["offsets"] = _flatten(enc["input_ids"], np.int32)
    out["has_labels"] = np.array([has_labels])
    return out


# --------------------------------------------------------------------------------------------
# the verified cache


def _read_cache(path: Path, meta: dict) -> dict[str, dict[str, np.ndarray]] | None:
    """The cached splits when `path` holds exactly `meta`'s inputs, else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(bytes(z["meta"]).decode()) != meta:
                print(f"cache {path} is stale (task files or tokenizer changed): rebuilding", flush=True)
                return None
            data: dict[str, dict[str, np.ndarray]] = {}
            for name in z.files:
                if name != "meta":
                    split, field = name.split("/", 1)
                    data.setdefault(split, {})[field] = z[name]
            return data
    except Exception as err:  # a corrupt cache is rebuilt, never trusted
        print(f"cache {path} unreadable ({err}): rebuilding", flush=True)
        return None


def load_or_build_cache(task_dir: Path, task: dict, rows: dict | None, tokenizer, max_length: int,
                        label_scheme: str, cache_dir: Path | None = None
                        ) -> tuple[dict[str, dict[str, np.ndarray]], bool]:
    """Tokenised splits for this task and tokenizer, and whether they came from the cache."""
    tok_sha = tokenizer_hash(tokenizer)
    scheme = label_scheme if task["kind"] == "token_classification" else "-"
    key_src = json.dumps([CACHE_VERSION, tok_sha, max_length, scheme], sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    path = (Path(cache_dir) if cache_dir is not None else task_dir / "cache") / f"tok-{key}.npz"
    meta = {"version": CACHE_VERSION, "tokenizer_sha256": tok_sha, "max_length": max_length,
            "label_scheme": scheme,
            "task_sha256": {p.name: sha256_file(p) for p in task_files(task_dir)}}
    data = _read_cache(path, meta)
    if data is not None:
        return data, True
    if rows is None:
        _, rows = load_task(task_dir)
    data = {split: tokenize_split(tokenizer, task, split_rows, max_length, label_scheme)
            for split, split_rows in rows.items()}
    arrays = {f"{split}/{field}": arr for split, fields in data.items() for field, arr in fields.items()}
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    with staged_file(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return data, False


# --------------------------------------------------------------------------------------------
# batches


class Split:
    """Tokenised examples of one split, with batching and padding."""

    def __init__(self, arrays: dict[str, np.ndarray], kind: str, pad_id: int,
                 subset: list[int] | None = None):
        self.a = arrays
        self.kind = kind
        self.pad_id = pad_id
        off = arrays["offsets"]
        n = len(off) - 1
        self.index = np.arange(n) if subset is None else np.asarray(subset, dtype=np.int64)
        self.lengths = (off[1:] - off[:-1])[self.index]
        self.has_labels = bool(arrays["has_labels"][0])

    def __len__(self) -> int:
        return len(self.index)

    def train_batches(self, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
        """Length-grouped: random mega-batches sorted by length, then the batches shuffled."""
        rng = np.random.default_rng([seed, epoch])
        perm = rng.permutation(len(self))
        batches = []
        for s in range(0, len(perm), batch_size * MEGA_BATCH):
            chunk = perm[s:s + batch_size * MEGA_BATCH]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def eval_batches(self, batch_size: int) -> list[np.ndarray]:
        order = np.argsort(-self.lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    def seq(self, field: str, j: int) -> np.ndarray:
        """Example `j`'s slice of a per-token field (ids, tt, y, widx)."""
        off = self.a["offsets"]
        return self.a[field][off[j]:off[j + 1]]

    def collate(self, batch: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        rows = self.index[batch]
        width = int(self.lengths[batch].max())
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        tt = np.zeros((len(rows), width), dtype=np.int64) if "tt" in self.a else None
        per_token = self.kind == "token_classification"
        ylab = np.full((len(rows), width), -100, dtype=np.int64) if per_token else None
        for r, j in enumerate(rows):
            seq = self.seq("ids", j)
            ids[r, :len(seq)] = seq
            mask[r, :len(seq)] = 1
            if tt is not None:
                tt[r, :len(seq)] = self.seq("tt", j)
            if ylab is not None:
                ylab[r, :len(seq)] = self.seq("y", j)
        out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if tt is not None:
            out["token_type_ids"] = torch.from_numpy(tt)
        if ylab is not None:
            out["labels"] = torch.from_numpy(ylab)
        elif self.kind == "regression":
            out["labels"] = torch.from_numpy(self.a["y"][rows].astype(np.float32))
        else:
            out["labels"] = torch.from_numpy(self.a["y"][rows])
        return {k: v.to(device, non_blocking=True) for k, v in out.items()}


def task_seed(task: dict) -> int:
    """The task's own seed (task.json); folders written before it was recorded used 13."""
    return task.get("seed", 13)


def stratum_keys(arrays: dict[str, np.ndarray], kind: str) -> list[str]:
    """Per train example, the key subsamples are stratified by (the label for classification)."""
    if kind in ("classification", "pair_classification"):
        return [str(int(v)) for v in arrays["y"]]
    return [""] * (len(arrays["offsets"]) - 1)


def train_split(arrays: dict[str, np.ndarray], task: dict, pad_id: int,
                max_examples: int | None, held_out: list[int] | None = None) -> Split:
    """The train split without `held_out` (the selection slice), subsampled to `max_examples`
    (stratified by label for classification)."""
    kind = task["kind"]
    n_all = len(arrays["offsets"]) - 1
    held = set(held_out or ())
    pool = [i for i in range(n_all) if i not in held]
    subset = pool if held else None
    if max_examples and max_examples < len(pool):
        keys = stratum_keys(arrays, kind)
        chosen = subsample_indices([keys[i] for i in pool], [str(i) for i in pool], max_examples,
                                   task_seed(task), "max_train_examples")
        subset = [pool[j] for j in chosen]
    return Split(arrays, kind, pad_id, subset)
