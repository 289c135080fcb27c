"""`minialbert download-corpus`: a corpus (package | hf | files) as JSONL shards + manifest.json.

Documents are read by `corpus_readers`, stripped, and written `{"id", "text"}` per line,
`shard_docs` per shard, in the readers' order; empty documents are skipped and counted. A hub
dataset is read at its resolved commit, recorded in the manifest.
"""

from __future__ import annotations

import codecs
import contextlib
import json
from pathlib import Path
from typing import Iterable

from .. import settings
from ..atomic import staged_dir, write_json
from .corpus_readers import FORMATS, MAX_DOCUMENT_BYTES, Decoder, read_hf, read_local
from .sources import fill_package_values, local_source


def corpus_spec(value: str | dict | None) -> dict:
    """The `corpus` section, validated, with the checks that span several keys or need codecs."""
    spec = fill_package_values(settings.load_section("corpus", value))
    if spec["fallback_encoding"] is False:
        spec["fallback_encoding"] = None  # strict, even for a package with a fallback of its own
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
            self.close()
            name = f"shard-{len(self.shards):05d}.jsonl"
            self._fh = open(self.folder / name, "w", encoding="utf-8", newline="\n")
            self.shards.append({"file": name, "n_docs": 0})
        self._fh.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
        self.shards[-1]["n_docs"] += 1
        self.n_docs += 1
        self.n_chars += len(text)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def iter_corpus(spec: dict, decode: Decoder) -> tuple[Iterable[tuple[str, str]], str]:
    """(documents, a description of where they come from) for a validated corpus spec."""
    if spec["source"] == "hf":
        return read_hf(spec), f"dataset {spec['hf_id']!r} ({spec['hf_config']}, split {spec['split']})"
    root = local_source(spec, "corpus")
    decode.root = root if root.is_dir() else root.parent
    return read_local(spec, root, decode), str(root)


def _resolved_revision(spec: dict) -> str | None:
    """The commit a hub dataset's revision points at, so the manifest says exactly what was read."""
    if spec["source"] != "hf":
        return None
    from huggingface_hub import HfApi  # lazy: needs the network

    return getattr(HfApi().dataset_info(spec["hf_id"], revision=spec["revision"]), "sha", None)


def download_corpus(spec_value: str | dict | None, out: str | Path) -> dict:
    spec = corpus_spec(spec_value)
    out = Path(out)
    decode = Decoder(spec["encoding"], spec["fallback_encoding"])
    n_empty = 0
    resolved = _resolved_revision(spec)
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
                if len(text) > MAX_DOCUMENT_BYTES:  # the local readers stop earlier, a hub row here
                    raise ValueError(f"document {doc_id!r} of {where} is larger than "
                                     f"{MAX_DOCUMENT_BYTES >> 20} MiB, the limit for one document")
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
