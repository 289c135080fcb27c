"""Deterministic splitting and subsampling: examples are ordered by sha256(seed, purpose, id).

The hash, unlike a seeded RNG, does not depend on library versions or on the other examples, so a
split is reproducible anywhere. Classification is stratified by label, and every label keeps at
least one train example.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict

from .readers import Row

CLASSIFICATION = ("classification", "pair_classification")


def _hash_key(seed: int, purpose: str, uid: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{purpose}\x00{uid}".encode()).digest()


def _group_key(row: Row, kind: str) -> str:
    return str(row["label"]) if kind in CLASSIFICATION and "label" in row else ""


def _groups(keys: list[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        groups[k].append(i)
    return groups


def _takes(n: int, fractions: dict[str, float], stratified: bool) -> dict[str, int]:
    """How many of a group of `n` examples each carved split takes (the rest stay in train)."""
    takes, pos = {}, 0
    for name, frac in fractions.items():
        take = int(math.floor(n * frac + 0.5))  # round half up
        if stratified:
            take = min(take, n - 1 - pos)  # every label keeps a train example
        take = max(0, min(take, n - pos))
        takes[name] = take
        pos += take
    return takes


def _stratified(n_groups: int, kind: str) -> bool:
    return n_groups > 1 or kind in CLASSIFICATION


def needed_to_carve(rows: list[Row], fractions: dict[str, float], kind: str,
                    split: str) -> tuple[int, int]:
    """(examples a group needs so that `split` gets one, examples the largest group has); groups
    are labels for classification, else the whole data."""
    sizes = [len(g) for g in _groups([_group_key(r, kind) for r in rows]).values()]
    stratified = _stratified(len(sizes), kind)
    n = max(1, math.ceil(0.5 / fractions[split]) - 1)
    while _takes(n, fractions, stratified)[split] < 1:
        n += 1
    return n, max(sizes, default=0)


def carve(rows: list[Row], fractions: dict[str, float], seed: int, kind: str) -> dict[str, list[Row]]:
    """Split `rows` into {name: rows} for each fraction, the rest staying in "train"."""
    groups = _groups([_group_key(r, kind) for r in rows])
    assign: dict[int, str] = {}
    stratified = _stratified(len(groups), kind)
    for key in sorted(groups):
        idx = sorted(groups[key], key=lambda i: _hash_key(seed, "split", rows[i].uid))
        pos = 0
        for name, take in _takes(len(idx), fractions, stratified).items():
            for i in idx[pos:pos + take]:
                assign[i] = name
            pos += take
    out = {"train": [], **{name: [] for name in fractions}}
    for i, r in enumerate(rows):
        out[assign.get(i, "train")].append(r)
    return out


def carve_ids(ids: list[str], counts: dict[str, int], seed: int, purpose: str) -> dict[str, str]:
    """{id: split}: `counts[split]` ids for each split in hash order, the rest "train" (a split by
    document, where examples are pairs of documents)."""
    order = sorted(ids, key=lambda u: _hash_key(seed, purpose, u))
    assign, pos = {}, 0
    for name, k in counts.items():
        assign.update((u, name) for u in order[pos:pos + k])
        pos += k
    return {u: assign.get(u, "train") for u in ids}


def subsample_indices(keys: list[str], uids: list[str], n: int, seed: int, purpose: str) -> list[int]:
    """Indices (sorted) of a deterministic subsample of size `n`, proportional per key
    (largest remainder; every key keeps one example when n allows)."""
    if n >= len(keys):
        return list(range(len(keys)))
    groups = _groups(keys)
    order = sorted(groups)
    quota = {k: n * len(groups[k]) / len(keys) for k in order}
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


def subsample(rows: list[Row], n: int | None, seed: int, kind: str, purpose: str) -> list[Row]:
    """At most `n` rows (all when `n` is None), stratified by label for classification."""
    if n is None or n >= len(rows):
        return rows
    keys = [_group_key(r, kind) for r in rows]
    return [rows[i] for i in subsample_indices(keys, [r.uid for r in rows], n, seed, purpose)]
