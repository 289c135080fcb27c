"""The corpus readers: documents as `(id, text)` pairs, per format, in a deterministic order.

Local formats (`FORMATS`) read sorted paths, and records in file order within a file. Text is
decoded strictly with `encoding`; a file that is not valid in it is an error naming the file and
the byte offset, unless `fallback_encoding` is set, in which case that file (or line) is decoded
with it and remembered for the manifest. The `hf` reader streams `datasets.load_dataset`.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
from pathlib import Path
from typing import Any, Iterator

from ..files import json_object

# file names each local format reads
FORMATS = {
    "text_dir": (".txt",),
    "jsonl": (".jsonl", ".json", ".jsonl.gz", ".json.gz"),
    "text": (".txt", ".txt.gz", ".text"),
    "csv": (".csv", ".csv.gz"),
}


class Decoder:
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


def _decoded_lines(path: Path, decode: Decoder) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line incl. its newline), streaming."""
    offset = 0
    with gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            text = decode(raw, path, offset, lineno)
            if lineno == 1 and text.startswith("\ufeff"):
                text = text[1:]
            offset += len(raw)
            yield lineno, text


def _list_files(root: Path, fmt: str) -> list[Path]:
    if root.is_file():
        return [root]
    files = [p for p in root.rglob("*") if p.is_file() and p.name.endswith(FORMATS[fmt])]
    files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _join_title(title: Any, text: str) -> str:
    """`Title.\\ntext`; a document whose text is blank stays blank (skipped), whatever its title."""
    title = "" if title is None else str(title).strip()
    if not title or not text.strip():
        return text
    if title[-1] not in ".!?:;":
        title += "."
    return f"{title}\n{text}"


def _doc_id(record: dict, fallback: str) -> str:
    """The record's own `id` when it is a string or an int, else `fallback`."""
    doc_id = record.get("id")
    return str(doc_id) if isinstance(doc_id, (str, int)) else fallback


# ---------------------------------------------------------------------------------- local formats


def _read_text_dir(path: Path, rel: str, spec: dict, decode: Decoder):
    yield rel.removesuffix(".txt"), decode(path.read_bytes(), path)


def _read_jsonl(path: Path, rel: str, spec: dict, decode: Decoder):
    text_field, title_field = spec["text_field"], spec["title_field"]
    for lineno, line in _decoded_lines(path, decode):
        if not line.strip():
            continue
        obj = json_object(line, path, lineno)
        if text_field not in obj:
            raise KeyError(
                f"file {path}: line {lineno}: no field {text_field!r} "
                f"(fields: {', '.join(sorted(obj)) or 'none'})"
            )
        text = obj[text_field]
        if text is None:
            continue
        if title_field:
            text = _join_title(obj.get(title_field), str(text))
        yield _doc_id(obj, f"{rel}:{lineno}"), str(text)


def _read_text(path: Path, rel: str, spec: dict, decode: Decoder):
    """Documents are separated by blank lines."""
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


def _read_csv(path: Path, rel: str, spec: dict, decode: Decoder):
    reader = csv.DictReader(line for _, line in _decoded_lines(path, decode))
    fields = reader.fieldnames or []
    for key in (spec["text_field"], spec["title_field"]):
        if key and key not in fields:
            raise KeyError(f"file {path}: no column {key!r} (columns: {', '.join(fields)})")
    for row_no, row in enumerate(reader):
        text = row.get(spec["text_field"]) or ""
        if spec["title_field"]:
            text = _join_title(row.get(spec["title_field"]), text)
        yield f"{rel}:{row_no}", text


READERS = {"text_dir": _read_text_dir, "jsonl": _read_jsonl, "text": _read_text, "csv": _read_csv}


def read_local(spec: dict, root: Path, decode: Decoder) -> Iterator[tuple[str, str]]:
    """The documents of a folder (or one file) in `spec["format"]`; ids are relative paths."""
    read = READERS[spec["format"]]
    base = root if root.is_dir() else root.parent
    for path in _list_files(root, spec["format"]):
        yield from read(path, path.relative_to(base).as_posix(), spec, decode)


def read_hf(spec: dict) -> Iterator[tuple[str, str]]:
    """The documents of a hub dataset split, streamed (the spec's revision should be a commit)."""
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
        yield _doc_id(row, f"{spec['hf_id']}:{i}"), str(text)
