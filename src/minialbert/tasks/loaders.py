"""The three task sources (package, files, hf) -> the rows of each split the source has."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .columns import check_label_types, column, convert_label, rows_from_records
from .hub import resolve_revision
from .packages import read_package
from .readers import Row, read_bytes, read_conll, read_table
from .spec import GLUE, GLUE_ID, option

SPLITS = ("train", "dev", "test")
EXTENSION_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


@dataclass
class Source:
    """What a source gives: train/dev/test rows (None: carve it), extra eval splits, provenance,
    the label order it fixes (a hub ClassLabel), if any, and {split: how} for splits it carved
    itself (a split by document)."""

    splits: dict[str, list[Row] | None]
    info: dict
    extra: dict[str, list[Row]] = field(default_factory=dict)
    label_order: list[str] | None = None
    carved: dict[str, str] = field(default_factory=dict)


def load_package(spec: dict) -> Source:
    shipped, info, carved = read_package(spec["dataset"], spec["seed"])
    return Source({split: shipped.get(split) for split in SPLITS}, info, carved=carved)


def _file_format(path: str, spec: dict) -> str:
    if spec.get("format") is not None:
        return spec["format"]
    ext = Path(path).suffix.lower()
    if spec["kind"] == "token_classification" and ext not in (".jsonl", ".json"):
        return "conll"
    if ext not in EXTENSION_FORMATS:
        raise ValueError(f"{path}: cannot tell the format from the extension; set "
                         f"`format` (csv, tsv, jsonl, conll)")
    return EXTENSION_FORMATS[ext]


def _conll_columns(path: str, spec: dict) -> tuple[int, int]:
    cols = option(spec, "token_column", 0), option(spec, "tag_column", -1)
    for key, v in zip(("token_column", "tag_column"), cols):
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"{path}: {key} must be a column index for conll files, got {v!r}")
    return cols


def load_files(spec: dict) -> Source:
    kind, encoding = spec["kind"], spec["encoding"]
    splits: dict[str, list[Row] | None] = dict.fromkeys(SPLITS)
    extra: dict[str, list[Row]] = {}
    files = {}
    label_values: list[tuple[str, int, Any]] = []
    paths = {split: spec.get(split) for split in SPLITS}
    paths.update(spec.get("extra_eval_splits") or {})  # MNLI-mismatched style: name -> file
    for split, path in paths.items():
        if not path:
            continue
        path = str(path)
        fmt = _file_format(path, spec)
        files[split] = {"path": path, "sha256": hashlib.sha256(read_bytes(path)).hexdigest()}
        if fmt == "conll":
            if kind != "token_classification":
                raise ValueError(f"{path}: format conll is for kind token_classification")
            tok_col, tag_col = _conll_columns(path, spec)
            rows = read_conll(path, encoding, tok_col, tag_col, spec.get("delimiter"), split)
        else:
            columns, records = read_table(path, fmt, encoding)
            rows = rows_from_records(path, split, kind, columns, records, spec, label_values)
        (splits if split in SPLITS else extra)[split] = rows
    if kind != "token_classification":
        check_label_types(label_values, option(spec, "label_column", "label"))
    return Source(splits, {"source": "files", "files": files}, extra)


def _hf_layout(spec: dict) -> tuple[str, str | None, dict, dict]:
    """(hub id, config, {split: hub split}, {extra split: hub split}) of an hf spec."""
    glue = spec.get("glue")
    if glue:
        split_map = {"train": "train", "dev": "validation", "test": "test"}
        extra_map = {}
        if glue == "mnli":
            split_map.update(dev="validation_matched", test="test_matched")
            extra_map = {"dev_mismatched": "validation_mismatched"}
        return option(spec, "hf_id", GLUE_ID), glue, split_map, extra_map
    split_map = {"train": option(spec, "train_split", "train"),
                 "dev": spec.get("dev_split"), "test": spec.get("test_split")}
    return spec["hf_id"], spec.get("hf_config"), split_map, dict(spec.get("extra_eval_splits") or {})


def _hf_token_rows(d, split: str, path: str, spec: dict) -> list[Row]:
    columns = list(d.column_names)
    tok_col = column(columns, "token_column", option(spec, "token_column", "tokens"), path)
    tag_col = column(columns, "tag_column", option(spec, "tag_column", "ner_tags"), path)
    names = getattr(getattr(d.features[tag_col], "feature", None), "names", None)
    rows = []
    for i, rec in enumerate(d):
        tags = [names[t] if names and isinstance(t, int) else str(t) for t in rec[tag_col]]
        if rec[tok_col]:
            rows.append(Row({"tokens": list(rec[tok_col]), "tags": tags}, f"{split}:{i}", path, i + 1))
    return rows


def _hf_text_rows(d, split: str, path: str, kind: str, cols: tuple) -> tuple[list[Row], list | None]:
    text_col, pair_col, label_col = cols
    columns = list(d.column_names)
    column(columns, "text_column", text_col, path)
    if pair_col:
        column(columns, "text_pair_column", pair_col, path)
    column(columns, "label_column", label_col, path)
    names = getattr(d.features[label_col], "names", None)
    rows = []
    for i, rec in enumerate(d):
        fields = {"text": str(rec[text_col])}
        if pair_col:
            fields["text_pair"] = str(rec[pair_col])
        lab = rec[label_col]
        # hidden labels (GLUE test) are -1: such rows are written without a label
        hidden = isinstance(lab, (int, float)) and lab < 0 and kind != "regression"
        if lab is not None and not hidden:
            if names and isinstance(lab, int):
                fields["label"] = names[lab]
            else:
                fields["label"] = convert_label(lab, kind, path, i + 1, label_col)
        rows.append(Row(fields, f"{split}:{i}", path, i + 1))
    return rows, list(names) if names else None


def load_hf(spec: dict) -> Source:
    import datasets

    kind, glue = spec["kind"], spec.get("glue")
    hf_id, hf_config, split_map, extra_map = _hf_layout(spec)
    if glue:
        text_cols = (*GLUE[glue][0], "label")
    else:
        text_cols = (option(spec, "text_column", "text"), spec.get("text_pair_column"),
                     option(spec, "label_column", "label"))
    revision = spec.get("revision")
    resolved = resolve_revision(hf_id, revision)
    # load the resolved commit, so the data is the one task.json names even if a branch moves
    ds = datasets.load_dataset(hf_id, hf_config, revision=resolved or revision)
    available = list(ds.keys())
    if not glue:
        if split_map["dev"] is None and "validation" in available:
            split_map["dev"] = "validation"
        if split_map["test"] is None and "test" in available:
            split_map["test"] = "test"
    where = f"{hf_id}{'/' + hf_config if hf_config else ''}"
    source = Source(dict.fromkeys(SPLITS), {"source": "hf", "hf_id": hf_id, "hf_config": hf_config,
                                            "revision": revision,
                                            "revision_resolved": resolved,
                                            "splits": {**split_map, **extra_map}})
    for split, hf_split in list(split_map.items()) + list(extra_map.items()):
        if hf_split is None:
            continue
        if hf_split not in available:
            raise ValueError(f"{where}: no split {hf_split!r} (for {split}); available splits: "
                             f"{', '.join(available)}")
        path = f"{where}:{hf_split}"
        if kind == "token_classification":
            rows = _hf_token_rows(ds[hf_split], split, path, spec)
        else:
            rows, names = _hf_text_rows(ds[hf_split], split, path, kind, text_cols)
            source.label_order = names or source.label_order
        (source.splits if split in SPLITS else source.extra)[split] = rows
    return source


LOADERS = {"package": load_package, "files": load_files, "hf": load_hf}


def load_source(spec: dict) -> Source:
    return LOADERS[spec["source"]](spec)
