"""Task preparation: package datasets (documented counts, determinism), user files, validation."""

from __future__ import annotations

import importlib.util
import json
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from minialbert.tasks import packages
from minialbert.tasks.build import prepare_task
from minialbert.cli import main as cli_main


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def normalised(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def labels_overall(folder: Path) -> Counter:
    return Counter(r["label"] for s in ("train", "dev", "test") for r in read_jsonl(folder / f"{s}.jsonl"))


# --------------------------------------------------------------------------------------------
# package datasets of the offline default (docs/method.md, "The offline default")


@pytest.mark.parametrize("dataset", ["bbc_topic", "tweet_sentiment", "drug_review", "wnut16"])
def test_package_task_counts_and_determinism(tmp_path, dataset):
    spec = {"source": "package", "dataset": dataset}
    task = prepare_task(dataset, spec, tmp_path / "a")
    counts = task["counts"]
    assert set(counts) == {"train", "dev", "test"} and all(counts.values())
    total = sum(counts.values())
    dropped = task["duplicates"]["dropped"]  # exact duplicates go before carving (test_task_inputs)
    # near copies (other versions of a carved dev/test story) leave train after carving
    near = task["duplicates"].get("near_copies_dropped_from_train", 0)
    if dataset == "bbc_topic":
        assert total + dropped + near == 2225 and dropped == 101 and near == 23
        # stratified: every split has every topic in proportion
        assert task["label_counts"]["test"] == {"business": 50, "entertainment": 37,
                                                "politics": 40, "sports": 50, "tech": 35}
        # 7 of the 223 test articles had a copy in train before duplicates were dropped: none now
        train = {normalised(r["text"]) for r in read_jsonl(tmp_path / "a" / "train.jsonl")}
        assert not [r for r in read_jsonl(tmp_path / "a" / "test.jsonl")
                    if normalised(r["text"]) in train]
        assert task["duplicates"]["cross_split"] == {"train-test": 0, "train-dev": 0, "dev-test": 0}
    elif dataset == "tweet_sentiment":
        assert total + dropped + near == 38158 and dropped == 955 and near > 0
        # retweets and other near copies of a dev/test tweet leave train
        assert labels_overall(tmp_path / "a") == {"negative": 15564, "neutral": 13989,
                                                  "positive": 6711}
    elif dataset == "drug_review":
        assert counts["train"] + counts["dev"] == 600 and counts["test"] == 379
        assert labels_overall(tmp_path / "a") == {"positive": 633, "negative": 256, "neutral": 90}
        # the package's own test split is kept as it is; its one copy of a train review is counted
        assert task["duplicates"] == {"dropped": 0, "near_copies_dropped_from_train": 0, "cross_split": {
            "train-test": 1, "train-dev": 0, "dev-test": 0}}
        text = read_jsonl(tmp_path / "a" / "test.jsonl")[0]["text"]
        assert "&#039;" not in text and not text.startswith('"')
    else:
        assert total + dropped + near == 2394 and dropped == 99
        assert sum(task["n_tokens"].values()) == 44251  # 46469 before duplicates and near copies go
        assert "O" in task["labels"] and "B-person" in task["labels"]
        assert task["metric"] == "f1" and task["text_keys"] == ["tokens"]
        assert task["tag_scheme"] == "bio"
    assert task["kind"] == ("token_classification" if dataset == "wnut16" else "classification")
    assert task["test_has_labels"] is True
    on_disk = json.loads((tmp_path / "a" / "task.json").read_text())
    assert on_disk["counts"] == counts and on_disk["labels"] == sorted(on_disk["labels"])
    # rerun: byte-identical output
    prepare_task(dataset, spec, tmp_path / "b")
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")


def test_max_train_max_eval_and_seed(tmp_path):
    spec = {"source": "package", "dataset": "bbc_topic", "max_train": 50, "max_eval": 20}
    task = prepare_task("bbc", spec, tmp_path / "a")
    assert task["counts"] == {"train": 50, "dev": 20, "test": 20}
    assert len(task["label_counts"]["train"]) == 5  # stratified subsample keeps every topic
    other = prepare_task("bbc", {**spec, "seed": 14}, tmp_path / "b")
    assert other["counts"] == task["counts"]
    assert (tmp_path / "a" / "test.jsonl").read_bytes() != (tmp_path / "b" / "test.jsonl").read_bytes()


# --------------------------------------------------------------------------------------------
# user files


def write(path: Path, text: str, encoding: str = "utf-8") -> str:
    path.write_bytes(text.encode(encoding))
    return str(path)


def csv_rows(n: int, labels=("pos", "neg"), start: int = 0) -> str:
    return "".join(f"sentence number {i},{labels[i % len(labels)]}\n" for i in range(start, start + n))


def test_user_csv_pair_regression(tmp_path):
    rows = "".join(f'"first {i}","second, {i}",{i / 10:.1f}\n' for i in range(30))
    train = write(tmp_path / "train.csv", "s1,s2,score\n" + rows)
    spec = {"source": "files", "kind": "regression", "train": train, "text_column": "s1",
            "text_pair_column": "s2", "label_column": "score", "dev_fraction": 0.2,
            "test_fraction": 0.2}
    task = prepare_task("pairs", spec, tmp_path / "out")
    assert task["kind"] == "regression" and task["labels"] == []
    assert task["counts"] == {"train": 18, "dev": 6, "test": 6}
    assert task["text_keys"] == ["text", "text_pair"] and task["metric"] == "pearson"
    row = read_jsonl(tmp_path / "out" / "dev.jsonl")[0]
    assert set(row) == {"text", "text_pair", "label"} and isinstance(row["label"], float)
    assert row["text_pair"].startswith("second, ")


def test_user_tsv_with_given_splits_and_label_list(tmp_path):
    header = "text\tlabel\n"
    spec = {"source": "files", "kind": "classification",
            "train": write(tmp_path / "tr.tsv", header + csv_rows(10).replace(",", "\t")),
            "dev": write(tmp_path / "dv.tsv", header + csv_rows(4).replace(",", "\t")),
            "test": write(tmp_path / "te.tsv", header + csv_rows(4).replace(",", "\t")),
            "label_list": ["neg", "pos"]}
    task = prepare_task("t", spec, tmp_path / "out")
    assert task["counts"] == {"train": 10, "dev": 4, "test": 4}
    assert task["labels"] == ["neg", "pos"] and "f1" in task["metrics"]
    assert task["carved"] == {}


def test_user_jsonl_pair_classification_numeric_labels(tmp_path):
    lines = [json.dumps({"a": f"q{i}", "b": f"r{i}", "y": i % 3}) for i in range(30)]
    spec = {"source": "files", "kind": "pair_classification",
            "train": write(tmp_path / "train.jsonl", "\n".join(lines) + "\n"),
            "text_column": "a", "text_pair_column": "b", "label_column": "y"}
    task = prepare_task("nli", spec, tmp_path / "out")
    assert task["labels"] == ["0", "1", "2"]
    assert read_jsonl(tmp_path / "out" / "train.jsonl")[0]["label"] in {"0", "1", "2"}


def test_user_conll(tmp_path):
    sent = "EU\tB-ORG\nrejects\tO\nGerman\tB-MISC\ncall\tO\n"
    # 20 distinct sentences (exact copies would be dropped before carving)
    body = "\n".join(sent + (f"{i}\tO\n" if i else "") for i in range(20))
    path = write(tmp_path / "train.tsv", "-DOCSTART-\tO\n\n" + body)
    task = prepare_task("ner", {"source": "files", "format": "conll", "train": path},
                              tmp_path / "out")
    assert task["kind"] == "token_classification"
    assert sum(task["counts"].values()) == 20
    # a full B/I pair per type even though no I- tag occurs
    assert task["labels"] == ["B-MISC", "B-ORG", "I-MISC", "I-ORG", "O"]
    assert read_jsonl(tmp_path / "out" / "train.jsonl")[0] == {
        "tokens": ["EU", "rejects", "German", "call"], "tags": ["B-ORG", "O", "B-MISC", "O"]}


# --------------------------------------------------------------------------------------------
# errors: clear, naming the file and column / line, and no output left behind


def expect_error(tmp_path, spec, *fragments, exc=ValueError):
    out = tmp_path / "out"
    with pytest.raises(exc) as info:
        prepare_task("t", spec, out)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging debris
    return str(info.value)


def test_error_wrong_column_names(tmp_path):
    train = write(tmp_path / "train.csv", "sentence,label\n" + csv_rows(10))
    expect_error(tmp_path, {"source": "files", "kind": "classification", "train": train},
                 "train.csv", "'text'", "available columns: sentence, label")
    expect_error(tmp_path, {"source": "files", "kind": "classification", "train": train,
                            "text_column": "sentence", "label_column": "gold"},
                 "train.csv", "'gold'", "label_column")


def test_error_unseen_label(tmp_path):
    spec = {"source": "files", "kind": "classification",
            "train": write(tmp_path / "train.csv", "text,label\n" + csv_rows(10)),
            "dev": write(tmp_path / "dev.csv", "text,label\n" + csv_rows(4)),
            "test": write(tmp_path / "test.csv", "text,label\n" + csv_rows(4, ("pos", "meh")))}
    expect_error(tmp_path, spec, "test.csv", "line 3", "'meh'", "never occurs in the train split")


def test_error_empty_split(tmp_path):
    spec = {"source": "files", "kind": "classification",
            "train": write(tmp_path / "train.csv", "text,label\n" + csv_rows(10)),
            "dev": write(tmp_path / "dev.csv", "text,label\n")}
    expect_error(tmp_path, spec, "dev.csv", "dev split is empty")
    # too little data to carve a dev split from
    spec = {"source": "files", "kind": "classification",
            "train": write(tmp_path / "small.csv", "text,label\n" + csv_rows(3))}
    expect_error(tmp_path, spec, "split is empty", "carved from train")


def test_error_mixed_type_labels(tmp_path):
    body = "text,label\n" + "a,1\nb,2\nc,3\nd,positive\n" * 3
    spec = {"source": "files", "kind": "classification",
            "train": write(tmp_path / "train.csv", body)}
    expect_error(tmp_path, spec, "label column 'label' mixes numbers and strings", "train.csv",
                 "line 5", "'positive'")
    lines = [json.dumps({"text": "x", "label": v}) for v in (1, 2, "two", 1, 2, 1)]
    spec = {"source": "files", "kind": "classification",
            "train": write(tmp_path / "train.jsonl", "\n".join(lines))}
    expect_error(tmp_path, spec, "mixes numbers and strings", "train.jsonl", "line 3")


def test_error_regression_label_not_numeric(tmp_path):
    spec = {"source": "files", "kind": "regression",
            "train": write(tmp_path / "train.csv", "text,label\n" + "a,0.5\nb,high\n")}
    # all strings after one number -> mixed; a pure-string column says "must be numeric"
    expect_error(tmp_path, spec, "train.csv")
    spec["train"] = write(tmp_path / "t2.csv", "text,label\n" + "a,low\nb,high\n")
    expect_error(tmp_path, spec, "t2.csv", "line 2", "must be numeric")


def test_error_undecodable_bytes(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"text,label\nfine,pos\nbad \xff\xfe byte,neg\n")
    expect_error(tmp_path, {"source": "files", "kind": "classification", "train": str(path)},
                 "train.csv", "line 3", "utf-8", "encoding")


def test_error_malformed_conll(tmp_path):
    path = write(tmp_path / "train.tsv", "EU\tB-ORG\nrejects\n\nok\tO\n")
    expect_error(tmp_path, {"source": "files", "format": "conll", "train": path},
                 "train.tsv", "line 2", "malformed")
    path = write(tmp_path / "bad_tag.tsv", "EU\tB-ORG\nrejects\tX-Y\n")
    expect_error(tmp_path, {"source": "files", "format": "conll", "train": path},
                 "bad_tag.tsv", "line 2", "'X-Y'")


def test_error_spec_keys(tmp_path):
    expect_error(tmp_path, {"source": "package", "dataset": "bbc_topic", "max_trian": 5},
                 "unknown key 'max_trian'")
    expect_error(tmp_path, {"source": "package", "dataset": "imdb"}, "dataset", "'imdb'")
    expect_error(tmp_path, {"source": "package", "dataset": "bbc_topic", "kind": "regression"},
                 "classification")
    expect_error(tmp_path, {"source": "files", "train": "x.csv"}, "kind is required")
    expect_error(tmp_path, {"source": "files", "kind": "classification",
                            "train": str(tmp_path / "nope.csv")}, "nope.csv",
                 exc=FileNotFoundError)
    expect_error(tmp_path, {"source": "package", "dataset": "bbc_topic", "dev_fraction": 0.6,
                            "test_fraction": 0.5}, "below 1")


def test_hf_argument_validation(tmp_path):
    # no network: these fail before anything is loaded
    expect_error(tmp_path, {"source": "hf", "glue": "wnli"}, "glue", "'wnli'")
    expect_error(tmp_path, {"source": "hf", "kind": "classification"}, "hf_id")
    expect_error(tmp_path, {"source": "hf", "hf_id": "x/y"}, "kind is required")
    expect_error(tmp_path, {"source": "hf", "glue": "stsb", "kind": "classification"}, "regression")
    expect_error(tmp_path, {"source": "hf", "glue": "cola", "dataset": "x"}, "unknown key 'dataset'")
    expect_error(tmp_path, {"source": "hf", "glue": "cola", "metric": "pearson"}, "metric")


def test_hf_glue_code_path_with_a_stand_in_hub(tmp_path, monkeypatch):
    """The hf loader on an in-memory DatasetDict shaped like GLUE MNLI (no network)."""
    datasets = pytest.importorskip("datasets")
    names = ["entailment", "neutral", "contradiction"]
    features = datasets.Features({"premise": datasets.Value("string"),
                                  "hypothesis": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=names),
                                  "idx": datasets.Value("int32")})

    def split(n, hidden=False):
        return datasets.Dataset.from_dict(
            {"premise": [f"p{i}" for i in range(n)], "hypothesis": [f"h{i}" for i in range(n)],
             "label": [-1 if hidden else i % 3 for i in range(n)], "idx": list(range(n))},
            features=features)

    fake = datasets.DatasetDict({"train": split(12), "validation_matched": split(6),
                                 "validation_mismatched": split(6), "test_matched": split(5, True)})
    calls = []

    def load_dataset(path, name=None, revision=None, **kw):
        calls.append((path, name, revision))
        return fake

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    task = prepare_task("mnli", {"source": "hf", "glue": "mnli", "revision": "abc"},
                              tmp_path / "mnli")
    assert calls == [("nyu-mll/glue", "mnli", "abc")]
    assert task["labels"] == names  # the dataset's own order, not sorted
    assert task["test_has_labels"] is False and task["extra_splits"] == ["dev_mismatched"]
    assert task["counts"] == {"train": 12, "dev": 6, "test": 5, "dev_mismatched": 6}
    assert "label" not in read_jsonl(tmp_path / "mnli" / "test.jsonl")[0]
    assert read_jsonl(tmp_path / "mnli" / "dev_mismatched.jsonl")[0]["label"] == "entailment"


def test_cli_prepare_task(tmp_path, capsys):
    out = tmp_path / "bbc"
    spec = json.dumps({"source": "package", "dataset": "bbc_topic", "max_train": 20, "max_eval": 10})
    assert cli_main(["prepare-task", "--name", "bbc", "--spec", spec, "--out", str(out)]) == 0
    assert json.loads((out / "task.json").read_text())["counts"]["train"] == 20
    with pytest.raises(SystemExit) as info:
        cli_main(["prepare-task", "--name", "bbc", "--spec", '{"source": "package", "dataset": 1',
                  "--out", str(tmp_path / "x")])
    assert info.value.code == 1
    assert "tasks.bbc: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_error_unseen_entity_type_in_given_ner_files(tmp_path):
    spec = {"source": "files", "format": "conll",
            "train": write(tmp_path / "train.tsv", "John\tB-PER\nruns\tO\n\n" * 3),
            "dev": write(tmp_path / "dev.tsv", "John\tB-PER\nruns\tO\n"),
            "test": write(tmp_path / "test.tsv", "Ann\tB-PER\n\nin\tO\nParis\tB-LOC\n")}
    expect_error(tmp_path, spec, "test.tsv", "line 3", "'LOC'", "never occurs in the train split")


# --------------------------------------------------------------------------------------------
# exact duplicates (normalised text: NFKC, lower-case, whitespace collapsed)


def test_carved_splits_drop_duplicates_first(tmp_path):
    # 30 distinct sentences, then copies differing only in case, spacing or Unicode form
    rows = csv_rows(30)
    copies = "SENTENCE number 3,pos\n  sentence   number 4 ,neg\nｓｅｎｔｅｎｃｅ number 5,pos\n"
    train = write(tmp_path / "train.csv", "text,label\n" + rows + copies)
    task = prepare_task("t", {"source": "files", "kind": "classification", "train": train},
                        tmp_path / "out")
    assert task["duplicates"] == {"dropped": 3, "near_copies_dropped_from_train": 0, "cross_split": {
        "train-test": 0, "train-dev": 0, "dev-test": 0}}
    assert sum(task["counts"].values()) == 30
    texts = [r["text"] for s in ("train", "dev", "test") for r in read_jsonl(tmp_path / "out" / f"{s}.jsonl")]
    assert "sentence number 3" in texts and "SENTENCE number 3" not in texts  # the first stays


def test_given_splits_are_kept_and_their_overlaps_counted(tmp_path):
    header = "text,label\n"
    spec = {"source": "files", "kind": "classification",
            "train": write(tmp_path / "tr.csv", header + csv_rows(10)),
            "dev": write(tmp_path / "dv.csv", header + csv_rows(4, start=8)),  # 8, 9 in train
            "test": write(tmp_path / "te.csv", header + "Sentence Number 1,neg\n" + csv_rows(3, start=9))}
    task = prepare_task("t", spec, tmp_path / "out")
    assert task["counts"] == {"train": 10, "dev": 4, "test": 4}  # official splits unchanged
    # test: "Sentence Number 1" and 9 are in train; 9, 10, 11 are in dev
    assert task["duplicates"] == {"dropped": 0, "near_copies_dropped_from_train": 0, "cross_split": {
        "train-test": 2, "train-dev": 2, "dev-test": 3}}


# --------------------------------------------------------------------------------------------
# token tasks with any tag set


def test_plain_tag_set_is_scored_per_tag(tmp_path):
    sents = [f"The\tDET\ndog\tNOUN\nran\tVERB\n{i}\tNUM\n" for i in range(20)]
    path = write(tmp_path / "pos.conll", "\n".join(sents))
    task = prepare_task("pos", {"source": "files", "format": "conll", "train": path},
                        tmp_path / "pos")
    assert task["tag_scheme"] == "plain"
    assert task["labels"] == ["DET", "NOUN", "NUM", "VERB"]  # no B-/I- completion
    assert task["metric"] == "macro_f1" and task["metrics"] == ["macro_f1", "accuracy"]
    # BIO-looking tags scored as plain classes on request; accuracy can be the selection metric
    bio = write(tmp_path / "ner.conll", "\n".join(f"Ann\tB-PER\nsaw\tO\n{i}\tO\n" for i in range(20)))
    task = prepare_task("ner", {"source": "files", "format": "conll", "train": bio,
                                "tag_scheme": "plain", "metric": "accuracy"}, tmp_path / "ner")
    assert task["tag_scheme"] == "plain" and task["labels"] == ["B-PER", "O"]
    assert task["metrics"] == ["accuracy", "macro_f1"]
    expect_error(tmp_path, {"source": "files", "format": "conll", "train": path, "metric": "f1",
                            "tag_scheme": "plain"}, "tasks.t.metric", "'f1'")
    expect_error(tmp_path, {"source": "package", "dataset": "bbc_topic", "tag_scheme": "plain"},
                 "tasks.t.tag_scheme", "token_classification")


# --------------------------------------------------------------------------------------------
# hub revisions: resolved to a commit, recorded, loaded; a pinned sha must match (no network)


def fake_hub(monkeypatch, resolved: str):
    datasets = pytest.importorskip("datasets")
    huggingface_hub = pytest.importorskip("huggingface_hub")
    asked, loaded = [], []

    class FakeApi:
        def dataset_info(self, repo_id, revision=None, **kw):
            asked.append((repo_id, revision))
            return type("Info", (), {"sha": resolved})()

    def load_dataset(path, name=None, revision=None, **kw):
        loaded.append(revision)
        split = datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(12)],
                                            "label": [i % 2 for i in range(12)]})
        return datasets.DatasetDict({"train": split, "validation": split.select(range(4)),
                                     "test": split.select(range(4, 8))})

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return asked, loaded


def test_hf_revision_resolved_recorded_and_loaded(tmp_path, monkeypatch):
    sha = "0123456789abcdef" * 2 + "01234567"
    asked, loaded = fake_hub(monkeypatch, sha)
    spec = {"source": "hf", "hf_id": "me/data", "kind": "classification", "revision": "main"}
    task = prepare_task("t", spec, tmp_path / "out")
    assert asked == [("me/data", "main")] and loaded == [sha]
    assert task["source"]["revision"] == "main" and task["source"]["revision_resolved"] == sha
    assert json.loads((tmp_path / "out" / "task.json").read_text())["source"]["revision_resolved"] == sha


def test_hf_pinned_revision_must_match(tmp_path, monkeypatch):
    pinned, other = "a" * 40, "b" * 40
    fake_hub(monkeypatch, other)
    spec = {"source": "hf", "hf_id": "me/data", "kind": "classification", "revision": pinned}
    expect_error(tmp_path, spec, "me/data", pinned, other, "revision")


def test_hf_pinned_revision_offline_is_taken_as_is(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    from huggingface_hub.errors import OfflineModeIsEnabled
    import huggingface_hub

    class OfflineApi:
        def dataset_info(self, *a, **kw):
            raise OfflineModeIsEnabled("offline")

    loaded = []
    split = datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(12)],
                                        "label": [i % 2 for i in range(12)]})
    monkeypatch.setattr(huggingface_hub, "HfApi", OfflineApi)
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda path, name=None, revision=None, **kw:
                        loaded.append(revision) or datasets.DatasetDict({"train": split}))
    pinned = "c" * 40
    task = prepare_task("t", {"source": "hf", "hf_id": "me/data", "kind": "classification",
                              "revision": pinned}, tmp_path / "out")
    assert loaded == [pinned] and task["source"]["revision_resolved"] == pinned


# --------------------------------------------------------------------------------------------
# lee_similarity: Lee et al. document-similarity pairs from gensim's test data, split by document


def fake_gensim(root: Path, n_docs: int) -> Path:
    data = root / "gensim" / "test" / "test_data"
    data.mkdir(parents=True)
    (data / "lee.cor").write_bytes(b"".join(f"Article {i} costs \xa3{i}.\n".encode("cp1252")
                                            for i in range(n_docs)))
    matrix = [[1.0 if i == j else (0.0 if j < i else round(0.2 + 0.8 * ((i * j) % 7) / 6, 4))
               for j in range(n_docs)] for i in range(n_docs)]
    (data / "similarities0-1.txt").write_text("\n".join("\t".join(map(str, r)) for r in matrix))
    return root / "gensim"


def assert_split_by_document(splits: dict) -> None:
    docs = {s: {r[k] for r in rows for k in ("text", "text_pair")} for s, rows in splits.items()}
    assert not docs["train"] & docs["dev"] and not docs["train"] & docs["test"]
    assert not docs["dev"] & docs["test"]


def test_lee_similarity_reader_splits_by_document(tmp_path, monkeypatch):
    root = fake_gensim(tmp_path, 25)
    monkeypatch.setattr(packages, "package_root", lambda name: root)
    splits, info, carved = packages.read_package("lee_similarity", 13)
    # 25 articles: 7 dev, 15 test, 3 train; only pairs inside one split are kept
    assert {s: len(rows) for s, rows in splits.items()} == {"train": 3, "dev": 21, "test": 105}
    assert_split_by_document(splits)
    row = splits["test"][0]
    assert set(row) == {"text", "text_pair", "label"} and 0.2 <= row["label"] <= 1.0
    assert "£" in row["text"]  # the Windows-1252 pound sign of the real file
    assert carved["test"].startswith("documents (15 of 25")
    assert info["package"] == "gensim"
    other, _, _ = packages.read_package("lee_similarity", 14)
    assert other["test"] != splits["test"]  # the seed orders the documents


@pytest.mark.skipif(importlib.util.find_spec("gensim") is None,
                    reason="gensim==4.4.0 (installed --no-deps) carries the Lee data")
def test_lee_similarity_package(tmp_path):
    task = prepare_task("lee", {"source": "package", "dataset": "lee_similarity"}, tmp_path / "lee")
    assert task["kind"] == "regression" and task["text_keys"] == ["text", "text_pair"]
    assert task["counts"] == {"train": 378, "dev": 21, "test": 105}
    assert task["metric"] == "pearson"
    assert_split_by_document({s: read_jsonl(tmp_path / "lee" / f"{s}.jsonl")
                              for s in ("train", "dev", "test")})
