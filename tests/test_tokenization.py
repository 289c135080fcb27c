"""tokenize: window arithmetic against the tokenizer's own encode and overflow windows, the window
sample, packed files, PackedWindows."""

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
from minialbert.data.corpus import download_corpus
from minialbert.data.windows import kept_windows, make_windows, n_windows_for

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
    spec = {"max_length": 10, "stride": 5, "max_windows_per_doc": None}
    code, err = run_cli(["tokenize", "--corpus", str(corpus), "--teacher", str(teacher_package_dir),
                         "--spec", json.dumps(spec), "--out", str(out)], capsys)
    assert code == 0, err
    pw = PackedWindows(out)
    # 21 tokens, 8 content tokens per window overlapping by 5: starts 0,3,...,15 -> 6 windows, the
    # last one (15..21) shorter; then the short doc as one padded window
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
    assert (meta["n_docs"], meta["n_windows"], meta["max_length"], meta["stride"]) == (2, 7, 10, 5)
    assert (meta["stride_semantics"], meta["window_choice"], meta["seed"]) == ("overlap", "random", 42)
    assert (meta["excluded"], meta["n_docs_excluded"]) == ({}, 0)
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
    # up to 7 windows per document, 3 kept: a random sample, the same whoever encodes it
    spec = {"max_length": 16, "stride": 5, "batch_docs": 4, "max_windows_per_doc": 3}
    m1 = run_tokenize(corpus, teacher_package_dir, spec, tmp_path / "w1", workers=1)
    m2 = run_tokenize(corpus, teacher_package_dir, spec, tmp_path / "w2", workers=2)
    for name in ("input_ids.bin", "lengths.bin"):
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()
    assert m1["n_windows"] == m2["n_windows"] and m1["n_docs"] == 40
    assert m1["n_docs_capped"] > 0
    # and the same windows as a whole-corpus, one-batch run
    m3 = run_tokenize(corpus, teacher_package_dir, {**spec, "batch_docs": 1000}, tmp_path / "w3")
    assert (tmp_path / "w3" / "input_ids.bin").read_bytes() == (tmp_path / "w1" / "input_ids.bin").read_bytes()
    assert m3["n_tokens"] == m1["n_tokens"]


@pytest.mark.parametrize("max_length,stride", [(64, 16), (32, 0), (24, 21)])
def test_windows_are_the_hf_overflow_windows(tmp_path, teacher_package_dir, max_length, stride):
    """Real BBC articles: the stage's windows are exactly the Hugging Face tokenizer's
    `return_overflowing_tokens=True, stride=...` windows, padded the same way."""
    from transformers import AutoTokenizer

    corpus = tmp_path / "bbc"
    download_corpus({"max_docs": 4}, corpus)
    texts = [json.loads(line)["text"] for line in (corpus / "shard-00000.jsonl").open()]
    meta = run_tokenize(corpus, teacher_package_dir, {"max_length": max_length, "stride": stride,
                                                      "max_windows_per_doc": None}, tmp_path / "t")
    hf = AutoTokenizer.from_pretrained(str(teacher_package_dir))
    ref = hf(texts, max_length=max_length, stride=stride, truncation=True, padding="max_length",
             return_overflowing_tokens=True)
    pw = PackedWindows(tmp_path / "t")
    assert meta["n_windows"] == len(ref["input_ids"]) > 4 * 10
    for i, (ids, mask) in enumerate(zip(ref["input_ids"], ref["attention_mask"])):
        assert pw[i][0].tolist() == ids and pw[i][1] == sum(mask), i


def test_window_sample_is_seeded_and_covers_the_whole_document():
    n_full = np.full(50, 40)  # 50 documents of 40 windows each, 5 kept
    numbers = np.arange(50) + 1000
    doc_of, k = kept_windows(n_full, numbers, cap=5, choice="random", seed=42)
    per_doc = [k[doc_of == d] for d in range(50)]
    assert all(len(ks) == 5 and (np.diff(ks) > 0).all() for ks in per_doc)  # in document order
    # a uniform sample, not the first windows: later sections of the documents are kept
    assert np.mean([ks.max() >= 20 for ks in per_doc]) >= 0.9
    assert sum(39 in ks for ks in per_doc) >= 2 and 0.35 < np.mean(k >= 20) < 0.65
    # deterministic, and per document: the same sample whatever else is in the batch
    again_doc, again_k = kept_windows(n_full, numbers, cap=5, choice="random", seed=42)
    assert (again_doc == doc_of).all() and (again_k == k).all()
    for d in (0, 17, 49):
        _, alone = kept_windows(n_full[d:d + 1], numbers[d:d + 1], cap=5, choice="random", seed=42)
        assert (alone == per_doc[d]).all()
    _, other = kept_windows(n_full, numbers, cap=5, choice="random", seed=43)
    assert not (other == k).all()
    # documents with at most `cap` windows keep them all; `first` keeps the first ones
    doc_of, k = kept_windows(np.array([3, 0, 8]), np.arange(3), cap=5, choice="random", seed=0)
    assert doc_of.tolist() == [0, 0, 0, 2, 2, 2, 2, 2] and k[:3].tolist() == [0, 1, 2]
    _, k = kept_windows(np.array([8]), np.arange(1), cap=5, choice="first", seed=0)
    assert k.tolist() == [0, 1, 2, 3, 4]


def test_sampled_windows_are_windows_of_the_document():
    doc_lens = np.array([300, 5, 0, 90])
    ids = np.arange(1, doc_lens.sum() + 1, dtype=np.uint32)  # every token id tells its position
    kwargs = dict(max_length=20, stride=6, seed=7, cls_id=0, sep_id=0, pad_id=0, dtype=np.uint32)
    full, full_len = make_windows(ids, doc_lens, np.arange(4), cap=None, choice="random", **kwargs)
    kept, kept_len = make_windows(ids, doc_lens, np.arange(4), cap=4, choice="random", **kwargs)
    n_full = n_windows_for(doc_lens, 18, 6, None)
    assert n_full.tolist() == [25, 1, 0, 7] and len(full) == 33 and len(kept) == 4 + 1 + 4
    rows = [r.tolist() for r in full]
    picked = [rows.index(r.tolist()) for r in kept]
    assert picked == sorted(picked) and len(set(picked)) == len(picked)  # a subset, in order
    assert (full_len[picked] == kept_len).all()
    assert picked[:4] != [0, 1, 2, 3] and picked[4] == 25  # sampled; the short document whole


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
        ({"max_length": 10, "stride": 9}, "tokenize.stride: 9 must be below max_length - 2 = 8"),
        ({"max_length": 10, "stride": 8}, "tokenize.stride"),
        ({"stride": -1}, "stride"),
        ({"window_choice": "last"}, "window_choice"),
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
