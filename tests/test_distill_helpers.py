"""Shared builders for the distill tests: a tiny teacher folder and a tiny tokenised corpus.

(Named test_distill_* so it is owned with the tests; it defines no tests itself.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from minialbert.files import TOKENIZER_FILES


def make_teacher(dest: Path, tokenizer_src: Path, *, hidden=32, layers=4, heads=4, intermediate=64,
                 mlm_head=True, seed=0) -> Path:
    """A tiny random BERT (BertForMaskedLM or BertModel) with the real 30522-token tokenizer."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel

    dest = Path(dest)
    if (dest / "config.json").exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=intermediate, max_position_embeddings=128)
    model = (BertForMaskedLM if mlm_head else BertModel)(cfg)
    model.save_pretrained(dest)
    for name in TOKENIZER_FILES:
        if (tokenizer_src / name).exists():
            shutil.copy(tokenizer_src / name, dest / name)
    (dest / "manifest.json").write_text(json.dumps({"source": "test", "sha256": f"tiny-{hidden}-{layers}-{mlm_head}",
                                                    "has_mlm_head": mlm_head}))
    return dest


def make_tokens(dest: Path, teacher_dir: Path, *, n_windows=64, max_length=32, seed=0, min_len=6) -> Path:
    """Random windows `[CLS] ids [SEP] pad...` in the documented packed format."""
    from minialbert.data.packed import load_teacher_tokenizer, special_token_ids, vocab_sha256

    dest = Path(dest)
    if (dest / "meta.json").exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    tok, _ = load_teacher_tokenizer(teacher_dir)
    sp = special_token_ids(tok, teacher_dir)
    rng = np.random.default_rng(seed)
    ids = np.full((n_windows, max_length), sp["pad_id"], dtype=np.uint16)
    lengths = rng.integers(min_len, max_length + 1, size=n_windows).astype(np.int32)
    lengths[: n_windows // 2] = max_length  # most windows full, as in a packed corpus
    # a small "language": ids from a narrow range so a tiny model can learn something
    for i, n in enumerate(lengths):
        body = 2000 + (rng.integers(0, 50) + np.arange(n - 2) * rng.integers(1, 4)) % 300
        ids[i, 0], ids[i, 1: n - 1], ids[i, n - 1] = sp["cls_id"], body, sp["sep_id"]
    ids.tofile(dest / "input_ids.bin")
    lengths.tofile(dest / "lengths.bin")
    meta = {
        "n_windows": n_windows, "max_length": max_length, "stride": max_length // 2, "dtype": "uint16",
        "vocab_size": 30522, "vocab_sha256": vocab_sha256(tok), "n_docs": n_windows,
        "n_tokens": int(lengths.sum()), **{k: sp[k] for k in ("pad_id", "cls_id", "sep_id", "mask_id", "special_ids")},
    }
    (dest / "meta.json").write_text(json.dumps(meta))
    return dest


TINY_STUDENT = {"embedding_size": 16, "hidden_size": 32, "num_recursions": 2, "num_attention_heads": 4,
                "intermediate_size": 64, "adapter_reduction_factor": 4, "max_position_embeddings": 128}


def student_spec(name="s", init="random", distill=True, **overrides) -> dict:
    return {"name": name, "init": init, "distill": distill, "preset": "offline-default",
            "overrides": {**TINY_STUDENT, **overrides}}


def spec(**kw) -> dict:
    base = {"steps": 6, "batch_size": 4, "warmup_steps": 1, "lr": 2e-3, "checkpoint_every": 2, "log_every": 1,
            "eval_every": 3, "precision": "fp32", "threads": 1, "tensorboard": False,
            "weights": {"mlm": 1.0, "kd": 0.0, "att": 1.0, "hid": 1.0}}
    base.update(kw)
    return base
