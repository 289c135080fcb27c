"""The GPU check behind `benchmarks/gpu_check.sh` (read that first): tests, a tiny distillation and
the paper-shape benchmark on CUDA, reported in `benchmarks/results/gpu_check.md`.

Each part runs in its own process with a time limit, so one failure or hang still leaves a report.
Where pytest is not installed (a stock CUDA PyTorch image) the test file runs under `StandIn`, a
few lines of pytest's API that tests/test_distill_devices.py uses.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import inspect
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks" / "results" / "gpu_check.md"
TEST_FILE = "tests/test_distill_devices.py"
LIMITS = {"tests": 300, "distill": 150, "bench": 240}  # seconds; together < 8 minutes


# ---- part 1: the CUDA subset of the tests -------------------------------------------------------

class StandIn:
    """Enough of pytest for one test module: fixtures by name, parametrize / skipif marks, raises,
    approx, tmp_path, tmp_path_factory and monkeypatch.setenv."""

    class Mark:
        def __init__(self, name, args, kwargs):
            self.name, self.args, self.kwargs = name, args, kwargs

        def __call__(self, fn):
            fn.__dict__.setdefault("marks", []).append(self)
            return fn

    class mark:  # noqa: N801 - pytest's spelling
        def __getattr__(self, name):
            return lambda *args, **kwargs: StandIn.Mark(name, args, kwargs)

    mark = mark()

    class param:  # noqa: N801
        def __init__(self, value, marks=()):
            self.value, self.marks = value, list(marks) if isinstance(marks, (list, tuple)) else [marks]

    @staticmethod
    def fixture(scope="function"):
        def deco(fn):
            fn.is_fixture = True
            return fn
        return deco

    @staticmethod
    @contextlib.contextmanager
    def raises(exc, match=None):
        try:
            yield
        except exc:
            return
        raise AssertionError(f"DID NOT RAISE {exc.__name__}")

    class approx:  # noqa: N801
        def __init__(self, expected, rel=1e-6, abs=1e-12):  # noqa: A002
            self.expected, self.rel, self.abs = expected, rel, abs

        def __eq__(self, other):
            pairs = zip(other, self.expected) if isinstance(self.expected, list) else [(other, self.expected)]
            if isinstance(self.expected, list) and len(other) != len(self.expected):
                return False
            return all(abs(a - b) <= max(self.rel * abs(b), self.abs) for a, b in pairs)

    @staticmethod
    def run_module(name: str) -> int:
        sys.modules["pytest"] = StandIn  # before the test module imports it
        module = importlib.import_module(name)
        base = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        factory = type("Factory", (), {"getbasetemp": staticmethod(lambda: base)})()
        cache: dict[str, object] = {}
        failed = 0
        for test_name, fn in inspect.getmembers(module, inspect.isfunction):
            if not test_name.startswith("test_"):
                continue
            marks = fn.__dict__.get("marks", [])
            params = [m.args[:2] for m in marks if m.name == "parametrize"] or [(None, [None])]
            for arg, value in ((a, v) for a, vs in params for v in vs):
                value_marks = value.marks if isinstance(value, StandIn.param) else []
                value = value.value if isinstance(value, StandIn.param) else value
                label = f"{test_name}[{value}]" if arg else test_name
                skip = [m.kwargs.get("reason", "") for m in marks + value_marks if m.name == "skipif" and m.args[0]]
                if skip:
                    print(f"SKIPPED {label}: {skip[0]}")
                    continue
                env = dict(os.environ)
                kwargs = {}
                for p in inspect.signature(fn).parameters:
                    if p == arg:
                        kwargs[p] = value
                    elif p == "tmp_path":
                        kwargs[p] = Path(tempfile.mkdtemp(dir=base))
                    elif p == "monkeypatch":
                        kwargs[p] = type("MonkeyPatch", (), {"setenv": staticmethod(os.environ.__setitem__)})()
                    else:  # a module fixture
                        if p not in cache:
                            cache[p] = getattr(module, p)(factory)
                        kwargs[p] = cache[p]
                t0 = time.perf_counter()
                try:
                    fn(**kwargs)
                    print(f"PASSED {label} ({time.perf_counter() - t0:.1f}s)")
                except Exception:  # noqa: BLE001 - report and go on
                    failed += 1
                    print(f"FAILED {label}\n{traceback.format_exc()}")
                finally:
                    os.environ.clear()
                    os.environ.update(env)
        print(f"{'FAILED' if failed else 'PASSED'}: {failed} failed")
        return 1 if failed else 0


def run_tests() -> tuple[int, str]:
    try:
        import pytest  # noqa: F401

        cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--durations=0", TEST_FILE]
    except ImportError:
        cmd = [sys.executable, __file__, "--stand-in", Path(TEST_FILE).stem]
    return timed(cmd, LIMITS["tests"])


# ---- part 2: a tiny distillation on CUDA --------------------------------------------------------

def tiny_distillation() -> dict:
    """KD from a tiny teacher whose head was trained first, 200 steps of 32 windows, precision auto."""
    from minialbert.distill.engine import run
    from test_distill_helpers import counting_world, spec_object, student_object

    root = Path(tempfile.mkdtemp(prefix="gpu-check-distill-"))
    world = counting_world(root)
    t0 = time.perf_counter()
    s = run(world["teacher"], world["tokens"], student_object(init="teacher"),
            spec_object(steps=200, batch_size=32, lr=3e-3, warmup_steps=20, log_every=20, eval_every=100,
                        checkpoint_every=100, threads=None, weights={"mlm": 1.0, "kd": 5.0, "att": 1.0, "hid": 1.0},
                        precision="auto"), root / "student")
    log = json.loads((root / "student" / "train_log.json").read_text())
    first, last = log["train"][0], log["train"][-1]
    return {"seconds": round(time.perf_counter() - t0, 1), "device": s["device"], "precision": s["precision"],
            "steps": s["steps"], "tokens_seen": s["tokens_seen"],
            "steady_tokens_per_second": s["steady_tokens_per_second"],
            "teacher_mlm_accuracy": s["teacher_mlm_accuracy"], "teacher_mlm_chance": s["teacher_mlm_chance"],
            "loss_first": first["loss"], "loss_last": last["loss"], "eval": log["eval"][-1],
            "learned": last["loss"] < 0.8 * first["loss"]}


# ---- part 3: the paper-shape benchmark ----------------------------------------------------------

def benchmark() -> tuple[int, str]:
    out = Path(tempfile.mkdtemp(prefix="gpu-check-bench-")) / "bench.md"
    rc, text = timed([sys.executable, str(ROOT / "benchmarks" / "bench_distill.py"), "--device", "cuda",
                      "--shapes", "paper,default", "--batch", "48", "48", "--precision", "bf16",
                      "--steps", "10", "--warmup", "3", "--markdown", str(out)], LIMITS["bench"])
    return rc, out.read_text() if out.is_file() else text


# ---- the run -------------------------------------------------------------------------------------

def timed(cmd: list[str], limit: int) -> tuple[int, str]:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit)
        rc, text = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as err:
        rc, text = 124, f"timed out after {limit} s\n{(err.stdout or b'')[-4000:]!r}"
    return rc, f"{text.strip()}\n(exit {rc}, {time.perf_counter() - t0:.0f} s)"


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def environment() -> list[str]:
    import torch
    import transformers

    dev = torch.device("cuda")
    memory = torch.cuda.get_device_properties(dev).total_memory / 2**30
    return [f"- GPU: {torch.cuda.get_device_name(dev)} ({memory:.0f} GiB), "
            f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}; CUDA {torch.version.cuda}",
            f"- torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}",
            f"- TF32 defaults: matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN {torch.backends.cudnn.allow_tf32} "
            f"(the fp32 path turns both off)"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stand-in", metavar="MODULE", help=argparse.SUPPRESS)  # part 1 without pytest
    ap.add_argument("--part", choices=["distill"], help=argparse.SUPPRESS)  # part 2, in its own process
    args = ap.parse_args(argv)
    if args.stand_in:
        return StandIn.run_module(args.stand_in)
    if args.part == "distill":
        print(json.dumps(tiny_distillation()))
        return 0

    try:
        import torch
    except ImportError:
        print(f"gpu_check: {sys.executable} cannot import torch; set PYTHON to an interpreter with PyTorch",
              file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device (torch {torch.__version__}: torch.cuda.is_available() is False); "
              f"nothing was checked. Run benchmarks/gpu_check.sh on a machine with an NVIDIA GPU.", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print("gpu_check: 1/3 tests ...", flush=True)
    rc_tests, tests = run_tests()
    print(tail(tests, 15), "\ngpu_check: 2/3 tiny distillation ...", flush=True)
    rc_distill, distill_text = timed([sys.executable, __file__, "--part", "distill"], LIMITS["distill"])
    distill = None
    with contextlib.suppress(json.JSONDecodeError, IndexError):
        distill = json.loads([ln for ln in distill_text.splitlines() if ln.startswith("{")][-1])
    print(distill or tail(distill_text, 20), "\ngpu_check: 3/3 benchmark ...", flush=True)
    rc_bench, bench = benchmark()
    print(bench, flush=True)

    ok = {"tests": rc_tests == 0, "distill": rc_distill == 0 and bool(distill and distill["learned"]),
          "bench": rc_bench == 0}
    lines = [
        "# GPU check of the distillation engine", "",
        f"Command: `bash benchmarks/gpu_check.sh` ({started}, {time.perf_counter() - t0:.0f} s in all)", "",
        *environment(), "",
        "| part | result |", "|---|---|",
        *(f"| {k} | {'PASS' if v else 'FAIL'} |" for k, v in ok.items()), "",
        f"## 1. Tests (`{TEST_FILE}`)", "", "```", tail(tests), "```", "",
        "## 2. Tiny distillation on CUDA (KD on, the teacher's head trained first)", "",
        "```", json.dumps(distill, indent=1) if distill else tail(distill_text), "```", "",
        "## 3. Paper-shape benchmark (batch 48, bf16 engine vs the fp32 reference recipe, TF32 off)", "",
        bench.strip() if ok["bench"] else f"```\n{tail(bench)}\n```", "",
    ]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"gpu_check: {'PASS' if all(ok.values()) else 'FAIL'} {ok}; wrote {REPORT}")
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
