"""Exact duplicates: examples whose normalised text (every text field, or the tokens) is equal.

Normalised = NFKC, lower-case, whitespace collapsed, so a copy that differs only in case, spacing or
Unicode form still counts. Splits we carve drop duplicates first (the first occurrence in source
order stays), so no carved test example has a copy in train; splits that come with the source
(GLUE, BioBERT TSVs, the drug reviews' test file) are left as they are and their overlaps counted.
"""

from __future__ import annotations

import unicodedata

from ..near_copies import NearCopyIndex
from .readers import Row

# pairs of splits whose overlap task.json reports: (earlier, later) counts later rows found earlier
PAIRS = (("train", "test"), ("train", "dev"), ("dev", "test"))


def _normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def normalised_text(row: Row) -> str:
    if "tokens" in row:
        return _normalise(" ".join(row["tokens"]))
    # a separator no normalised text contains, so ("a b", "c") differs from ("a", "b c")
    return "\x1f".join(_normalise(row[k]) for k in ("text", "text_pair") if k in row)


def drop_duplicates(rows: list[Row]) -> tuple[list[Row], int]:
    """(`rows` without exact duplicates, how many were dropped)."""
    seen: set[str] = set()
    kept = []
    for r in rows:
        key = normalised_text(r)
        if key not in seen:
            seen.add(key)
            kept.append(r)
    return kept, len(rows) - len(kept)


def cross_split(splits: dict[str, list[Row]]) -> dict[str, int]:
    """{"train-test": n, ...}: how many rows of the later split have a copy in the earlier one;
    each extra eval split (MNLI's dev_mismatched) is compared with train."""
    keys = {split: [normalised_text(r) for r in rows] for split, rows in splits.items()}
    sets = {split: set(k) for split, k in keys.items()}
    pairs = list(PAIRS) + [("train", s) for s in splits if s not in ("train", "dev", "test")]
    return {f"{a}-{b}": sum(k in sets[a] for k in keys[b])
            for a, b in pairs if a in keys and b in keys}


def drop_near_copies(train: list[Row], held_out: list[Row]) -> tuple[list[Row], int]:
    """`train` without the rows that are near copies of a held-out row (`minialbert.near_copies`:
    another version of the same text, e.g. a revised news story), and how many were dropped."""
    if not train or not held_out:
        return train, 0
    index = NearCopyIndex()
    for row in held_out:
        index.add(normalised_text(row).split())
    near = index.find([normalised_text(row).split() for row in train])
    kept = [row for row, hits in zip(train, near) if not hits]
    return kept, len(train) - len(kept)
