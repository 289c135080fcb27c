"""File readers of the task sources: csv / tsv / jsonl tables and conll token files.

Every error names the file and the line, so a bad row in a user's data is found at once.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from ..files import json_object


class Row(dict):
    """One example (the dict written to jsonl) with its provenance, kept out of the file.

    `line` is where the example starts; a conll sentence has one token per line from there on
    (`token_lines`), so an error about one tag can name its own line.
    """

    def __init__(self, fields: dict, uid: str, path: str, line: int, token_lines: bool = False):
        super().__init__(fields)
        self.uid, self.path, self.line, self.token_lines = uid, path, line, token_lines

    def line_of(self, token: int) -> int:
        return self.line + token if self.token_lines else self.line


def read_bytes(path: str | os.PathLike) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    return p.read_bytes()


def decode(data: bytes, path: str, encoding: str = "utf-8") -> str:
    # utf-8-sig: a byte-order mark (Excel's csv export) must not become part of the first header
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return data.decode(enc)
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{path}: line {line}: bytes that are not valid {encoding} "
                         f"({err.reason} at byte {err.start}); set `encoding` in the task spec"
                         ) from None
    except LookupError:
        raise ValueError(f"{path}: unknown encoding {encoding!r}") from None


def split_lines(text: str) -> list[str]:
    """Split on newlines only: str.splitlines() would also break lines at U+0085 / U+2028,
    which JSON leaves unescaped and real tweets contain."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _read_jsonl(text: str, path: str) -> tuple[list[str], list[tuple[int, dict]]]:
    records, columns = [], {}
    for i, line in enumerate(split_lines(text), 1):
        if line.strip():
            rec = json_object(line, path, i)
            columns.update(dict.fromkeys(rec))  # the union of keys, in order of appearance
            records.append((i, rec))
    return list(columns), records


def _read_delimited(text: str, path: str, delimiter: str) -> tuple[list[str], list[tuple[int, dict]]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return [], []
    except csv.Error as err:
        raise ValueError(f"{path}: line 1: {err}") from None
    records = []
    try:
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}: line {reader.line_num}: {len(row)} fields, the header "
                                 f"has {len(header)}")
            records.append((reader.line_num, dict(zip(header, row))))
    except csv.Error as err:
        raise ValueError(f"{path}: line {reader.line_num}: {err}") from None
    return header, records


def read_table(path: str, fmt: str, encoding: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """The columns of a csv / tsv / jsonl file and its records as (line number, record)."""
    text = decode(read_bytes(path), path, encoding)
    if fmt == "jsonl":
        return _read_jsonl(text, path)
    return _read_delimited(text, path, "," if fmt == "csv" else "\t")


def read_conll(path: str, encoding: str, token_col: int, tag_col: int, delimiter: str | None,
               split: str) -> list[Row]:
    """Sentences of a token-per-line file (blank line between sentences, -DOCSTART- skipped).

    Any tag set is read; whether it is BIO is decided over all splits (`minialbert.tasks.tags`)."""
    text = decode(read_bytes(path), path, encoding)
    rows: list[Row] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    # columns a line must have so that both indices exist (a negative index counts from the end)
    need = max(2, *(c + 1 if c >= 0 else -c for c in (token_col, tag_col)))

    def flush():
        if tokens:
            rows.append(Row({"tokens": list(tokens), "tags": list(tags)},
                            f"{split}:{len(rows)}", path, start, token_lines=True))
            tokens.clear()
            tags.clear()

    for i, line in enumerate(split_lines(text), 1):
        if not line.strip():
            flush()
            continue
        parts = [p.strip() for p in line.split(delimiter)] if delimiter else line.split()
        if parts[0].startswith("-DOCSTART-"):
            flush()
            continue
        if len(parts) < need:
            raise ValueError(f"{path}: line {i}: malformed token line {line!r}: expected at least "
                             f"{need} columns (token, tag) separated by "
                             f"{'whitespace' if delimiter is None else repr(delimiter)}")
        tok, tag = parts[token_col], parts[tag_col]
        if not tag or not tok:
            raise ValueError(f"{path}: line {i}: malformed token line {line!r}: empty "
                             f"{'tag' if not tag else 'token'}")
        if not tokens:
            start = i
        tokens.append(tok)
        tags.append(tag)
    flush()
    return rows
