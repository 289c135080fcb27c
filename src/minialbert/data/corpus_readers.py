"""The corpus readers: documents as `(id, text)` pairs, per format, in a deterministic order.

Local formats (`FORMATS`) read sorted paths, and records in file order within a file. Text is
decoded strictly with `encoding`; a file that is not valid in it is an error naming the file and
the byte offset, unless `fallback_encoding` is set, in which case that file (or line) is decoded
with it and remembered for the manifest. The `hf` reader streams `datasets.load_dataset`.

Bad input fails early and by name: a NUL character (a binary file, whatever the encoding says),
a line or a document larger than `MAX_DOCUMENT_BYTES` (read in bounded pieces, so an enormous
line cannot exhaust memory), a CSV row the csv module cannot parse.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import itertools
from pathlib import Path
from typing import Any, Iterator

from ..files import json_object

# the largest line or document a reader accepts: far above any real document (a book is a few
# MiB), far below what exhausts memory when the tokenizer expands it into ids
MAX_DOCUMENT_BYTES = 32 << 20

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
        text = self._decode(data, path, offset, line)
        if "\x00" in text:  # text never holds NUL; a binary file can still decode (or fall back)
            where = f"line {line}, " if line is not None else ""
            nul = data.find(b"\x00")
            raise ValueError(
                f"file {path}: {where}byte offset {offset + max(nul, 0)} is a NUL character: "
                f"a binary file, not text; remove it from the corpus folder"
            )
        return text

    def _decode(self, data: bytes, path: Path, offset: int, line: int | None) -> str:
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


def too_large(path: Path, what: str) -> ValueError:
    return ValueError(
        f"file {path}: {what} is larger than {MAX_DOCUMENT_BYTES >> 20} MiB, the limit for one "
        f"document (minialbert.data.corpus_readers.MAX_DOCUMENT_BYTES); split it into documents"
    )


def _decoded_lines(path: Path, decode: Decoder) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line incl. its newline), streaming, each line bounded."""
    offset = 0
    with gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb") as fh:
        for lineno in itertools.count(1):
            raw = fh.readline(MAX_DOCUMENT_BYTES + 1)
            if not raw:
                return
            if len(raw) > MAX_DOCUMENT_BYTES:
                raise too_large(path, f"line {lineno}")
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
    if path.stat().st_size > MAX_DOCUMENT_BYTES:
        raise too_large(path, "the document")
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
    index = size = start = 0
    for lineno, line in _decoded_lines(path, decode):
        if line.strip():
            start = start if buf else lineno
            buf.append(line)
            size += len(line)
            if size > MAX_DOCUMENT_BYTES:
                raise too_large(path, f"the document starting at line {start} (no blank line)")
        elif buf:
            yield f"{rel}:{index}", "".join(buf)
            index += 1
            buf, size = [], 0
    if buf:
        yield f"{rel}:{index}", "".join(buf)


def _read_csv(path: Path, rel: str, spec: dict, decode: Decoder):
    # the csv module's own cap (128 KiB per field) is far below a long document's
    csv.field_size_limit(max(csv.field_size_limit(), MAX_DOCUMENT_BYTES))
    reader = csv.DictReader(line for _, line in _decoded_lines(path, decode))
    try:
        fields = reader.fieldnames or []
        for key in (spec["text_field"], spec["title_field"]):
            if key and key not in fields:
                raise KeyError(f"file {path}: no column {key!r} (columns: {', '.join(fields)})")
        for row_no, row in enumerate(reader):
            text = row.get(spec["text_field"]) or ""
            if spec["title_field"]:
                text = _join_title(row.get(spec["title_field"]), text)
            yield f"{rel}:{row_no}", text
    except csv.Error as err:
        raise ValueError(f"file {path}: line {reader.line_num}: not valid CSV ({err})") from None


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
