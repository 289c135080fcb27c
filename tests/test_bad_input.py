"""Bad input: one clear error naming the file, key or line, exit status 1, nothing written.

Stage inputs go through the real CLI (`minialbert.cli.main`, in this process); config mistakes go
through `snakemake -n` on tests/config/tiny.yaml variants, all of them in one Snakemake process
(each dry run then costs a fraction of a second, not a Python start-up). Task files have their own
cases in tests/test_tasks.py; docs/reliability.md lists both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from minialbert import atomic
from minialbert.cli import main as cli_main
from minialbert.data.corpus_readers import MAX_DOCUMENT_BYTES
from test_distill_helpers import make_teacher, make_tokens, spec, student_spec
from test_workflow import copy_workflow, write_config

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "minialbert"
TEMPORARY = re.compile(r"^\..*\.(tmp|old)$")


def fails(capsys, argv: list[str], *fragments: str, out: Path | None = None) -> str:
    """Run one CLI call that must fail cleanly; returns its error message."""
    with pytest.raises(SystemExit) as exit:
        cli_main(argv)
    err = capsys.readouterr().err
    head = f"minialbert {argv[0]}: error: "
    assert exit.value.code == 1 and head in err and "Traceback" not in err, err[-3000:]
    message = err[err.rindex(head) + len(head):]
    for fragment in fragments:
        assert fragment in message, message
    if out is not None:
        assert not out.exists(), f"{out} was written"
        siblings = [p.name for p in out.parent.iterdir() if TEMPORARY.match(p.name)] if out.parent.exists() else []
        assert siblings == [], siblings
    return message


# ------------------------------------------------------------------------------------------------
# corpora


def download_corpus(folder: Path, out: Path, **spec_) -> list[str]:
    spec_ = {"source": "files", "package": None, "path": str(folder), "format": "text_dir", **spec_}
    return ["download-corpus", "--spec", json.dumps(spec_), "--out", str(out)]


def _corpus(tmp_path: Path, name: str, data: bytes) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize("case, name, data, fragments", [
    ("empty", "a.txt", b"", ["no documents found", "1 empty document(s) skipped"]),
    ("whitespace only", "a.txt", b"  \n\t\r\n  \n", ["no documents found", "1 empty document(s) skipped"]),
    ("binary", "a.txt", bytes(range(256)) * 4, ["a.txt", "byte offset 128 is not valid utf-8"]),
    ("jsonl not JSON", "a.jsonl", b'{"text": "one"}\n{"text": "two"\n', ["a.jsonl", "line 2", "not valid JSON"]),
    ("csv without the text column", "a.csv", b"body,label\nsome text,x\n", ["a.csv", "no column 'text'"]),
])
def test_bad_corpus_files(tmp_path, capsys, case, name, data, fragments):
    folder = _corpus(tmp_path, name, data)
    fmt = {".txt": "text_dir", ".jsonl": "jsonl", ".csv": "csv"}[Path(name).suffix]
    fails(capsys, download_corpus(folder, tmp_path / "out", format=fmt), *fragments, out=tmp_path / "out")


def test_an_empty_corpus_folder(tmp_path, capsys):
    (tmp_path / "corpus").mkdir()
    fails(capsys, download_corpus(tmp_path / "corpus", tmp_path / "out"), "no documents found",
          str(tmp_path / "corpus"), out=tmp_path / "out")


def test_a_binary_file_that_decodes_under_the_fallback_encoding(tmp_path, capsys):
    """cp1252 decodes (almost) any bytes: the NUL character still gives the file away."""
    folder = _corpus(tmp_path, "image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(1, 200)))
    fails(capsys, download_corpus(folder, tmp_path / "out", fallback_encoding="cp1252"),
          "image.txt", "NUL character", "binary", out=tmp_path / "out")


@pytest.mark.parametrize("fmt, name", [("jsonl", "big.jsonl"), ("text", "big.txt")])
def test_a_single_enormous_line(tmp_path, capsys, fmt, name):
    """Read in bounded pieces: the error comes before the line is ever held whole."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    with open(folder / name, "w", encoding="utf-8") as fh:
        fh.write('{"text": "a small document"}\n' if fmt == "jsonl" else "a small document\n")
        fh.write('{"text": "' + "word " * (MAX_DOCUMENT_BYTES // 5 + 1) + '"}\n')
    fails(capsys, download_corpus(folder, tmp_path / "out", format=fmt), name, "line 2 is larger than 32 MiB",
          out=tmp_path / "out")


def test_an_enormous_document_file(tmp_path, capsys):
    folder = tmp_path / "corpus"
    folder.mkdir()
    with open(folder / "huge.txt", "wb") as fh:
        fh.truncate(MAX_DOCUMENT_BYTES + 1)  # sparse: costs no disk
    fails(capsys, download_corpus(folder, tmp_path / "out"), "huge.txt", "the document is larger than",
          out=tmp_path / "out")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, teacher_package_dir) -> dict[str, Path]:
    """A tiny teacher, tokens for it, a corpus folder and a prepared task (each written once)."""
    root = tmp_path_factory.mktemp("bad-input")
    teacher = make_teacher(root / "teacher", teacher_package_dir, hidden=32, layers=4, heads=4, intermediate=64)
    corpus = root / "corpus"
    corpus.mkdir()
    docs = [{"id": str(i), "text": f"document number {i} about football and markets"} for i in range(6)]
    (corpus / "shard-00000.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (corpus / "manifest.json").write_text(json.dumps({"name": "tiny", "n_docs": len(docs)}))
    (root / "train.csv").write_text("text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(12)))
    cli_main(["prepare-task", "--name", "t", "--spec", json.dumps(
        {"source": "files", "kind": "classification", "train": str(root / "train.csv")}), "--out", str(root / "task")])
    return {"root": root, "teacher": teacher, "corpus": corpus, "task": root / "task",
            "tokens": make_tokens(root / "tokens", teacher, n_windows=16, max_length=32)}


def tokenize(corpus: Path, teacher: Path, out: Path) -> list[str]:
    return ["tokenize", "--corpus", str(corpus), "--teacher", str(teacher),
            "--spec", json.dumps({"max_length": 32, "stride": 8}), "--out", str(out)]


def test_a_corpus_shard_with_a_broken_line(tmp_path, tiny, capsys):
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny["corpus"], corpus)
    with open(corpus / "shard-00000.jsonl", "a") as fh:
        fh.write('{"id": "7", "text": "cut off\n')
    fails(capsys, tokenize(corpus, tiny["teacher"], tmp_path / "out"), "shard-00000.jsonl", "line 7",
          "not valid JSON", out=tmp_path / "out")


def test_a_corpus_folder_missing_documents(tmp_path, tiny, capsys):
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny["corpus"], corpus)
    (corpus / "manifest.json").write_text(json.dumps({"name": "tiny", "n_docs": 60}))
    fails(capsys, tokenize(corpus, tiny["teacher"], tmp_path / "out"), "60 documents", "incomplete",
          out=tmp_path / "out")


# ------------------------------------------------------------------------------------------------
# teachers and checkpoints


def download_teacher(folder: Path, out: Path, **spec_) -> list[str]:
    spec_ = {"source": "files", "package": None, "path": str(folder), "sha256": None, "has_mlm_head": None, **spec_}
    return ["download-teacher", "--spec", json.dumps(spec_), "--out", str(out)]


def test_a_teacher_whose_sha256_does_not_match(tmp_path, tiny, capsys):
    fails(capsys, download_teacher(tiny["teacher"], tmp_path / "out", sha256="0" * 64),
          str(tiny["teacher"] / "model.safetensors"), "sha256 mismatch", "expected " + "0" * 64,
          out=tmp_path / "out")


def test_a_teacher_with_truncated_weights(tmp_path, tiny, capsys):
    folder = tmp_path / "teacher"
    shutil.copytree(tiny["teacher"], folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    fails(capsys, download_teacher(folder, tmp_path / "out"), str(weights), "not a readable safetensors file",
          out=tmp_path / "out")


def test_a_teacher_whose_config_is_not_json(tmp_path, tiny, capsys):
    folder = tmp_path / "teacher"
    shutil.copytree(tiny["teacher"], folder)
    (folder / "config.json").write_text('{"model_type": "bert",')
    fails(capsys, download_teacher(folder, tmp_path / "out"), str(folder / "config.json"), "not valid JSON",
          out=tmp_path / "out")


def distill(tiny: dict, out: Path, teacher: Path | None = None, tokens: Path | None = None,
            student: dict | None = None, settings: dict | None = None) -> list[str]:
    return ["distill", "--teacher", str(teacher or tiny["teacher"]), "--tokens", str(tokens or tiny["tokens"]),
            "--student-spec", json.dumps(student or student_spec()),
            "--spec", json.dumps({**spec(), "threads": None, **(settings or {})}), "--out", str(out)]


def test_an_impossible_model_shape(tmp_path, tiny, capsys):
    out = tmp_path / "student"
    fails(capsys, distill(tiny, out, student=student_spec(hidden_size=30)),
          "hidden_size (30) must be divisible by num_attention_heads (4)", out=out)
    assert not (tmp_path / "student.state").exists()


def test_a_layer_map_past_the_teachers_depth(tmp_path, tiny, capsys):
    out = tmp_path / "student"
    fails(capsys, distill(tiny, out, settings={"layer_map": [1, 7]}), "distill.layer_map[1] = 7",
          "the teacher has 4 layers", out=out)


def test_a_checkpoint_of_another_model_type_as_the_teacher(tmp_path, tiny, capsys):
    """A MiniALBERT student given where a BERT teacher belongs."""
    student = tmp_path / "student"
    cli_main(distill(tiny, student, student=student_spec(distill=False)))
    capsys.readouterr()
    out = tmp_path / "student2"
    fails(capsys, distill(tiny, out, teacher=student), "MiniAlbertForMaskedLM", "unsupported architecture", out=out)


def test_tokens_cut_short(tmp_path, tiny, capsys):
    tokens = tmp_path / "tokens"
    shutil.copytree(tiny["tokens"], tokens)
    ids = tokens / "input_ids.bin"
    ids.write_bytes(ids.read_bytes()[:100])
    out = tmp_path / "student"
    fails(capsys, distill(tiny, out, tokens=tokens), str(ids), "incomplete or corrupt", out=out)


def finetune(model: Path, task: Path, out: Path) -> list[str]:
    return ["finetune", "--model", str(model), "--model-name", "m", "--task", str(task), "--mode", "full",
            "--lr", "1e-3", "--seed", "1", "--spec", json.dumps({"epochs": 1, "max_length": 32}),
            "--out", str(out), "--cache-dir", str(out.parent / "cache")]


def test_a_checkpoint_of_another_model_type_to_finetune(tmp_path, tiny, capsys):
    from transformers import ViTConfig, ViTModel

    folder = tmp_path / "vit"
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                       image_size=32, patch_size=8)).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copy(tiny["teacher"] / name, folder / name)
    out = tmp_path / "ft/metrics.json"
    message = fails(capsys, finetune(folder, tiny["task"], out), str(folder), "vit", out=out)
    assert len(message) < 500, message


def test_a_task_folder_without_task_json(tmp_path, tiny, capsys):
    task = tmp_path / "task"
    shutil.copytree(tiny["task"], task)
    (task / "task.json").unlink()
    out = tmp_path / "ft/metrics.json"
    fails(capsys, finetune(tiny["teacher"], task, out), str(task / "task.json"), out=out)


def test_metrics_that_are_not_json_to_aggregate(tmp_path, capsys):
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"model": "teacher", ')
    fails(capsys, ["aggregate", "--metrics", str(metrics), "--out", str(tmp_path / "summary")], str(metrics),
          "not valid JSON", out=tmp_path / "summary")


# ------------------------------------------------------------------------------------------------
# archives and output paths


def test_archives_are_read_in_memory_never_extracted(tmp_path, monkeypatch):
    """No code extracts an archive; the one archive read (the drug reviews' zip) is read member by
    member in memory, so a member named `../../escape` cannot write anywhere."""
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\.extractall\(|\.extract\(|unpack_archive|import tarfile", text), path

    from minialbert.tasks import packages

    root = tmp_path / "pkg"
    (root / "assets").mkdir(parents=True)
    header = "\tdrugName\tcondition\treview\trating\tdate\tusefulCount\n"
    rows = "".join(f'{i}\tx\ty\t"review {i}"\t{i % 10 + 1}\tJanuary 1, 2010\t1\n' for i in range(30))
    with zipfile.ZipFile(root / "assets/drugsCom.zip", "w") as zf:
        zf.writestr("../../escape.txt", "outside")
        zf.writestr("drugsComTrain.tsv", header + rows)
        zf.writestr("drugsComTest.tsv", header + rows)
    monkeypatch.setattr(packages, "package_root", lambda name: root)
    monkeypatch.chdir(root / "assets")
    splits = packages.read_package("drug_review", 13)[0]
    assert sum(len(rows) for rows in splits.values()) > 0
    assert not list(tmp_path.rglob("escape.txt"))


@pytest.mark.parametrize("target", ["out/..", ".", "results/distill/../.."])
def test_an_output_path_that_names_a_parent_is_refused(tmp_path, monkeypatch, target):
    """The last guard (minialbert.atomic), whatever produced the path: nothing is replaced."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results/distill").mkdir(parents=True)
    (tmp_path / "keep.txt").write_text("keep")
    with pytest.raises(ValueError, match="refusing"):
        with atomic.staged_dir(target) as tmp:
            (tmp / "x").write_text("x")
    assert (tmp_path / "keep.txt").read_text() == "keep" and (tmp_path / "results/distill").is_dir()
    assert not [p for p in tmp_path.rglob(".*") if TEMPORARY.match(p.name)]


# ------------------------------------------------------------------------------------------------
# config mistakes, through `snakemake -n`

DRY_RUNS = r"""
import contextlib, io, json, sys
from snakemake.cli import main

results = {}
for name, configfile in json.loads(sys.argv[1]).items():
    out = io.StringIO()
    sys.argv = ["snakemake", "-n", "--quiet", "rules", "--configfile", configfile]  # the Snakefile reads it
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main(sys.argv[1:])
            code = 0
        except SystemExit as exit:
            code = exit.code
    results[name] = [code, out.getvalue()]
print(json.dumps(results))
"""


def _tiny_with_a_second(task: str) -> str:
    """tiny.yaml with a second `tasks:` entry of the same name (YAML text: a mapping cannot)."""
    text = (REPO / "tests/config/tiny.yaml").read_text()
    assert "\ntasks:\n" in text and f"  {task}:" in text
    return text.replace("\ntasks:\n", f"\ntasks:\n  {task}: {{source: package, dataset: wnut16}}\n", 1)

# name -> (changes to tiny.yaml or the config's text, fragments the error must contain,
#          why it is expected to fail today)
CONFIG_CASES = {
    "unknown key": ({"tokenize.max_lenght": 48}, ["max_lenght", "tokenize"], None),
    "wrong type": ({"distill.steps": "ten"}, ["'ten' is not of type 'integer'", "steps"], None),
    "out of range": ({"finetune.settings.epochs": 0}, ["0 is less than the minimum of 1", "epochs"], None),
    "duplicate student names": (
        {"students": [{"name": "distilled"}, {"name": "distilled", "init": "random"}]},
        ["students", "student names must be unique"], None),
    "output path escapes the work directory (teacher name)": (
        {"teacher.name": "../../elsewhere"}, ["'../../elsewhere' does not match"], None),
    "duplicate task names": (
        _tiny_with_a_second("bbc_topic"),
        ["bbc_topic", "duplicate"],
        None),
    "output path escapes the work directory (student named ..)": (
        {"students": [{"name": ".."}], "finetune.models": ["teacher", ".."]}, ["'..'", "name"],
        None),
    "hidden not divisible by heads": (
        {"student.overrides": {"hidden_size": 30, "num_attention_heads": 4}},
        ["student.overrides", "hidden_size", "num_attention_heads"],
        None),
    "layer map past the teacher's depth": (
        {"distill.layer_map": [1, 3, 9]}, ["distill.layer_map", "9"],
        None),
}


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory) -> dict[str, tuple[int, str]]:
    work = copy_workflow(tmp_path_factory.mktemp("dry-runs"))
    files = {}
    for i, (name, (changes, _, _)) in enumerate(CONFIG_CASES.items()):
        path = work / f"case{i}.yaml"
        if isinstance(changes, str):
            path.write_text(changes)
        else:
            write_config(path, REPO / "tests/config/tiny.yaml", **changes)
        files[name] = str(path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, "-c", DRY_RUNS, json.dumps(files)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {name: tuple(v) for name, v in json.loads(proc.stdout.splitlines()[-1]).items()}


@pytest.mark.parametrize("case", [
    pytest.param(name, marks=[pytest.mark.xfail(strict=True, reason=why)] if why else [])
    for name, (_, _, why) in CONFIG_CASES.items()])
def test_config_mistakes_stop_the_dry_run(dry_runs, case):
    code, output = dry_runs[case]
    assert code != 0, output[-2000:]
    for fragment in CONFIG_CASES[case][1]:
        assert fragment in output, output[-3000:]
