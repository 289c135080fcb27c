"""A `tokenizer.json` for a teacher that ships only `vocab.txt`, so every stage uses one fast tokenizer.

The file is generated from the teacher's local files (transformers' slow -> fast conversion).
Old hub checkpoints (e.g. dmis-lab/biobert-base-cased-v1.1) ship no tokenizer_config.json, and
transformers then lower-cases by default, which is wrong for a cased vocab. So when the config
does not say `do_lower_case`, it is inferred from the vocab and written into
tokenizer_config.json, so every later loader (ours and AutoTokenizer) agrees.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .sources import read_json


def vocab_is_cased(vocab_file: Path, threshold: float = 0.005) -> bool:
    """A WordPiece vocab is cased when more than `threshold` of its ordinary tokens (not `[...]`
    specials) contain an upper-case letter (bert-base-cased / BioBERT: ~20%; uncased: 0)."""
    tokens = [t.strip() for t in vocab_file.read_text(encoding="utf-8").splitlines() if t.strip()]
    ordinary = [t for t in tokens if not (t.startswith("[") and t.endswith("]"))]
    upper = sum(1 for t in ordinary if any(c.isupper() for c in t))
    return bool(ordinary) and upper / len(ordinary) > threshold


def ensure_tokenizer_json(folder: Path, max_positions: int | None) -> dict | None:
    """Generate `folder/tokenizer.json` from `vocab.txt` when it is missing.

    Returns what was done (for the manifest), or None when tokenizer.json already existed.
    """
    if (folder / "tokenizer.json").is_file():
        return None
    vocab = folder / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"teacher folder {folder} has neither tokenizer.json nor vocab.txt")
    cfg_path = folder / "tokenizer_config.json"
    cfg: dict[str, Any] = read_json(cfg_path, "teacher") if cfg_path.is_file() else {}
    inferred = "do_lower_case" not in cfg
    if inferred:
        cfg["do_lower_case"] = not vocab_is_cased(vocab)
        cfg.setdefault("tokenizer_class", "BertTokenizer")
        if max_positions:
            cfg.setdefault("model_max_length", int(max_positions))
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        str(folder), local_files_only=True, use_fast=True, do_lower_case=bool(cfg["do_lower_case"]),
        trust_remote_code=False,
    )
    backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
    if backend is None:
        raise ValueError(f"teacher folder {folder}: could not build a fast tokenizer from vocab.txt")
    backend.save(str(folder / "tokenizer.json"))
    return {"do_lower_case": bool(cfg["do_lower_case"]), "do_lower_case_inferred": inferred}
