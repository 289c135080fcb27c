"""The tag scheme of a token task: `bio` (entity-level F1) or `plain` (every tag a class).

`tag_scheme: null` infers it over every split: `bio` when every tag is O / B-X / I-X / E-X / S-X,
`plain` when no tag carries a BIO marker (POS, chunk or morphology tags). A set with both
("B-PER" next to "NOUN") is almost always a data error, so it fails unless the spec says
`tag_scheme: plain`; `tag_scheme: bio` fails on the first tag that is not BIO.
"""

from __future__ import annotations

from typing import Callable, Iterator

from ..metrics import BIO_TAG_RE
from .readers import Row

BIO_FORM = "O, B-X, I-X, E-X or S-X"


def _tags(splits: dict[str, list[Row]]) -> Iterator[tuple[Row, int, str]]:
    for rows in splits.values():
        for r in rows:
            for j, t in enumerate(r["tags"]):
                yield r, j, t


def _first(splits: dict[str, list[Row]], wanted: Callable[[str], bool]):
    return next(((r, j, t) for r, j, t in _tags(splits) if wanted(t)), None)


def _is_marked(tag: str) -> bool:
    """A BIO tag other than O: the B/I/E/S marker says the set is meant as BIO."""
    return tag != "O" and bool(BIO_TAG_RE.match(tag))


def tag_scheme(where: str, given: str | None, splits: dict[str, list[Row]]) -> str:
    """The scheme of the task's tags (`given` is the spec's `tag_scheme`); errors name the line."""
    if given == "plain":
        return "plain"
    other = _first(splits, lambda t: not BIO_TAG_RE.match(t))
    if other is None:
        return "bio"
    r, j, t = other
    if given == "bio":
        raise ValueError(f"{r.path}: line {r.line_of(j)}: tag {t!r} is not a BIO tag ({BIO_FORM}) "
                         f"but {where}.tag_scheme is bio")
    marked = _first(splits, _is_marked)
    if marked is None:
        return "plain"
    mr, mj, mt = marked
    raise ValueError(f"{r.path}: line {r.line_of(j)}: tag {t!r} is not a BIO tag, but "
                     f"{mr.path} line {mr.line_of(mj)} has the BIO tag {mt!r}: the tag set mixes "
                     f"schemes; fix the tags, or set {where}.tag_scheme: plain to score every tag "
                     f"as a class")
