"""tokenize: window arithmetic against the tokenizer's own encode, packed files, PackedWindows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from minialbert import cli
from minialbert.data.packed import PackedWindows, check_vocab_compatible, load_teacher_tokenizer, vocab_sha256
from minialbert.data.tokenize import run_tokenize
from minialbert.data.windows import n_windows_for

WORDS = ("alpha beta gamma delta epsilon zeta eta theta kappa lambda mu nu xi pi "
         "sigma tau phi chi psi omega").split()  # one word piece each


def run_cli(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def write_corpus(folder: Path, texts: list[str], per_shard: int = 1000) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(0, len(texts), per_shard):
        with open(folder / f"shard-{s // per_shard:05d}.jsonl", "w") as fh:
            for i, t in enumerate(texts[s:s + per_shard]):
                fh.write(json.dumps({"id": f"d{s + i}", "text": t}) + "\n")
    return folder


@pytest.fixture(scope="module")
def tok(teacher_package_dir):
    return load_teacher_tokenizer(teacher_package_dir)[0]


def content_ids(tok, text: str) -> list[int]:
    ids = tok.encode(text, add_special_tokens=False).ids
    assert 101 not in ids and 102 not in ids
    return ids


def test_window_arithmetic_exact(tmp_path, capsys, tok, teacher_package_dir):
    long_text = " ".join(WORDS[i % len(WORDS)] for i in range(21))
    long_ids = content_ids(tok, long_text)
    assert len(long_ids) == 21  # one word piece per Greek letter
    short_ids = content_ids(tok, "tiny doc")
    corpus = write_corpus(tmp_path / "corpus", [long_text, "tiny doc"])
    out = tmp_path / "tokens"
    spec = {"max_length": 10, "stride": 3, "max_windows_per_doc": None}
    code, err = run_cli(["tokenize", "--corpus", str(corpus), "--teacher", str(teacher_package_dir),
                         "--spec", json.dumps(spec), "--out", str(out)], capsys)
    assert code == 0, err
    pw = PackedWindows(out)
    # 21 tokens, 8 content tokens per window, stride 3: starts 0,3,...,15 -> 6 windows, the last
    # one (15..21) shorter; then the short doc as one padded window
    assert len(pw) == 7 == 1 + 1 + (21 - 8 + 2) // 3
    for k, start in enumerate(range(0, 16, 3)):
        ids, length = pw[k]
        body = long_ids[start:start + 8]
        assert length == len(body) + 2
        assert ids.tolist() == [101, *body, 102] + [0] * (10 - length)
    assert pw[5][1] == 8  # the last window: 6 tokens + [CLS] + [SEP], then 2 pads
    # consecutive windows overlap by content - stride = 5 tokens
    assert pw[0][0][1 + 3:9].tolist() == pw[1][0][1:6].tolist()
    ids, length = pw[6]
    assert ids.tolist() == [101, *short_ids, 102] + [0] * (10 - 2 - len(short_ids))
    assert length == len(short_ids) + 2 and pw[-1][1] == length

    meta = json.loads((out / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 30522
    assert (meta["pad_id"], meta["cls_id"], meta["sep_id"], meta["mask_id"]) == (0, 101, 102, 103)
    assert meta["special_ids"] == [0, 100, 101, 102, 103]
    assert (meta["n_docs"], meta["n_windows"], meta["max_length"], meta["stride"]) == (2, 7, 10, 3)
    assert meta["n_tokens"] == int(np.fromfile(out / "lengths.bin", dtype=np.int32).sum())
    assert meta["n_doc_tokens"] == 21 + len(short_ids)
    assert meta["max_windows_per_doc"] is None
    assert meta["vocab_sha256"] == vocab_sha256(tok)
    assert len(meta["tokenizer_sha256"]) == 64
    assert (out / "input_ids.bin").stat().st_size == 7 * 10 * 2


def test_max_windows_cap_and_counts(tmp_path, teacher_package_dir):
    text = " ".join(WORDS[i % len(WORDS)] for i in range(40))
    corpus = write_corpus(tmp_path / "c", [text])
    meta = run_tokenize(corpus, teacher_package_dir, {"max_length": 10, "stride": 4,
                                                      "max_windows_per_doc": 2}, tmp_path / "t")
    assert meta["n_windows"] == 2 and meta["n_docs_capped"] == 1
    assert n_windows_for(np.array([0, 1, 8, 9, 12, 13, 40]), 8, 4, None).tolist() == [0, 1, 1, 2, 2, 3, 9]
    # a window exactly as long as max_length: no padding, [SEP] last
    pw = PackedWindows(tmp_path / "t")
    assert pw[0][1] == 10 and pw[0][0][-1] == 102


def test_workers_give_identical_bytes(tmp_path, teacher_package_dir):
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(n))) for n in rng.integers(1, 60, size=40)]
    corpus = write_corpus(tmp_path / "c", texts, per_shard=15)
    spec = {"max_length": 16, "stride": 5, "batch_docs": 4}
    m1 = run_tokenize(corpus, teacher_package_dir, spec, tmp_path / "w1", workers=1)
    m2 = run_tokenize(corpus, teacher_package_dir, spec, tmp_path / "w2", workers=2)
    for name in ("input_ids.bin", "lengths.bin"):
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()
    assert m1["n_windows"] == m2["n_windows"] and m1["n_docs"] == 40
    # and the same windows as a whole-corpus, one-batch run
    m3 = run_tokenize(corpus, teacher_package_dir, {**spec, "batch_docs": 1000}, tmp_path / "w3")
    assert (tmp_path / "w3" / "input_ids.bin").read_bytes() == (tmp_path / "w1" / "input_ids.bin").read_bytes()
    assert m3["n_tokens"] == m1["n_tokens"]


def test_packed_windows_batch_and_errors(tmp_path, teacher_package_dir):
    corpus = write_corpus(tmp_path / "c", ["alpha beta gamma", "delta " * 30, "omega"])
    run_tokenize(corpus, teacher_package_dir, {"max_length": 12, "stride": 6}, tmp_path / "t")
    pw = PackedWindows(tmp_path / "t")
    assert (pw.pad_id, pw.mask_id, pw.vocab_size, pw.max_length) == (0, 103, 30522, 12)
    assert pw.special_ids == [0, 100, 101, 102, 103] and pw.meta["n_windows"] == len(pw)
    ids, mask = pw.batch([0, len(pw) - 1, 1])
    assert ids.dtype == torch.long and mask.dtype == torch.long and ids.shape == mask.shape == (3, 12)
    for row, i in enumerate([0, len(pw) - 1, 1]):
        ref, length = pw[i]
        assert ids[row].tolist() == ref.tolist()
        assert mask[row].tolist() == [1] * length + [0] * (12 - length)
    trimmed, tmask = pw.batch([0], trim=True)
    assert trimmed.shape == (1, pw[0][1]) and bool(tmask.all())
    with pytest.raises(IndexError):
        pw[len(pw)]
    import pickle

    assert len(pickle.dumps(pw)) < 1000 and pickle.loads(pickle.dumps(pw))[0][1] == pw[0][1]

    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "t", broken)
    data = (broken / "input_ids.bin").read_bytes()
    (broken / "input_ids.bin").write_bytes(data[:-2])
    with pytest.raises(ValueError, match=rf"input_ids.bin has {len(data) - 2} bytes, meta.json says {len(data)}"):
        PackedWindows(broken)
    with pytest.raises(FileNotFoundError, match="meta.json"):
        PackedWindows(tmp_path / "c")


def test_vocab_mismatch(tmp_path, teacher_package_dir):
    corpus = write_corpus(tmp_path / "c", ["alpha beta"])
    run_tokenize(corpus, teacher_package_dir, {}, tmp_path / "t")
    assert check_vocab_compatible(tmp_path / "t", teacher_package_dir)["n_windows"] == 1
    other = tmp_path / "other_teacher"
    other.mkdir()
    tj = json.loads((teacher_package_dir / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    vocab["alphabeta"] = vocab.pop("alpha")  # same size, one token renamed
    (other / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(ValueError, match="vocabulary mismatch") as info:
        check_vocab_compatible(tmp_path / "t", other)
    assert str(tmp_path / "t") in str(info.value) and str(other) in str(info.value)


def test_tokenize_errors(tmp_path, capsys, teacher_package_dir):
    corpus = write_corpus(tmp_path / "c", ["alpha beta"])
    base = ["tokenize", "--corpus", str(corpus), "--teacher", str(teacher_package_dir), "--out",
            str(tmp_path / "t")]
    for spec, needle in [
        ({"max_len": 10}, "tokenize: unknown key(s) max_len"),
        ({"max_length": 10, "stride": 9}, "stride"),
        ({"max_length": 1024}, "max_position_embeddings 512"),
        ({"batch_docs": 0}, "batch_docs"),
        ({"max_windows_per_doc": 1.5}, "max_windows_per_doc"),
    ]:
        code, err = run_cli(base + ["--spec", json.dumps(spec)], capsys)
        assert code == 1 and needle in err, (spec, err)
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run_cli(["tokenize", "--corpus", str(empty), "--teacher", str(teacher_package_dir),
                         "--out", str(tmp_path / "t")], capsys)
    assert code == 1 and "no shard-*.jsonl" in err
    (empty / "shard-00000.jsonl").write_text("")
    code, err = run_cli(["tokenize", "--corpus", str(empty), "--teacher", str(teacher_package_dir),
                         "--out", str(tmp_path / "t")], capsys)
    assert code == 1 and "no documents found" in err
    assert not (tmp_path / "t").exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_end_to_end_files_corpus(tmp_path, capsys, teacher_package_dir):
    src = tmp_path / "docs.txt"
    src.write_text("The cat sat on the mat.\n\nA second, longer document about cats and mats.\n")
    spec = {"source": "files", "path": str(src), "format": "text"}
    assert run_cli(["download-corpus", "--spec", json.dumps(spec), "--out", str(tmp_path / "c")], capsys)[0] == 0
    code, err = run_cli(["tokenize", "--corpus", str(tmp_path / "c"), "--teacher", str(teacher_package_dir),
                         "--spec", '{"max_length": 32, "stride": 16}', "--out", str(tmp_path / "t"), "--workers", "1"], capsys)
    assert code == 0, err
    pw = PackedWindows(tmp_path / "t")
    assert len(pw) == 2
    tok = load_teacher_tokenizer(teacher_package_dir)[0]
    ids, length = pw[0]
    assert ids[:length].tolist() == tok.encode("The cat sat on the mat.").ids  # same as [CLS] x [SEP]
