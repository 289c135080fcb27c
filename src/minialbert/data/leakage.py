"""The documents a task evaluates on, so that the distillation corpus can leave them out.

`tokenize --exclude-task DIR` names prepared task folders (`minialbert.tasks.folder`) drawn from
the corpus's own source (`tasks.*.shares_source`). A corpus document is dropped when it is the
text of a row of one of those tasks' dev, test or extra eval splits (train rows stay: fine-tuning
sees them anyway): when its normalised text equals the row's, or when it is a near copy of it
(`near_copies`: another version of the same news story, which an exact match misses).

Normalisation: NFKC, lower-case, and every whitespace character removed. Removing (rather than
collapsing) whitespace is what lets the two sides meet whatever each did to spacing: the BBC task
collapses it while the corpus keeps the article's raw lines, and a token task's tokens, joined
with spaces, match the sentence they were cut from ("Hello , world" vs "Hello, world").
"""

from __future__ import annotations

import os
import unicodedata

from ..tasks.folder import load_task
from ..near_copies import NearCopyIndex

# the one split whose rows may stay in the corpus: fine-tuning trains on it anyway
TRAIN_SPLIT = "train"


def words(text: str) -> list[str]:
    """The NFKC, lower-cased words of a text."""
    if not text.isascii():  # ASCII is already NFKC
        text = unicodedata.normalize("NFKC", text)
    return text.lower().split()


def normalise(text: str) -> str:
    """The exact-match key of a text (see the module docstring)."""
    return "".join(words(text))


def _row_texts(row: dict, text_keys: list[str]) -> list[str]:
    texts = []
    for key in text_keys:
        value = row.get(key)
        if isinstance(value, list):  # a token task's tokens
            value = " ".join(map(str, value))
        if isinstance(value, str) and value.strip():
            texts.append(value)
    return texts


class Exclusions:
    """The eval texts of some prepared tasks; `drop(texts)` says which corpus documents are one of
    them (or a near copy) and counts them per task and split."""

    def __init__(self, task_dirs: list[str | os.PathLike]):
        self.keys: dict[str, int] = {}  # normalised text -> its number
        self.owners: list[set[tuple[str, str]]] = []  # number -> the (task, split) pairs holding it
        self.near = NearCopyIndex()
        self.counts: dict[str, dict[str, int]] = {}
        for task_dir in task_dirs:
            task, splits = load_task(task_dir)
            name = task["name"]
            if name in self.counts:
                raise ValueError(f"--exclude-task {task_dir}: task {name!r} is named twice")
            eval_splits = [s for s in splits if s != TRAIN_SPLIT]
            self.counts[name] = {split: 0 for split in eval_splits}
            text_keys = task.get("text_keys") or ["text"]
            for split in eval_splits:
                for row in splits[split]:
                    for text in _row_texts(row, text_keys):
                        self._add(text, (name, split))
        self.n_docs = self.n_near_copies = 0

    def _add(self, text: str, owner: tuple[str, str]) -> None:
        ws = words(text)
        key = "".join(ws)
        if key not in self.keys:
            self.keys[key] = self.near.add(ws)
            self.owners.append(set())
        self.owners[self.keys[key]].add(owner)

    def drop(self, texts: list[str]) -> list[bool]:
        """For each corpus document, whether it is an eval text or a near copy of one (the
        dropped ones are counted)."""
        if not self.keys:
            return [False] * len(texts)
        docs = [words(t) for t in texts]
        exact = [self.keys.get("".join(ws)) for ws in docs]
        near_of = iter(self.near.find([ws for ws, number in zip(docs, exact) if number is None]))
        dropped = []
        for number in exact:
            found = [number] if number is not None else next(near_of)
            dropped.append(bool(found))
            if found:
                self.n_docs += 1
                self.n_near_copies += number is None
                for name, split in set().union(*(self.owners[i] for i in found)):
                    self.counts[name][split] += 1
        return dropped

    def summary(self) -> dict:
        """The meta.json keys: `excluded` ({task: {split: documents dropped}}), `n_docs_excluded`
        and, of those, `n_docs_near_copies` (no exact match)."""
        return {"excluded": self.counts, "n_docs_excluded": self.n_docs,
                "n_docs_near_copies": self.n_near_copies}
