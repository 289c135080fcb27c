"""tokenize --exclude-task: no dev/test document of a task drawn from the corpus's source reaches the
distillation windows (real BBC data), and the normalisation that matches the two sides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from minialbert.data.corpus import download_corpus
from minialbert.data.leakage import normalise
from minialbert.near_copies import NearCopyIndex
from minialbert.data.packed import load_teacher_tokenizer
from minialbert.data.tokenize import run_tokenize
from minialbert.tasks.build import prepare_task
from minialbert.tasks.folder import write_task

PREFIX = 20  # tokens of an article that must not occur in any window
# every window of every document (no sample), so an article that is kept is found
SPEC = {"max_length": 64, "stride": 16, "max_windows_per_doc": None}


@pytest.fixture(scope="module")
def bbc(tmp_path_factory):
    """The bbc_topic task (dev/test carved from all 2,225 articles) and a real slice of the corpus:
    the raw tech articles (401), with the task's tech rows by split."""
    root = tmp_path_factory.mktemp("leakage")
    prepare_task("bbc_topic", {"dataset": "bbc_topic"}, root / "bbc_topic")
    download_corpus({"path": "bbcnews/data/tech"}, root / "tech")
    rows = {split: [json.loads(line)["text"] for line in (root / "bbc_topic" / f"{split}.jsonl").open()
                    if json.loads(line)["label"] == "tech"]
            for split in ("train", "dev", "test")}
    return root, rows


def ngrams(tokens_dir: Path, n: int) -> set[bytes]:
    """Every n-gram of token ids of the windows' content, as bytes."""
    meta = json.loads((tokens_dir / "meta.json").read_text())
    ids = np.fromfile(tokens_dir / "input_ids.bin", dtype=meta["dtype"]).reshape(-1, meta["max_length"])
    grams = np.lib.stride_tricks.sliding_window_view(ids[:, 1:], n, axis=1).reshape(-1, n)
    return {g.tobytes() for g in np.ascontiguousarray(grams)}


def prefixes(tok, texts: list[str]) -> list[bytes]:
    return [np.array(e.ids[:PREFIX], dtype=np.uint16).tobytes()
            for e in tok.encode_batch(texts, add_special_tokens=False)]


def test_no_dev_or_test_article_in_any_window(bbc, tmp_path, teacher_package_dir):
    root, rows = bbc
    assert len(rows["dev"]) > 20 and len(rows["test"]) > 20
    meta = run_tokenize(root / "tech", teacher_package_dir, SPEC, tmp_path / "clean",
                        exclude_tasks=[root / "bbc_topic"])
    control = run_tokenize(root / "tech", teacher_package_dir, SPEC, tmp_path / "leaky")
    tok = load_teacher_tokenizer(teacher_package_dir)[0]
    clean, leaky = ngrams(tmp_path / "clean", PREFIX), ngrams(tmp_path / "leaky", PREFIX)
    eval_prefixes = prefixes(tok, rows["dev"] + rows["test"])
    assert all(p in leaky for p in eval_prefixes)  # the check finds them when they are there
    assert not any(p in clean for p in eval_prefixes)
    # train articles all stay: the task itself already dropped the other versions of an eval
    # article (near copies) from its train split, so none is a near copy here
    train_dropped = sum(p not in clean for p in prefixes(tok, rows["train"]))
    assert train_dropped == 0 and meta["n_docs_near_copies"] < 10

    # the corpus keeps raw lines, the task collapses whitespace: every eval article still matched
    excluded = meta["excluded"]["bbc_topic"]
    assert excluded["dev"] >= len(rows["dev"]) and excluded["test"] >= len(rows["test"])
    assert meta["n_docs_excluded"] <= excluded["dev"] + excluded["test"]
    assert meta["n_docs"] == control["n_docs"] == 401 and meta["n_windows"] < control["n_windows"]
    assert (meta["spec"], control["n_docs_excluded"], control["excluded"]) == (control["spec"], 0, {})


def test_normalised_matching(tmp_path, teacher_package_dir):
    """NFKC, case and whitespace; token tasks; text pairs; extra eval splits; train rows kept."""
    task = {"name": "toy", "kind": "classification", "labels": ["a", "b"], "metric": "accuracy",
            "test_has_labels": True, "text_keys": ["text", "text_pair"],
            "extra_splits": ["dev_mismatched"]}
    write_task(tmp_path / "toy", task, {
        "train": [{"text": "a training document", "label": "a"}],
        "dev": [{"text": "the ﬁrst document", "text_pair": "a second one", "label": "a"}],
        "test": [{"text": "THE  third\tDocument", "label": "b"}],
        "dev_mismatched": [{"text": "Fourth", "label": "b"}],
    })
    write_task(tmp_path / "ner", {**task, "name": "ner", "kind": "token_classification",
                                  "text_keys": ["tokens"], "extra_splits": []}, {
        "train": [], "dev": [{"tokens": ["Hello", ",", "world", "!"], "tags": ["O"] * 4}], "test": [],
    })
    docs = ["The first\n\ndocument", "a second  one", "the third document", "fourth",
            "Hello, world!", "a training document", "the third document, quoted in a longer one"]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "shard-00000.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    meta = run_tokenize(corpus, teacher_package_dir, {}, tmp_path / "t",
                        exclude_tasks=[tmp_path / "toy", tmp_path / "ner"])
    assert meta["excluded"] == {"toy": {"dev": 2, "test": 1, "dev_mismatched": 1},
                                "ner": {"dev": 1, "test": 0}}
    assert (meta["n_docs"], meta["n_docs_excluded"], meta["n_windows"]) == (7, 5, 2)
    assert normalise("ＡＢＣ ﬁ\u00a0x") == normalise("abc\nfix") == "abcfix"
    with pytest.raises(ValueError, match="task 'toy' is named twice"):
        run_tokenize(corpus, teacher_package_dir, {}, tmp_path / "t2",
                     exclude_tasks=[tmp_path / "toy", tmp_path / "toy"])
    with pytest.raises(FileNotFoundError, match="task.json"):
        run_tokenize(corpus, teacher_package_dir, {}, tmp_path / "t2", exclude_tasks=[corpus])
    assert not (tmp_path / "t2").exists()


def test_near_copies():
    story = ("the minister said on monday that the new rules would come into force next year after "
             "a long consultation with industry groups and unions who had asked for more time to "
             "prepare their members for the changes which they say will cost jobs in the smaller "
             "firms that make up most of the sector and have already seen their costs rise").split()
    index = NearCopyIndex()
    assert index.add(story) == 0 and index.add("an unrelated short note about cats".split()) == 1
    assert len(story) == 61
    revised = ["new", "headline"] + story[:10] + ["tuesday"] + story[11:]  # one word changed
    extended = story + "critics said the plans did not go far enough and called for more".split()
    quoted = "in other news".split() + story[:9] + "and then something else entirely happened today".split()
    assert index.find([revised, extended, story[:30], quoted, [], story[:7]]) == [[0], [0], [0], [], [], []]
    # a repeated gram counts once: a query repeating one phrase is not a copy of the story
    assert index.find([story[:8] * 10]) == [[]]
