"""Bad task input through `minialbert prepare-task`: one clear line naming the file, key or line,
exit 1, and no output folder (so no invalid value, a NaN label say, is ever written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minialbert.cli import main as cli_main


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def rows(n: int, start: int = 0, labels=("pos", "neg")) -> str:
    return "".join(f"sentence number {i},{labels[i % len(labels)]}\n" for i in range(start, start + n))


def fails(tmp_path: Path, capsys, spec: dict, *fragments: str) -> str:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        cli_main(["prepare-task", "--name", "t", "--spec", json.dumps(spec), "--out", str(out)])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("minialbert prepare-task: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging debris
    return err


def clf(tmp_path: Path, **files: str) -> dict:
    return {"source": "files", "kind": "classification",
            **{split: write(tmp_path / name, text) for split, (name, text) in files.items()}}


def test_missing_columns(tmp_path, capsys):
    spec = clf(tmp_path, train=("train.csv", "sentence,label\n" + rows(10)))
    fails(tmp_path, capsys, spec, "train.csv", "no column 'text'", "text_column",
          "available columns: sentence, label")
    # a dev file must have labels; only test may come without
    spec = clf(tmp_path, train=("train.csv", "text,label\n" + rows(10)),
               dev=("dev.csv", "text\nsome sentence\n"))
    fails(tmp_path, capsys, spec, "dev.csv", "no column 'label'", "label_column")
    lines = "\n".join(json.dumps({"q": f"q{i}", "y": "a"}) for i in range(6))
    spec = {"source": "files", "kind": "pair_classification", "text_column": "q",
            "text_pair_column": "r", "label_column": "y",
            "train": write(tmp_path / "pairs.jsonl", lines)}
    fails(tmp_path, capsys, spec, "pairs.jsonl", "no column 'r'", "text_pair_column")


def test_empty_or_missing_labels(tmp_path, capsys):
    spec = clf(tmp_path, train=("train.csv", "text,label\n" + rows(5) + "no label here,\n"))
    fails(tmp_path, capsys, spec, "train.csv", "line 7", "empty or missing value",
          "label column 'label'")
    lines = [json.dumps({"text": "a", "label": "x"}), json.dumps({"text": "b"})]
    spec = {"source": "files", "kind": "classification",
            "train": write(tmp_path / "train.jsonl", "\n".join(lines))}
    fails(tmp_path, capsys, spec, "train.jsonl", "line 2", "empty or missing value")
    # test: all labelled or none (hidden labels); a few missing is a mistake
    spec = clf(tmp_path, train=("train.csv", "text,label\n" + rows(10)),
               dev=("dev.csv", "text,label\n" + rows(4, 20)),
               test=("test.csv", "text,label\n" + rows(2, 30) + "unlabelled,\n"))
    fails(tmp_path, capsys, spec, "test.csv", "line 4", "empty or missing value")


def test_labels_unseen_in_train(tmp_path, capsys):
    spec = clf(tmp_path, train=("train.csv", "text,label\n" + rows(10)),
               dev=("dev.csv", "text,label\n" + rows(4, 20, ("pos", "maybe"))))
    fails(tmp_path, capsys, spec, "dev.csv", "line 3", "'maybe'", "never occurs in the train split")
    # a plain tag set, every split given: a dev tag never seen in train
    conll = {"source": "files", "format": "conll",
             "train": write(tmp_path / "train.conll", "The\tDET\ndog\tNOUN\n\n" * 3),
             "dev": write(tmp_path / "dev.conll", "A\tDET\ncat\tNOUN\nran\tVERB\n"),
             "test": write(tmp_path / "test.conll", "The\tDET\ncat\tNOUN\n")}
    fails(tmp_path, capsys, conll, "dev.conll", "line 1", "tag 'VERB'", "never occurs in the train")


@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-Infinity", "high"])
def test_regression_scores_must_be_finite_numbers(tmp_path, capsys, bad):
    body = "text,score\n" + "".join(f"s{i},{i / 10}\n" for i in range(10)) + f"s10,{bad}\n"
    spec = {"source": "files", "kind": "regression", "label_column": "score",
            "train": write(tmp_path / "train.csv", body)}
    err = fails(tmp_path, capsys, spec, "train.csv", "line 12", "'score'")
    assert ("must be numeric" if bad == "high" else "not a finite number") in err


def test_nan_never_becomes_a_label(tmp_path, capsys):
    # JSON NaN (json.loads accepts it) as a regression score, and pandas' "nan" as a class
    lines = [json.dumps({"text": f"t{i}", "label": i / 10}) for i in range(9)] + \
        ['{"text": "t9", "label": NaN}']
    spec = {"source": "files", "kind": "regression",
            "train": write(tmp_path / "train.jsonl", "\n".join(lines))}
    fails(tmp_path, capsys, spec, "train.jsonl", "line 10", "not a finite number")
    spec = clf(tmp_path, train=("train.csv", "text,label\n" + rows(10) + "empty cell,nan\n"))
    fails(tmp_path, capsys, spec, "train.csv", "line 12", "not a finite number")


def test_too_few_examples_to_carve(tmp_path, capsys):
    spec = clf(tmp_path, train=("train.csv", "text,label\n" + rows(3)))
    fails(tmp_path, capsys, spec, "train.csv", "the dev split is empty",
          "at dev_fraction 0.1 a label needs at least 5 distinct examples", "the largest has 2")
    spec = {"source": "files", "kind": "regression",
            "train": write(tmp_path / "sts.csv", "text,label\n" + "".join(f"s{i},{i}\n" for i in range(8))),
            "dev_fraction": 0.25, "test_fraction": 0.05}
    fails(tmp_path, capsys, spec, "sts.csv", "the test split is empty",
          "at test_fraction 0.05 the data needs at least 10 distinct examples", "it has 8")


def test_header_only(tmp_path, capsys):
    spec = clf(tmp_path, train=("train.csv", "text,label\n"))
    fails(tmp_path, capsys, spec, "train.csv", "the train split is empty")
    spec = clf(tmp_path, train=("train.csv", "text,label\n" + rows(10)),
               dev=("dev.csv", "text,label\n"))
    fails(tmp_path, capsys, spec, "dev.csv", "the dev split is empty")
    spec = clf(tmp_path, train=("empty.csv", ""))
    fails(tmp_path, capsys, spec, "empty.csv", "the file is empty")


def test_malformed_conll_lines(tmp_path, capsys):
    spec = {"source": "files", "format": "conll",
            "train": write(tmp_path / "train.conll", "EU\tB-ORG\nrejects\n\nok\tO\n")}
    fails(tmp_path, capsys, spec, "train.conll", "line 2", "malformed token line 'rejects'")
    spec = {"source": "files", "format": "conll", "delimiter": "\t",
            "train": write(tmp_path / "tabs.conll", "EU\tB-ORG\nrejects\t\n")}
    fails(tmp_path, capsys, spec, "tabs.conll", "line 2", "empty tag")


def test_tag_set_mixing_schemes(tmp_path, capsys):
    body = "".join(f"John\tB-PER\nruns\tVERB\n{i}\tO\n\n" for i in range(20))
    spec = {"source": "files", "format": "conll", "train": write(tmp_path / "mixed.conll", body)}
    fails(tmp_path, capsys, spec, "mixed.conll", "line 2", "'VERB'", "line 1", "'B-PER'",
          "mixes schemes", "tag_scheme: plain")
    # asked for BIO, got POS tags
    spec = {"source": "files", "format": "conll", "tag_scheme": "bio",
            "train": write(tmp_path / "pos.conll", "The\tDET\ndog\tNOUN\n")}
    fails(tmp_path, capsys, spec, "pos.conll", "line 1", "'DET'", "tasks.t.tag_scheme is bio")
    # the same mixed file is accepted as plain classes when the spec says so
    spec = {"source": "files", "format": "conll", "tag_scheme": "plain",
            "train": str(tmp_path / "mixed.conll")}
    out = tmp_path / "plain"
    assert cli_main(["prepare-task", "--name", "t", "--spec", json.dumps(spec), "--out", str(out)]) == 0
    assert json.loads((out / "task.json").read_text())["labels"] == ["B-PER", "O", "VERB"]


def test_duplicate_only_data(tmp_path, capsys):
    # 40 rows, two texts, written in different case, spacing and Unicode width
    variants = ["Great product", "great  PRODUCT", "ｇｒｅａｔ product", " great product "]
    body = "".join(f"{variants[i % 4]},pos\nawful,neg\n" for i in range(20))
    spec = clf(tmp_path, train=("train.csv", "text,label\n" + body))
    fails(tmp_path, capsys, spec, "train.csv", "the dev split is empty",
          "38 of the 40 rows were dropped as exact duplicates")
