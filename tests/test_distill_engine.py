"""The distillation engine on a tiny teacher and corpus: learning, outputs, checkpoints and exact
resume (also after SIGKILL), SIGTERM, non-finite losses, the CLI, and 2-process DDP (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minialbert.cli import main as cli_main
from minialbert.distill.engine import run
from minialbert.distill.faults import EXIT_INCOMPLETE, EXIT_PREEMPTED, FAULT_ENV, NonFiniteLossError, RunIncomplete
from test_distill_helpers import counting_world, make_teacher, make_tokens, spec, student_spec


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, teacher_package_dir):
    root = tmp_path_factory.mktemp("distill")
    teacher = make_teacher(root / "teacher", teacher_package_dir, hidden=48, layers=4, heads=4, intermediate=64)
    same = make_teacher(root / "teacher32", teacher_package_dir, hidden=32, layers=4, heads=4, intermediate=64,
                        mlm_head=False)
    tokens = make_tokens(root / "tokens", teacher, n_windows=64, max_length=32)
    return {"root": root, "teacher": teacher, "teacher32": same, "tokens": tokens}


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


def assert_same_weights(a: Path, b: Path, exact=True):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        if exact:
            assert torch.equal(wa[k], wb[k]), k
        else:
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=k)


def cli(args: list[str], env_extra: dict | None = None, **kw) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env_extra or {})})
    return subprocess.Popen([sys.executable, "-m", "minialbert", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def distill_args(t, out, sp, st, resume=False, extra=()):
    args = ["distill", "--teacher", str(t["teacher"]), "--tokens", str(t["tokens"]), "--student-spec",
            json.dumps(st), "--spec", json.dumps(sp), "--out", str(out)]
    return args + (["--resume"] if resume else []) + list(extra)


# ---- learning and outputs -----------------------------------------------------------------------

def test_loss_goes_down_and_outputs_are_complete(tiny):
    out = tiny["root"] / "learn"
    sp = spec(steps=40, batch_size=8, lr=3e-3, warmup_steps=4, log_every=5, eval_every=20, checkpoint_every=10,
              tensorboard=True)
    s = run(tiny["teacher"], tiny["tokens"], student_spec(), sp, out)
    log = json.loads((out / "train_log.json").read_text())
    first, last = log["train"][0], log["train"][-1]
    assert last["loss"] < 0.8 * first["loss"]
    assert last["mlm"] < first["mlm"] and last["hid"] < first["hid"]
    for rec in log["train"]:
        assert {"step", "tokens", "loss", "mlm", "att", "hid", "tokens_per_second", "lr", "grad_norm"} <= rec.keys()
        assert rec["tokens_per_second"] > 0 and "kd" not in rec  # kd weight 0: not computed
    assert [e["step"] for e in log["eval"]] == [20, 40] and log["eval"][-1]["total"] < log["eval"][0]["total"]
    summ = json.loads((out / "summary.json").read_text())
    assert summ["steps"] == 40 and summ["complete"] and summ["tokens_seen"] == 40 * 8 * 32
    assert summ["tokens_per_second"] > 0 and summ["layer_map"] == [1, 3] and summ["hid_projection"]
    assert set(summ["final_losses"]) == {"mlm", "att", "hid", "total"} and summ["eval_losses"]["step"] == 40
    assert summ["parameter_counts"]["total"] == s["parameter_counts"]["total"]
    for f in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "train_log.json", "summary.json"):
        assert (out / f).is_file(), f
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert not any(k.startswith("proj") for k in weights(out))  # the HID projection is not saved
    assert not (tiny["root"] / "learn.state").exists()  # completed: the state is removed

    from transformers import AutoModelForMaskedLM

    import minialbert  # noqa: F401  (registers the Auto classes)

    model = AutoModelForMaskedLM.from_pretrained(out)
    assert type(model).__name__ == "MiniAlbertForMaskedLM"


@pytest.fixture(scope="module")
def counting(tmp_path_factory):
    """A tiny teacher whose MLM head is trained (KD is refused from an untrained one)."""
    return counting_world(tmp_path_factory.getbasetemp() / "counting")  # shared with test_teacher_head


def test_teacher_init_kd_and_head_mismatch(tiny, counting):
    """init: teacher (equal widths), KD with a head, 2 student heads vs 4 teacher heads, MSE HID."""
    root = tiny["root"]
    teacher = counting["teacher"]  # 2 layers of 32, 4 heads, intermediate 64
    out = root / "kd"
    s = run(teacher, counting["tokens"],
            student_spec(init="teacher", num_recursions=3),
            spec(steps=4, hid_loss="mse", weights={"mlm": 1, "kd": 5, "att": 3, "hid": 3}), out)
    assert s["init_info"]["mlm_head_copied"] is True
    assert s["layer_map"] == [0, 0, 1] and not s["hid_projection"]
    assert {"mlm", "kd", "att", "hid"} <= set(s["final_losses"])
    out2 = root / "heads"
    s2 = run(teacher, counting["tokens"], student_spec(num_attention_heads=2),
             spec(steps=2, layer_map=[None, 1]), out2)
    assert s2["layer_map"] == [None, 1] and all(v == v for v in s2["final_losses"].values())


def test_distill_false_writes_the_initialised_student(tiny):
    out = tiny["root"] / "init-only"
    s = run(tiny["teacher32"], None, student_spec(init="teacher", distill=False), spec(), out)
    summ = json.loads((out / "summary.json").read_text())
    assert summ["steps"] == 0 and summ["distill"] is False and summ["init"] == "teacher"
    assert (out / "model.safetensors").is_file() and s["init_info"]["teacher_layer"] == 2
    assert json.loads((out / "train_log.json").read_text()) == {"train": [], "eval": []}


def test_hid_projection_never_with_different_widths_fails(tiny):
    with pytest.raises(ValueError, match="hid_projection is 'never'"):
        run(tiny["teacher"], tiny["tokens"], student_spec(), spec(hid_projection="never"), tiny["root"] / "never")


def test_cli_errors_name_the_key(tiny, capsys):
    p = cli(distill_args(tiny, tiny["root"] / "bad", {"steps": 2, "learning_rate": 1}, student_spec()))
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1 and "unknown key(s) learning_rate" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as stop:  # in-process: the same CLI, without another interpreter start
        cli_main(["distill", "--teacher", str(tiny["teacher32"]), "--tokens", str(tiny["tokens"]), "--student-spec",
                  json.dumps(student_spec()), "--spec", json.dumps({"weights": {"kd": 1.0}}), "--out",
                  str(tiny["root"] / "bad2")])
    err = capsys.readouterr().err
    assert stop.value.code == 1 and "distill.weights.kd > 0 needs a teacher with an MLM head" in err


# ---- resume, SIGKILL, SIGTERM, non-finite -------------------------------------------------------

RESUME_SPEC = spec(steps=8, checkpoint_every=2, eval_every=4)


@pytest.fixture(scope="module")
def reference_run(tiny):
    """One uninterrupted run in a subprocess (the same process setup as the interrupted ones)."""
    out = tiny["root"] / "ref"
    p = cli(distill_args(tiny, out, RESUME_SPEC, student_spec()))
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    return out


def _wait_for_checkpoint(p, state: Path, timeout=120):
    t0 = time.time()
    while not (state / "latest.pt").exists():
        assert p.poll() is None, p.communicate()[1][-3000:]
        assert time.time() - t0 < timeout
        time.sleep(0.02)


def test_sigkill_then_resume_is_exact(tiny, reference_run):
    out = tiny["root"] / "killed"
    p = cli(distill_args(tiny, out, RESUME_SPEC, student_spec()), {FAULT_ENV: "sleep=0.25"})
    _wait_for_checkpoint(p, tiny["root"] / "killed.state")
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert not out.exists()  # no half-written output
    step = torch.load(tiny["root"] / "killed.state" / "latest.pt", weights_only=True)["step"]
    assert 2 <= step < 8
    p = cli(distill_args(tiny, out, RESUME_SPEC, student_spec(), resume=True))
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert "resumed from" in err
    assert json.loads((out / "summary.json").read_text())["resumed_from"] == step
    assert_same_weights(out, reference_run)
    la = json.loads((out / "train_log.json").read_text())
    lb = json.loads((reference_run / "train_log.json").read_text())
    assert [r["loss"] for r in la["train"]] == [r["loss"] for r in lb["train"]]
    assert la["eval"] == lb["eval"]


def test_sigterm_checkpoints_and_exits_143_then_resumes_exactly(tiny, reference_run):
    out = tiny["root"] / "preempted"
    state = tiny["root"] / "preempted.state"
    p = cli(distill_args(tiny, out, RESUME_SPEC, student_spec(), resume=True), {FAULT_ENV: "sleep=0.25"})
    _wait_for_checkpoint(p, state)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == EXIT_PREEMPTED == 143, err[-3000:]
    assert "SIGTERM" in err and not out.exists()
    step = torch.load(state / "latest.pt", weights_only=True)["step"]
    assert 2 < step < 8  # written at the step boundary after the signal, not only the periodic one
    p = cli(distill_args(tiny, out, RESUME_SPEC, student_spec(), resume=True))
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert_same_weights(out, reference_run)


def test_max_steps_then_resume_is_exact_and_a_changed_spec_starts_fresh(tiny, reference_run, capsys):
    out = tiny["root"] / "budget"
    with pytest.raises(RunIncomplete) as stop:
        run(tiny["teacher"], tiny["tokens"], student_spec(), RESUME_SPEC, out, max_steps=3)
    assert stop.value.code == EXIT_INCOMPLETE == 75 and stop.value.step == 3 and stop.value.steps == 8
    assert "stopped at step 3 of 8 (--max-steps 3)" in capsys.readouterr().err
    assert (tiny["root"] / "budget.state" / "latest.pt").exists()  # kept for --resume
    assert not out.exists()  # an incomplete student is never written
    s = run(tiny["teacher"], tiny["tokens"], student_spec(), RESUME_SPEC, out, resume=True)
    assert s["resumed_from"] == 3 and s["steps"] == 8
    assert_same_weights(out, reference_run)
    la, lb = (json.loads((d / "train_log.json").read_text()) for d in (out, reference_run))
    assert la["eval"] == lb["eval"] and [r["loss"] for r in la["train"]] == [r["loss"] for r in lb["train"]]
    # a state made with other method settings is not resumed from
    with pytest.raises(RunIncomplete):
        run(tiny["teacher"], tiny["tokens"], student_spec(), RESUME_SPEC, tiny["root"] / "budget2", max_steps=2)
    s = run(tiny["teacher"], tiny["tokens"], student_spec(), {**RESUME_SPEC, "lr": 1e-3, "steps": 2},
            tiny["root"] / "budget2", resume=True)
    assert s["resumed_from"] is None and s["steps"] == 2
    # --max-steps equal to the configured steps is a complete run
    s = run(tiny["teacher"], tiny["tokens"], student_spec(), {**RESUME_SPEC, "steps": 2}, tiny["root"] / "budget3",
            max_steps=2)
    assert s["complete"] and (tiny["root"] / "budget3" / "summary.json").is_file()


def test_max_minutes_stops_cleanly_with_a_checkpoint(tiny, monkeypatch):
    out = tiny["root"] / "minutes"
    monkeypatch.setenv(FAULT_ENV, "sleep=0.2")
    with pytest.raises(RunIncomplete) as stop:
        run(tiny["teacher"], tiny["tokens"], student_spec(), {**RESUME_SPEC, "max_minutes": 0.01}, out)
    step = stop.value.step
    assert stop.value.code == 75 and "max_minutes 0.01 reached" in stop.value.message and 1 <= step < 8
    assert not out.exists()
    state = torch.load(tiny["root"] / "minutes.state" / "latest.pt", weights_only=True)
    assert state["step"] == step and state["data_position"] == [0, step * 4]


def test_cli_exits_75_when_incomplete(tiny, capsys):
    with pytest.raises(SystemExit) as stop:
        cli_main(distill_args(tiny, tiny["root"] / "cli75", RESUME_SPEC, student_spec(), extra=["--max-steps", "1"]))
    err = capsys.readouterr().err
    assert stop.value.code == EXIT_INCOMPLETE, err[-3000:]
    line = [ln for ln in err.splitlines() if "incomplete" in ln]
    assert line and "step 1 of 8" in line[0] and "--resume" in line[0] and "Traceback" not in err
    assert not (tiny["root"] / "cli75").exists() and (tiny["root"] / "cli75.state" / "latest.pt").is_file()


def test_epochs_fix_the_steps_and_the_schedule(tiny):
    """1.5 epochs of 64 windows at a global batch of 4 x 2: ceil(96 / 8) = 12 steps, decayed to 0 at 12."""
    out = tiny["root"] / "epochs"
    s = run(tiny["teacher"], tiny["tokens"], student_spec(),
            spec(steps=3, epochs=1.5, grad_accum=2, eval_every=0, checkpoint_every=0), out)
    assert s["steps"] == 12 and s["epochs"] == 1.5 and s["spec"]["steps"] == 12
    log = json.loads((out / "train_log.json").read_text())["train"]
    assert [r["step"] for r in log] == list(range(1, 13)) and log[-1]["lr"] == 0.0
    assert log[-2]["lr"] == pytest.approx(2e-3 / 11)  # linear decay over 12 steps after 1 warm-up step


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny, monkeypatch):
    out = tiny["root"] / "nan"
    monkeypatch.setenv(FAULT_ENV, "nan@4")  # the 5th optimiser step
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss or gradient at step 5.*last good checkpoint "
                                                 r"\(step 4\)"):
        run(tiny["teacher"], tiny["tokens"], student_spec(), RESUME_SPEC, out)
    state = torch.load(tiny["root"] / "nan.state" / "latest.pt", weights_only=True)
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not out.exists()
    monkeypatch.delenv(FAULT_ENV)
    with pytest.raises(NonFiniteLossError):
        run(tiny["teacher"], tiny["tokens"], student_spec(), {**RESUME_SPEC, "lr": 1e30, "grad_clip": None},
            tiny["root"] / "nan2")


# ---- multi-process ------------------------------------------------------------------------------

def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tiny):
    st = student_spec(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    base = spec(steps=4, grad_accum=2, checkpoint_every=0, eval_every=2)
    one, two = tiny["root"] / "ddp1", tiny["root"] / "ddp2"
    p = cli(distill_args(tiny, one, {**base, "batch_size": 4}, st))
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(FAULT_ENV, None)
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "minialbert", *distill_args(tiny, two, {**base, "batch_size": 2}, st)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    s1 = json.loads((one / "summary.json").read_text())
    s2 = json.loads((two / "summary.json").read_text())
    assert s2["world_size"] == 2 and s1["global_batch"] == s2["global_batch"] == 8
    l1 = json.loads((one / "train_log.json").read_text())
    l2 = json.loads((two / "train_log.json").read_text())
    for key in ("loss", "mlm", "att", "hid"):
        a, b = [r[key] for r in l1["train"]], [r[key] for r in l2["train"]]
        assert len(a) == 4 and torch.allclose(torch.tensor(a), torch.tensor(b), rtol=1e-4, atol=1e-6), (key, a, b)
    for e1, e2 in zip(l1["eval"], l2["eval"]):
        assert e1["total"] == pytest.approx(e2["total"], rel=1e-4)
    assert_same_weights(one, two, exact=False)
