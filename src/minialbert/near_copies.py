"""Near copies: two texts that share most of their word n-grams, found with numpy.

News corpora carry several versions of one story (BBC News: a revised article with a new
headline, an extended one, a second copy with one paragraph changed), so an eval article can
survive an exact-match filter as its own near twin. Two texts are near copies when the word
`NGRAM`-grams they share are at least `OVERLAP` of the grams of either one (so a text is also the
near copy of a longer one that contains most of it, and of a shorter one it contains). Measured
on BBC News against the bbc_topic dev/test articles, the corpus documents left after the exact
match fall in two groups: other stories on the same subject that reuse a background paragraph
(overlap below 0.6) and other versions of the same story (0.75 and more; 23 documents); nothing
lies between, and `OVERLAP` sits in that gap.

Words are the whitespace-separated words of the NFKC, lower-cased text. Each indexed word gets
an id, n-grams are hashed as `sum(id_j * P^j) mod 2^64`, and a query's words that no indexed
text contains cannot be part of a shared n-gram; the hash depends on no seed, so the same texts
are found in every run.
"""

from __future__ import annotations

import itertools

import numpy as np

NGRAM = 8
OVERLAP = 0.7
_POWERS = np.array([pow(0x9E3779B97F4A7C15, j, 2**64) for j in range(NGRAM)], dtype=np.uint64)
# a bitmap over a hash's top bits: most of a query's grams are in no indexed text, and one lookup
# in it is far cheaper than a binary search
_BITMAP_BITS = 22


def _grams(ids: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hash, text number) of every n-gram of the concatenated word ids of texts of `lens` words
    that stays inside its text and contains no unknown word (id 0)."""
    n = len(ids) - NGRAM + 1
    if n <= 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    hashes = np.zeros(n, dtype=np.uint64)
    for j in range(NGRAM):  # shifted views: no [n, NGRAM] temporary
        hashes += ids[j:j + n] * _POWERS[j]
    text_of = np.repeat(np.arange(len(lens)), lens)[:n]
    unknown = np.concatenate([[0], np.cumsum(ids == 0)])
    ok = (np.arange(n) + NGRAM <= np.cumsum(lens)[text_of]) & (unknown[NGRAM:] == unknown[:n])
    return hashes[ok], text_of[ok]


def _distinct(major: np.ndarray, minor: np.ndarray, n_minor: int) -> tuple[np.ndarray, ...]:
    """The distinct (major, minor) pairs of two int arrays, with how often each occurs."""
    pairs, counts = np.unique(major.astype(np.int64) * n_minor + minor, return_counts=True)
    return pairs // n_minor, pairs % n_minor, counts


class NearCopyIndex:
    """`add` the texts to look for (their words), then `find` which of them each query nearly copies."""

    def __init__(self):
        self.vocab: dict[str, int] = {}
        self._texts: list[np.ndarray] = []  # word ids per indexed text
        self._built = False

    def add(self, words: list[str]) -> int:
        """Index one text; returns its number."""
        self._texts.append(np.array([self.vocab.setdefault(w, len(self.vocab) + 1) for w in words],
                                    dtype=np.uint64))
        self._built = False
        return len(self._texts) - 1

    def _build(self) -> None:
        """The distinct hashes (sorted); for each, where its texts start in `gram_texts` and how
        many there are; and each text's number of distinct n-grams."""
        lens = np.array([len(t) for t in self._texts], dtype=np.int64)
        ids = np.concatenate(self._texts) if self._texts else np.zeros(0, dtype=np.uint64)
        hashes, texts = _grams(ids, lens)
        self.hashes, inverse = np.unique(hashes, return_inverse=True)
        gram, text, _ = _distinct(inverse, texts, max(len(self._texts), 1))
        self.gram_texts = text  # sorted by gram
        self.first = np.searchsorted(gram, np.arange(len(self.hashes)))
        self.n_texts = np.diff(np.append(self.first, len(gram)))
        self.n_grams = np.bincount(text, minlength=len(self._texts))
        self.bitmap = np.zeros(2**_BITMAP_BITS, dtype=bool)
        self.bitmap[self.hashes >> np.uint64(64 - _BITMAP_BITS)] = True
        self._built = True

    def find(self, queries: list[list[str]]) -> list[list[int]]:
        """For each query (its words), the numbers of the indexed texts it is a near copy of."""
        if not self._built:
            self._build()
        found: list[list[int]] = [[] for _ in queries]
        if not len(self.hashes):
            return found
        lens = np.array([len(q) for q in queries], dtype=np.int64)
        ids = np.fromiter(map(self.vocab.get, itertools.chain.from_iterable(queries),
                              itertools.repeat(0)), dtype=np.uint64, count=int(lens.sum()))
        hashes, query = _grams(ids, lens)
        maybe = self.bitmap[hashes >> np.uint64(64 - _BITMAP_BITS)]
        hashes, query = hashes[maybe], query[maybe]
        at = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        known = self.hashes[at] == hashes
        # a gram repeated in a query counts once
        query, gram, _ = _distinct(query[known], at[known], len(self.hashes))
        # every (query, indexed text) pair sharing a gram: expand each gram's run of texts
        n = self.n_texts[gram]
        run = np.repeat(self.first[gram] - (np.cumsum(n) - n), n) + np.arange(int(n.sum()))
        query, text, shared = _distinct(np.repeat(query, n), self.gram_texts[run], len(self._texts))
        # a query's size counts its n-gram positions: its unknown words have no id to tell apart
        n_query = np.maximum(lens - NGRAM + 1, 1)[query]
        near = shared >= OVERLAP * np.minimum(self.n_grams[text], n_query)
        for q, t in zip(query[near].tolist(), text[near].tolist()):
            found[q].append(t)
        return found
