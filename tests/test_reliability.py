"""Reliability promises (issue 14), each proven by a test; docs/reliability.md maps them.

The stages run through the real `minialbert` CLI in subprocesses, on a tiny random teacher (with
the real MiniLM tokenizer), 24 BBC documents and a tiny classification task:

- reproducibility: the whole chain twice (another PYTHONHASHSEED), every output compared;
- interruptions: each long stage SIGKILLed at a seeded random file-system operation (the moments a
  partial output could leak; `MINIALBERT_KILL_SEED=n` picks other points), then rerun; a full disk
  while a checkpoint is written; one broken job under `snakemake --keep-going`;
- numerical safety: NaN/inf stops a run with one clear line, the last good state kept;
- security: weights only from safetensors or `torch.load(weights_only=True)`, never remote code;
- load: fine-tuning jobs racing on one task folder and its cache.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from minialbert import atomic, settings
from minialbert.cli import main as cli_main
from minialbert.distill.faults import FAULT_ENV
from minialbert.files import sha256_file
from test_distill_helpers import make_teacher, make_tokens, spec, student_spec
from snakemake_helpers import job_counts
from test_workflow import copy_workflow, snakemake

SRC = Path(__file__).resolve().parents[1] / "src" / "minialbert"
TIMEOUT = 600

# ------------------------------------------------------------------------------------------------
# the harness: `minialbert` CLI calls in one process, counting (and optionally dying at) the
# file-system operations of each call

HARNESS = r"""
import builtins, io, json, os, shutil, signal, sys, tempfile
import numpy, safetensors.torch, torch

plan = json.loads(sys.argv[1])
kill = plan["kill"]  # [call index, operation number] or None
now = {"call": -1, "ops": 0}


def operation():
    if now["call"] >= 0:
        now["ops"] += 1
        if kill == [now["call"], now["ops"]]:
            os.kill(os.getpid(), signal.SIGKILL)


def counted(fn, writes_only=False):
    def wrapper(*args, **kwargs):
        mode = kwargs.get("mode", args[1] if len(args) > 1 else "r")
        if not writes_only or (isinstance(mode, str) and any(c in mode for c in "wax+")):
            operation()
        return fn(*args, **kwargs)
    return wrapper


for owner, names in ((os, "replace rename fsync unlink rmdir mkdir"), (shutil, "copyfile copytree rmtree"),
                     (tempfile, "mkstemp mkdtemp"), (torch, "save"), (safetensors.torch, "save_file"),
                     (numpy, "savez")):
    for name in names.split():
        setattr(owner, name, counted(getattr(owner, name)))
builtins.open = io.open = counted(io.open, writes_only=True)

from minialbert.cli import main  # after the patches, so that names bound at import see them

done = []
for i, argv in enumerate(plan["calls"]):
    now.update(call=i, ops=0)
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code
    if kill is not None and kill[0] == i:  # fewer operations than the reference run: die now
        os.kill(os.getpid(), signal.SIGKILL)
    now["call"] = -1
    done.append({"argv": argv[0], "code": code, "ops": now["ops"]})
    if code:
        break
print("HARNESS " + json.dumps(done), flush=True)
"""


def start(calls: list[list[str]], cwd: Path, kill: list[int] | None = None, env: dict | None = None):
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**{k: v for k, v in os.environ.items() if k != FAULT_ENV}, "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1", **(env or {})}
    log = open(cwd / "harness.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", HARNESS, json.dumps({"calls": calls, "kill": kill})],
                            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log_path = cwd / "harness.log"
    log.close()
    return proc


def wait(proc) -> tuple[int, list[dict], str]:
    """(exit status, per call {"code", "ops"}, the log)."""
    proc.wait(timeout=TIMEOUT)
    text = proc.log_path.read_text()
    done = [json.loads(line[len("HARNESS "):]) for line in text.splitlines() if line.startswith("HARNESS ")]
    return proc.returncode, done[0] if done else [], text


# ------------------------------------------------------------------------------------------------
# the tiny pipeline: stage arguments, reading inputs from one root and writing to another

CORPUS = {"max_docs": 24, "shard_docs": 8}  # the packaged BBC corpus
TOKENIZE = {"max_length": 32, "stride": 8, "max_windows_per_doc": 2, "batch_docs": 8}
DISTILL = spec(steps=8, checkpoint_every=2, eval_every=4)
STUDENT = student_spec(name="s")
FINETUNE = {"epochs": 2, "batch_size": 4, "eval_batch_size": 16, "max_length": 32, "threads": 1,
            "precision": "fp32", "save": True}
WORDS = {"sport": "football goal match team", "money": "bank market shares profit",
         "music": "song album band concert"}


def _csv(n: int, start: int) -> str:
    labels = list(WORDS)
    return "text,label\n" + "".join(f"{WORDS[labels[i % 3]]} item {i},{labels[i % 3]}\n"
                                    for i in range(start, start + n))


@pytest.fixture(scope="module")
def sources(tmp_path_factory, teacher_package_dir) -> dict[str, Path]:
    """What the pipeline reads: a tiny teacher folder and a tiny task's CSV files."""
    root = tmp_path_factory.mktemp("sources")
    make_teacher(root / "teacher", teacher_package_dir, hidden=48, layers=4, heads=4, intermediate=64)
    for split, (n, first) in {"train": (24, 0), "dev": (9, 100), "test": (9, 200)}.items():
        (root / f"{split}.csv").write_text(_csv(n, first), encoding="utf-8")
    return {"root": root, "teacher": root / "teacher"}


def finetune_args(inp: Path, out: Path, mode="full", seed=1, task: Path | None = None,
                  cache: Path | None = None) -> list[str]:
    args = ["finetune", "--model", str(inp / "distill/s"), "--model-name", "s",
            "--task", str(task or inp / "task"), "--mode", mode, "--lr", "0.001", "--seed", str(seed),
            "--spec", json.dumps(FINETUNE), "--out", str(out / f"ft/s/{mode}{seed}/metrics.json")]
    return args + (["--cache-dir", str(cache)] if cache else [])


def stage_args(stage: str, inp: Path, out: Path, src: dict | None = None) -> list[str]:
    """One stage's CLI call; inputs from the pipeline under `inp`, outputs under `out`."""
    if stage == "download-corpus":
        return [stage, "--spec", json.dumps(CORPUS), "--out", str(out / "corpus")]
    if stage == "download-teacher":
        spec_ = {"name": "tiny", "source": "files", "package": None, "path": str(src["teacher"]),
                 "sha256": None, "has_mlm_head": None}
        return [stage, "--spec", json.dumps(spec_), "--out", str(out / "teacher")]
    if stage == "prepare-task":
        spec_ = {"source": "files", "kind": "classification",
                 **{split: str(src["root"] / f"{split}.csv") for split in ("train", "dev", "test")}}
        return [stage, "--name", "clf", "--spec", json.dumps(spec_), "--out", str(out / "task")]
    if stage == "tokenize":
        return [stage, "--corpus", str(inp / "corpus"), "--teacher", str(inp / "teacher"),
                "--spec", json.dumps(TOKENIZE), "--out", str(out / "tokens")]
    if stage == "distill":  # as the workflow calls it: always --resume
        return [stage, "--teacher", str(inp / "teacher"), "--tokens", str(inp / "tokens"),
                "--student-spec", json.dumps(STUDENT), "--spec", json.dumps(DISTILL),
                "--out", str(out / "distill/s"), "--resume"]
    if stage == "finetune":
        return finetune_args(inp, out, cache=out / "cache")
    if stage == "finetune-adapter":
        return finetune_args(inp, out, mode="adapter", cache=out / "cache")
    if stage == "aggregate":
        return [stage, "--metrics", str(inp / "ft/s/full1/metrics.json"), str(inp / "ft/s/adapter1/metrics.json"),
                "--students", str(inp / "distill/s"), "--teacher", str(inp / "teacher"),
                "--out", str(out / "summary")]
    raise KeyError(stage)


CHAIN = ("download-corpus", "download-teacher", "tokenize", "prepare-task", "distill", "finetune",
         "finetune-adapter", "aggregate")
# what each long stage writes (relative to its output root)
OUTPUTS = {"tokenize": "tokens", "distill": "distill/s", "finetune": "ft/s/full1", "aggregate": "summary"}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, sources) -> dict[str, Any]:
    """The chain run twice at once, in two processes with different hash seeds."""
    roots = {name: tmp_path_factory.mktemp(f"run-{name}") for name in "ab"}
    procs = {name: start([stage_args(s, root, root, sources) for s in CHAIN], root,
                         env={"PYTHONHASHSEED": str(seed)})
             for (name, root), seed in zip(roots.items(), (1, 2))}
    ops = {}
    for name, proc in procs.items():
        code, done, text = wait(proc)
        assert code == 0 and len(done) == len(CHAIN) and all(d["code"] in (0, None) for d in done), text[-6000:]
        ops[name] = {stage: d["ops"] for stage, d in zip(CHAIN, done)}
    return {"a": roots["a"], "b": roots["b"], "ops": ops["a"]}


# ------------------------------------------------------------------------------------------------
# comparing outputs: everything but what a run may not control (timings, throughput, provenance)

VOLATILE_KEYS = {"runtime", "elapsed", "tflops", "achieved_tflops", "resumed_from", "cache_hit"}
BINARY = {".safetensors", ".bin", ".png", ".npz", ".pt"}
TEMPORARY = re.compile(r"^\..*\.(tmp|old)$")  # the atomic writers' siblings: never an output
MODEL_CARD = ("README.md",)  # prose that also reports throughput (sequences/s per recursion depth)


def _rooted(text: str, roots: tuple[Path, ...]) -> str:
    for root in roots:
        text = text.replace(str(root), "<root>")
    return text


def _stable(obj: Any, roots: tuple[Path, ...]) -> Any:
    if isinstance(obj, dict):
        return {k: _stable(v, roots) for k, v in obj.items()
                if k not in VOLATILE_KEYS and not k.endswith(("_seconds", "per_second"))}
    if isinstance(obj, list):
        return [_stable(v, roots) for v in obj]
    if isinstance(obj, str):
        return _rooted(obj, roots)
    return obj


def contents(root: Path, rel: str, skip: tuple[str, ...] = MODEL_CARD, inputs: Path | None = None
             ) -> dict[str, Any]:
    """Every file under `root/rel`, comparable between runs in different roots (`inputs`: the
    root the run read from, when another)."""
    roots = (root,) if inputs is None else (root, inputs)
    base = root / rel
    files = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else [base]
    out = {}
    for path in files:
        name = path.relative_to(root).as_posix()
        if path.name in skip or any(TEMPORARY.match(part) for part in path.relative_to(root).parts):
            continue
        data = path.read_bytes()
        if path.suffix == ".json":
            out[name] = _stable(json.loads(data), roots)
        elif path.suffix in BINARY:
            out[name] = hashlib.sha256(data).hexdigest()
        else:
            out[name] = _rooted(data.decode("utf-8"), roots)
    return out


def leftovers(root: Path) -> list[str]:
    """Temporary files or folders of the atomic writers anywhere under `root`."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(".*") if TEMPORARY.match(p.name))


# ------------------------------------------------------------------------------------------------
# reproducibility


def test_same_config_and_seed_give_identical_weights_predictions_and_scores(pipeline):
    a, b = pipeline["a"], pipeline["b"]
    weights = a / "distill/s/model.safetensors"
    assert sha256_file(weights) == sha256_file(b / "distill/s/model.safetensors")
    metrics = json.loads((a / "ft/s/full1/metrics.json").read_text())
    assert metrics["predictions"][metrics["reported_split"]]["pred"], "no predictions recorded"
    for rel in ("corpus", "teacher", "tokens", "task", "distill/s", "ft", "summary"):
        # the summary's prose and plot also show the distillation's throughput
        skip = MODEL_CARD + (("results.md", "scores.png") if rel == "summary" else ())
        assert contents(a, rel, skip) == contents(b, rel, skip), rel


def test_a_fine_tuned_checkpoint_keeps_the_models_tokenizer(pipeline):
    model = json.loads((pipeline["a"] / "distill/s/tokenizer.json").read_text())
    for arm in ("full1", "adapter1"):  # the first one built the cache, the second one hit it
        saved = json.loads((pipeline["a"] / f"ft/s/{arm}/checkpoint/tokenizer.json").read_text())
        assert saved == model, arm


# ------------------------------------------------------------------------------------------------
# interruptions: SIGKILL at a seeded random point of each long stage, then rerun


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, pipeline) -> dict[str, dict]:
    """Each long stage killed once (all at the same time), then rerun in one process."""
    a, seed = pipeline["a"], int(os.environ.get("MINIALBERT_KILL_SEED", "0"))
    runs = {}
    for stage, rel in OUTPUTS.items():
        n = pipeline["ops"][stage]
        k = int(np.random.default_rng([seed, zlib.crc32(stage.encode())]).integers(1, n + 1))
        root = tmp_path_factory.mktemp(f"kill-{stage}")
        runs[stage] = {"root": root, "rel": rel, "kill_at": f"operation {k} of {n}",
                       "proc": start([stage_args(stage, a, root)], root, kill=[0, k])}
    for run in runs.values():
        run["code"], _, run["log"] = wait(run.pop("proc"))
        done = run["root"] / run["rel"]
        run["after_kill"] = contents(run["root"], run["rel"], (), inputs=a) if done.exists() else {}
    rerun_root = tmp_path_factory.mktemp("rerun")
    proc = start([stage_args(stage, a, run["root"]) for stage, run in runs.items()], rerun_root)
    code, done, text = wait(proc)
    assert code == 0 and all(d["code"] in (0, None) for d in done), text[-6000:]
    return runs


@pytest.mark.parametrize("stage", list(OUTPUTS))
def test_sigkill_then_rerun_equals_an_uninterrupted_run(stage, pipeline, interrupted):
    run = interrupted[stage]
    where = f"{stage} killed at {run['kill_at']}"
    assert run["code"] == -signal.SIGKILL, f"{where}: not killed\n{run['log'][-3000:]}"
    skip = MODEL_CARD
    reference = contents(pipeline["a"], run["rel"], skip)
    # no partial file is taken as an output: whatever exists after the kill is already whole
    for name, value in run["after_kill"].items():
        assert name.endswith(skip) or value == reference[name], f"{where}: partial {name} after the kill"
    assert contents(run["root"], run["rel"], skip, inputs=pipeline["a"]) == reference, where
    assert leftovers(run["root"]) == [], where
    if stage == "distill":  # the resumable state is dropped once every step is done
        assert not (run["root"] / "distill/s.state").exists(), where


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, sources, monkeypatch,
                                                                       capsys, torch_threads):
    """ENOSPC half-way through the second checkpoint: one clear line, exit 1, state 2 intact."""
    tokens = make_tokens(tmp_path / "tokens", sources["teacher"], n_windows=32, max_length=32)
    out, state = tmp_path / "student", tmp_path / "student.state"
    argv = ["distill", "--teacher", str(sources["teacher"]), "--tokens", str(tokens), "--student-spec",
            json.dumps(STUDENT), "--spec", json.dumps({**DISTILL, "threads": None}), "--out", str(out)]
    real_save, saves = torch.save, []

    def save_until_the_disk_fills(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) == 1:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    with pytest.raises(SystemExit) as exit:
        cli_main(argv)
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert exit.value.code == 1 and "Traceback" not in err and last.startswith("minialbert distill: error:"), err
    assert "no space left on device" in last and str(state / "latest.pt") in last, err
    kept = torch.load(state / "latest.pt", weights_only=True)
    assert kept["step"] == 2 and all(torch.isfinite(v).all() for v in kept["model"].values())
    assert not out.exists() and leftovers(tmp_path) == []

    monkeypatch.setattr(torch, "save", real_save)
    cli_main(argv + ["--resume"])
    assert "resumed from" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["resumed_from"] == 2


def test_a_full_disk_is_named_even_when_the_writer_hides_errno(tmp_path, monkeypatch):
    """torch.save reports ENOSPC as RuntimeError("... unexpected pos ..."): the free space tells."""
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10, 10, 0))
    (tmp_path / "latest.pt").write_bytes(b"previous")
    with pytest.raises(atomic.DiskFullError, match="no space left on device while writing"):
        with atomic.staged_file(tmp_path / "latest.pt") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert (tmp_path / "latest.pt").read_bytes() == b"previous" and leftovers(tmp_path) == []


def test_one_failed_finetune_job_does_not_lose_the_others(tmp_path, capsys):
    """`snakemake --keep-going` on two fine-tuning jobs: the LoRA one fails (no such target
    module), the full one's metrics are written. The teacher and the task are prepared here, in
    this process, so that the DAG is just the two jobs."""
    work = copy_workflow(tmp_path / "work")
    task = {"source": "package", "dataset": "bbc_topic", "max_train": 16, "max_eval": 8}
    config = {
        "students": [{"name": "s", "init": "random", "distill": False}],
        "tasks": {"bbc_topic": task},
        "finetune": {"models": ["teacher"], "modes": ["full", "lora"], "seeds": [1],
                     "learning_rates": {"full": [1e-4], "lora": [5e-4]},
                     "settings": {"epochs": 1, "batch_size": 8, "max_length": 32, "anytime": False,
                                  "lora_targets": ["no_such_module"]}},
    }
    (work / "keep_going.yaml").write_text(yaml.safe_dump(config))
    cli_main(["download-teacher", "--spec", "{}", "--out", str(work / "resources/teacher/minilm")])
    cli_main(["prepare-task", "--name", "bbc_topic", "--spec", json.dumps(task),
              "--out", str(work / "resources/tasks/bbc_topic")])
    capsys.readouterr()
    good = "results/finetune/teacher/bbc_topic/full/lr0.0001/seed1/metrics.json"
    bad = "results/finetune/teacher/bbc_topic/lora/lr0.0005/seed1/metrics.json"
    proc = snakemake(work, "--cores", "2", "--keep-going", good, bad, "--configfile", "keep_going.yaml",
                     check=False)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert job_counts(proc.stdout + proc.stderr) == {"finetune": 2}, proc.stderr[-3000:]
    assert json.loads((work / good).read_text())["reported"], proc.stderr[-3000:]
    assert not (work / bad).exists()
    log = (work / "logs/finetune/teacher/bbc_topic/lora/lr0.0005/seed1.log").read_text()
    assert "no_such_module" in log and "Traceback" not in log, log[-2000:]


# ------------------------------------------------------------------------------------------------
# numerical safety


@pytest.fixture
def torch_threads():
    """In-process stages may set torch's thread count: restore it for the tests that follow."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_nan_in_distillation_stops_with_one_line_and_keeps_the_last_checkpoint(
        tmp_path, sources, monkeypatch, capsys, torch_threads):
    tokens = make_tokens(tmp_path / "tokens", sources["teacher"], n_windows=32, max_length=32)
    out = tmp_path / "student"
    monkeypatch.setenv(FAULT_ENV, "nan@4")
    with pytest.raises(SystemExit) as exit:
        cli_main(["distill", "--teacher", str(sources["teacher"]), "--tokens", str(tokens), "--student-spec",
                  json.dumps(STUDENT), "--spec", json.dumps({**DISTILL, "threads": None}), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit.value.code == 1 and "non-finite loss" in err[-1] and "Traceback" not in "\n".join(err)
    assert torch.load(tmp_path / "student.state/latest.pt", weights_only=True)["step"] == 4
    assert not out.exists()


def test_nan_in_finetuning_stops_with_one_line_and_keeps_the_previous_result(
        tmp_path, pipeline, capsys, torch_threads):
    out = tmp_path / "ft/s/full1/metrics.json"
    out.parent.mkdir(parents=True)
    out.write_text('{"previous": true}\n')
    argv = finetune_args(pipeline["a"], tmp_path, cache=tmp_path / "cache")
    argv[argv.index("--lr") + 1] = "1e38"  # one AdamW step of ~1e38 per weight: inf activations
    with pytest.raises(SystemExit) as exit:
        cli_main(argv)
    err = capsys.readouterr().err.strip()
    assert exit.value.code == 1 and "Traceback" not in err
    assert re.search(r"nan|inf|non-finite", err.splitlines()[-1], re.I), err
    assert json.loads(out.read_text()) == {"previous": True}


def test_gradient_clipping_is_on_by_default():
    assert settings.defaults("distill")["grad_clip"] > 0
    assert settings.defaults("finetune.settings")["grad_clip"] > 0


# ------------------------------------------------------------------------------------------------
# security: weights are tensors only, and no remote code runs


def _calls(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def test_weights_are_loaded_as_tensors_only():
    """torch.load only with weights_only=True, no pickle, numpy arrays without pickles."""
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if re.search(r"^\s*(import|from)\s+(pickle|cPickle|dill|cloudpickle|joblib)\b", text, re.M):
            problems.append(f"{path.name}: imports a pickle library")
        for call in _calls(path):
            func = ast.unparse(call.func)
            if func.endswith("torch.load") and not _is_const(_keyword(call, "weights_only"), True):
                problems.append(f"{path.name}:{call.lineno}: {func} without weights_only=True")
            if func in ("np.load", "numpy.load") and _is_const(_keyword(call, "allow_pickle"), True):
                problems.append(f"{path.name}:{call.lineno}: np.load(allow_pickle=True)")
    assert problems == []


REMOTE_CODE_GAPS: dict[str, str] = {}  # file -> why it may still lack trust_remote_code=False


def _files_loading_models():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if "from_pretrained" in path.read_text(encoding="utf-8"):
            gap = REMOTE_CODE_GAPS.get(rel)
            yield pytest.param(rel, marks=[pytest.mark.xfail(strict=True, reason=gap)] if gap else [])


@pytest.mark.parametrize("rel", list(_files_loading_models()))
def test_no_remote_code_is_ever_trusted(rel):
    """Every Auto*.from_pretrained says trust_remote_code=False; nothing says True."""
    problems = []
    for call in _calls(SRC / rel):
        value = _keyword(call, "trust_remote_code")
        if value is not None and not _is_const(value, False):
            problems.append(f"{rel}:{call.lineno}: trust_remote_code={ast.unparse(value)}")
        func = ast.unparse(call.func)
        receiver = func.rsplit(".", 1)[0].rsplit(".", 1)[-1]
        # Auto classes (or a variable holding one) may run code; our own classes cannot
        may_run_code = receiver.startswith("Auto") or not receiver[:1].isupper()
        if func.endswith(".from_pretrained") and may_run_code and value is None:
            problems.append(f"{rel}:{call.lineno}: {func} without trust_remote_code=False")
    assert problems == []


def _malicious_folder(folder: Path, teacher_package_dir: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (teacher_package_dir / name).exists():
            shutil.copy(teacher_package_dir / name, folder / name)
    return folder


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_teacher_cannot_run_code(tmp_path, teacher_package_dir, capsys):
    import pickle

    folder = _malicious_folder(tmp_path / "evil", teacher_package_dir)
    marker = tmp_path / "code-ran"
    with open(folder / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"bert.embeddings.word_embeddings.weight": _RunsCode(marker)}, fh)
    out = tmp_path / "teacher"
    spec_ = {"source": "files", "package": None, "path": str(folder), "sha256": None, "has_mlm_head": None}
    with pytest.raises(SystemExit) as exit:
        cli_main(["download-teacher", "--spec", json.dumps(spec_), "--out", str(out)])
    err = capsys.readouterr().err
    assert exit.value.code == 1 and "weights_only=True" in err and "pytorch_model.bin" in err
    assert not marker.exists() and not out.exists() and leftovers(tmp_path) == []


def test_a_checkpoint_asking_for_remote_code_is_refused(tmp_path, pipeline, capsys, torch_threads):
    """A model folder whose config.json maps the Auto classes to its own modeling file."""
    folder = tmp_path / "custom"
    shutil.copytree(pipeline["a"] / "distill/s", folder)
    marker = tmp_path / "code-ran"
    (folder / "custom_model.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "custom_thing"
    config["auto_map"] = {k: f"custom_model.{k}" for k in
                          ("AutoConfig", "AutoModel", "AutoModelForSequenceClassification")}
    (folder / "config.json").write_text(json.dumps(config))
    argv = finetune_args(pipeline["a"], tmp_path, cache=tmp_path / "cache")
    argv[argv.index("--model") + 1] = str(folder)
    with pytest.raises(SystemExit) as exit:
        cli_main(argv)
    err = capsys.readouterr().err
    assert exit.value.code == 1 and "custom code" in err and "Traceback" not in err, err
    assert not marker.exists() and not (tmp_path / "ft").exists()


# ------------------------------------------------------------------------------------------------
# load: jobs racing on shared files


def test_concurrent_finetune_jobs_leave_the_task_folder_and_cache_verified(tmp_path, pipeline):
    """Three fine-tuning processes start at once on one fresh task folder: all build the
    tokenisation cache at the same time; afterwards it is whole and verifies against the task."""
    from minialbert.finetune.batches import load_or_build_cache, load_tokenizer
    from minialbert.tasks.folder import read_task_json

    a, task = pipeline["a"], tmp_path / "task"
    shutil.copytree(a / "task", task, ignore=shutil.ignore_patterns("cache"))
    before = {p.name: sha256_file(p) for p in task.iterdir() if p.is_file()}
    jobs = [("full", 1), ("full", 2), ("adapter", 1)]
    procs = [start([finetune_args(a, tmp_path, mode, seed, task=task)], tmp_path / f"job-{mode}{seed}")
             for mode, seed in jobs]
    for proc in procs:
        code, done, text = wait(proc)
        assert code == 0 and done and done[0]["code"] in (0, None), text[-4000:]
    assert {p.name: sha256_file(p) for p in task.iterdir() if p.is_file()} == before
    caches = list((task / "cache").iterdir())
    assert len(caches) == 1 and caches[0].suffix == ".npz", caches
    _, hit = load_or_build_cache(task, read_task_json(task), None, load_tokenizer(a / "distill/s"),
                                 FINETUNE["max_length"], "word")
    assert hit, "the cache does not verify against the task files"
    # the racing jobs computed what a job alone computes
    assert contents(tmp_path, "ft/s/full1/metrics.json", inputs=a) == contents(a, "ft/s/full1/metrics.json")


def test_staged_writers_racing_for_one_folder_all_succeed(tmp_path):
    import threading

    errors = []

    def write(i: int) -> None:
        try:
            with atomic.staged_dir(tmp_path / "out") as tmp:
                (tmp / "data").write_text(chr(65 + i) * 1000)
        except Exception as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set((tmp_path / "out/data").read_text())) == 1 and leftovers(tmp_path) == []
