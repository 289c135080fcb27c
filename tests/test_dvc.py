"""DVC: share the pipeline's artifacts through a remote and reuse them without recomputation.

Everything runs with real git, dvc and snakemake commands in a temporary directory, on the tiny test
config, with a directory remote (no network):

    origin:  git init, dvc init, the shipped .dvc/config (remote `local` = ../minialbert-dvc-remote)
             dvc repro (runs the tiny pipeline once for the module), git commit, dvc push
    clones:  git clone, scripts/dvc_pull.sh [TARGET], then snakemake

The shipped default remote is relative (a sibling of the clone), so origin and every clone made
next to it share it without any configuration, as documented in docs/dvc.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from snakemake_helpers import job_counts
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = "tests/config/tiny.yaml"
# What a clone of the project holds that the pipeline needs (no venv, no outputs).
PROJECT_FILES = ["Snakefile", "workflow", "config", "profiles", "tests/config", "src/minialbert", "scripts",
                 "dvc.yaml", ".dvcignore", ".gitignore"]
SHIPPED_DVC = [".dvc/config", ".dvc/plots"]  # the project's DVC set-up, copied after `dvc init`
NEW_TASK = {"source": "package", "dataset": "drug_review", "max_train": 40, "max_eval": 20}

pytestmark = pytest.mark.slow


# --- helpers --------------------------------------------------------------------------------


def sh(env, cwd, *args, check=True, timeout=1800):
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def dry_run(env, cwd, configfile=TINY, *extra):
    proc = sh(env, cwd, BIN / "snakemake", "-n", *extra, "--configfile", configfile)
    return job_counts(proc.stdout + proc.stderr), proc.stdout + proc.stderr


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def metadata(repo: Path) -> list[Path]:
    """Snakemake's per-output records (what `--touch` writes)."""
    root = repo / ".snakemake/metadata"
    return list(root.iterdir()) if root.is_dir() else []


def with_new_task(clone: Path, name: str = "extra.yaml", **finetune) -> str:
    cfg = yaml.safe_load((clone / TINY).read_text())
    cfg["tasks"]["drug_review"] = NEW_TASK
    cfg["finetune"].update(finetune)
    (clone / name).write_text(yaml.safe_dump(cfg))
    return name


def lock_out(repo: Path, path: str) -> dict:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(o for o in lock["stages"]["pipeline"]["outs"] if o["path"] == path)


def cache_object(repo: Path, md5_: str) -> Path:
    return repo / ".dvc/cache/files/md5" / md5_[:2] / md5_[2:]


def checkpoint_object(origin: Path) -> tuple[str, str]:
    """(relpath, md5) of the distilled student's weights in the results/distill manifest."""
    manifest = json.loads(cache_object(origin, lock_out(origin, "results/distill")["md5"]).read_text())
    entry = next(e for e in manifest if e["relpath"] == "distilled/model.safetensors")
    return entry["relpath"], entry["md5"]


def copy_items(dest_root: Path, items: list[str], replace: bool = False) -> None:
    for item in items:
        src, dest = REPO / item, dest_root / item
        dest.parent.mkdir(parents=True, exist_ok=True)
        if replace and dest.is_dir():
            shutil.rmtree(dest)
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest)


# --- the shared run -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    base = tmp_path_factory.mktemp("dvc")
    home = base / "home"
    (home / "dvc").mkdir(parents=True)
    # no analytics, no update check, no studio: nothing leaves the machine
    (home / "dvc" / "config").write_text("[core]\n    analytics = false\n    check_update = false\n")
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "PYTHON": sys.executable,
        "DVC_NO_ANALYTICS": "1",
        "DVC_STUDIO_OFFLINE": "1",
        "DVC_GLOBAL_CONFIG_DIR": str(home / "dvc"),
        "DVC_SITE_CACHE_DIR": str(home / "dvc-site"),
        "GIT_CONFIG_GLOBAL": str(home / "gitconfig"),
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    origin = base / "origin"
    copy_items(origin, PROJECT_FILES)
    # the stage runs the tiny config (docs/dvc.md: `configfile` selects the config)
    dvc_yaml = origin / "dvc.yaml"
    text, n = re.subn(r"(?m)^(\s*- configfile:) .*$", rf"\1 {TINY}", dvc_yaml.read_text())
    assert n == 1, "dvc.yaml must define the `configfile` var"
    dvc_yaml.write_text(text)

    sh(env, origin, "git", "-c", "init.defaultBranch=main", "init", "-q")
    sh(env, origin, BIN / "dvc", "init", "-q")
    copy_items(origin, SHIPPED_DVC, replace=True)
    t0 = time.monotonic()
    sh(env, origin, BIN / "dvc", "repro")
    repro_seconds = time.monotonic() - t0
    sh(env, origin, "git", "add", "-A")
    sh(env, origin, "git", "commit", "-qm", "tiny run")
    sh(env, origin, BIN / "dvc", "push")
    remote = base / "minialbert-dvc-remote"
    assert remote.is_dir(), "the shipped default remote is the sibling directory ../minialbert-dvc-remote"
    return SimpleNamespace(base=base, origin=origin, remote=remote, env=env, repro_seconds=repro_seconds)


def clone(shared, name: str) -> Path:
    dest = shared.base / name
    sh(shared.env, shared.base, "git", "clone", "-q", shared.origin, dest)
    return dest


def pull(shared, repo: Path, *args, check=True):
    return sh(shared.env, repo, "bash", "scripts/dvc_pull.sh", *args, check=check)


# --- origin ---------------------------------------------------------------------------------


def test_repro_records_every_artifact_and_dvc_views_work(shared):
    origin, env = shared.origin, shared.env
    print(f"tiny pipeline via dvc repro: {shared.repro_seconds:.0f}s")
    lock = yaml.safe_load((origin / "dvc.lock").read_text())["stages"]["pipeline"]
    outs = {o["path"]: o["md5"] for o in lock["outs"]}
    for path in ("resources/tokens", "results/distill", "results/finetune"):
        assert outs[path].endswith(".dir"), path
    for name in ("metrics.json", "results.csv", "scores.png", "results.md", "params.csv"):
        assert f"results/summary/{name}" in outs
    assert lock["params"][TINY]["distill"]["steps"] == 4  # the whole config is the stage's params
    tracked = sh(env, origin, "git", "ls-files").stdout.split()
    assert "dvc.lock" in tracked and not any(p.startswith(("results/", "resources/")) for p in tracked)

    assert "up to date" in sh(env, origin, BIN / "dvc", "status").stdout
    assert json.loads(sh(env, origin, BIN / "dvc", "status", "--cloud", "--json").stdout or "{}") == {}  # all pushed
    assert "didn't change, skipping" in sh(env, origin, BIN / "dvc", "repro").stdout

    metrics = json.loads(sh(env, origin, BIN / "dvc", "metrics", "show", "--json").stdout)
    (workspace,) = metrics.values()  # keyed "" (the workspace) by dvc 3
    scores = workspace["data"]["results/summary/metrics.json"]["data"]
    scores.pop("runtime")  # provenance, not a task
    assert set(scores) == {"bbc_topic", "wnut16"} and "distilled/adapter" in scores["bbc_topic"]
    plots = json.loads(sh(env, origin, BIN / "dvc", "plots", "show", "--json").stdout)
    assert {"results/summary/results.csv", "results/summary/scores.png"} <= set(plots["data"])
    assert not plots.get("errors"), plots.get("errors")
    for image in origin.glob("workspace_*.png"):  # `--json` writes image plots to the cwd
        image.unlink()
    sh(env, origin, BIN / "dvc", "plots", "show", "-o", shared.base / "plots")
    assert (shared.base / "plots/index.html").stat().st_size > 0
    exps = json.loads(sh(env, origin, BIN / "dvc", "exp", "show", "--json").stdout)
    workspace = exps[0]["data"]
    assert workspace["params"][TINY]["data"]["distill"]["steps"] == 4
    assert "results/summary/metrics.json" in workspace["metrics"]


def find_named(node, name: str):
    """The entry called `name` anywhere in `dvc exp show --json` output."""
    if isinstance(node, dict):
        if node.get("name") == name and "data" in node:
            return node
        node = list(node.values())
    if isinstance(node, list):
        for item in node:
            if (found := find_named(item, name)) is not None:
                return found
    return None


def test_dvc_exp_run_records_an_experiment_and_snakemake_decides_what_runs(shared):
    origin, env = shared.origin, shared.env
    # a key the file leaves to the schema, set to its default (`+`: add it): DVC sees a param change
    # and reruns the stage, Snakemake sees identical merged settings and finds nothing to do
    proc = sh(env, origin, BIN / "dvc", "exp", "run", "-n", "workers1", "-S", f"{TINY}:+tokenize.workers=1")
    out = proc.stdout + proc.stderr
    assert "Nothing to be done" in out and "rule distill" not in out, out[-3000:]
    exp = find_named(json.loads(sh(env, origin, BIN / "dvc", "exp", "show", "--json").stdout), "workers1")
    assert exp is not None
    assert exp["data"]["params"][TINY]["data"]["tokenize"]["workers"] == 1
    assert "results/summary/metrics.json" in exp["data"]["metrics"]
    sh(env, origin, "git", "checkout", "--", TINY, "dvc.lock")  # back to the committed run


# --- full pull ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_clone(shared):
    repo = clone(shared, "clone-full")
    proc = pull(shared, repo)
    assert "all files match dvc.lock" in proc.stdout
    return repo


def test_full_pull_reruns_nothing(shared, full_clone):
    """dvc repro + dvc push -> fresh clone -> `make pull` (scripts/dvc_pull.sh) -> nothing to do.

    The tiny config stands for the default one: no config holds threads or resources, every run
    takes them from profiles/default (applied implicitly), so both get the same ones. And
    `snakemake --summary`, which the restore step runs, needs no `--cores` on either (it once failed
    on the default config: "Workflow requires a total number of cores to be defined").
    """
    for configfile in (TINY, "config/config.yaml"):
        proc = sh(shared.env, full_clone, BIN / "snakemake", "--summary", "--configfile", configfile)
        assert "Using workflow specific profile profiles/default" in proc.stdout + proc.stderr
        assert "output_file\t" in proc.stdout  # the table restore_mtimes.py reads
    counts, out = dry_run(shared.env, full_clone)
    assert counts == {}, out[-3000:]
    assert "Nothing to be done" in out
    assert "missing provenance" not in out  # metadata was recorded for every pulled output
    assert not (full_clone / "logs").exists()  # no empty log files left by `snakemake --touch`
    assert "up to date" in sh(shared.env, full_clone, BIN / "dvc", "status").stdout
    for name in ("model.safetensors", "config.json", "summary.json"):
        assert (full_clone / "results/distill/distilled" / name).is_file()


def test_after_a_pull_a_changed_config_still_reruns_what_it_affects(shared, full_clone):
    cfg = yaml.safe_load((full_clone / TINY).read_text())
    cfg["distill"]["steps"] = 5
    (full_clone / "steps.yaml").write_text(yaml.safe_dump(cfg))
    counts, out = dry_run(shared.env, full_clone, "steps.yaml")
    # both students (their distill params changed), every fine-tuning of a student, the summary
    # (and the report: the students' inference benchmark, the figures and tables)
    assert counts == {"distill": 2, "finetune": 8, "aggregate": 1, "bench_inference": 1, "figures": 1,
                      "report_tables": 1, "all": 1}, out[-3000:]

    cfg = yaml.safe_load((full_clone / TINY).read_text())
    cfg["finetune"]["learning_rates"]["adapter"] = [5e-4]
    (full_clone / "lr.yaml").write_text(yaml.safe_dump(cfg))
    counts, out = dry_run(shared.env, full_clone, "lr.yaml")
    assert counts == {"finetune": 4, "aggregate": 1, "figures": 1, "report_tables": 1, "all": 1}, out[-3000:]


# --- pulling only the checkpoints -------------------------------------------------------------


def test_pulling_only_checkpoints_adds_a_task_without_redistilling(shared):
    repo = clone(shared, "clone-ckpt")
    pull(shared, repo, "results/distill")
    # the checkpoints and what Snakemake needs to trust them (their inputs), nothing else
    assert (repo / "results/distill/distilled/model.safetensors").is_file()
    assert (repo / "resources/tokens").is_dir() and (repo / "resources/teacher").is_dir()
    for absent in ("results/finetune", "results/summary", "results/floors"):
        assert not (repo / absent).exists(), absent
    # of the tasks, only the one whose documents the tokenised corpus leaves out (an input of it)
    assert sorted(p.name for p in (repo / "resources/tasks").iterdir()) == ["bbc_topic"]
    before = md5(repo / "results/distill/distilled/model.safetensors")

    extra = with_new_task(repo)
    counts, out = dry_run(shared.env, repo, extra)
    assert counts == {"prepare_task": 2, "floors": 6, "finetune": 15, "aggregate": 1, "bench_inference": 1,
                      "figures": 1, "report_tables": 1, "all": 1}, out[-3000:]

    # the real run fine-tunes only the distilled student's adapters (3 tasks) and stops at the
    # summary (no report: its inference benchmark alone takes a minute) to keep the test short
    small = with_new_task(repo, "small.yaml", models=["distilled"], modes=["adapter"])
    until = ("--until", "aggregate")
    proc = sh(shared.env, repo, BIN / "snakemake", "--cores", "2", *until, "--configfile", small)
    ran = job_counts(proc.stdout + proc.stderr)
    assert ran == {"prepare_task": 2, "floors": 6, "finetune": 3, "aggregate": 1}, ran
    assert not (repo / "logs/distill").exists() and not (repo / "logs/tokenize").exists()
    assert md5(repo / "results/distill/distilled/model.safetensors") == before
    new = repo / "results/finetune/distilled/drug_review/adapter/lr0.001/seed1/metrics.json"
    assert json.loads(new.read_text())["task"] == "drug_review"
    summary = json.loads((repo / "results/summary/metrics.json").read_text())
    summary.pop("runtime")  # provenance, not a task
    assert set(summary) == {"bbc_topic", "wnut16", "drug_review"}
    assert {arm for arm in summary["drug_review"] if not arm.endswith("/floor")} == {"distilled/adapter"}
    counts, out = dry_run(shared.env, repo, small, *until)
    assert counts == {}, out[-3000:]


def test_only_mode_pulls_just_the_target_and_says_how_to_run_it_frozen(shared):
    repo = clone(shared, "clone-only")
    proc = pull(shared, repo, "--only", "results/distill")
    assert sorted(p.name for p in (repo / "results").iterdir()) == ["distill"]
    assert not (repo / "resources").exists()
    m = re.search(r"--allowed-rules ([\w ]+)", proc.stdout)
    assert m, proc.stdout
    allowed = m.group(1).split()
    assert "distill" not in allowed and {"finetune", "aggregate", "all"} <= set(allowed)

    counts, out = dry_run(shared.env, repo, with_new_task(repo), "--allowed-rules", *allowed)
    assert "distill" not in counts and "tokenize" not in counts, out[-3000:]
    assert counts["prepare_task"] == 3 and counts["finetune"] == 15, out[-3000:]
    # without the fence, Snakemake rebuilds the missing inputs and so the checkpoints: documented
    counts, _ = dry_run(shared.env, repo)
    assert counts.get("distill") == 2


# --- integrity ------------------------------------------------------------------------------


def corrupted_remote(shared, name: str, damage) -> Path:
    remote = shared.base / name
    shutil.copytree(shared.remote, remote)
    _, obj = checkpoint_object(shared.origin)
    target = remote / "files/md5" / obj[:2] / obj[2:]
    target.chmod(0o644)
    damage(target)
    return remote


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupted_remote_object_is_refused_by_the_pull(shared):
    remote = corrupted_remote(shared, "remote-corrupt", flip_a_byte)
    repo = clone(shared, "clone-corrupt")
    sh(shared.env, repo, BIN / "dvc", "remote", "modify", "--local", "local", "url", remote)
    proc = pull(shared, repo, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "dvc pull failed" in proc.stderr and "results/distill" in proc.stderr
    assert not metadata(repo)  # nothing was touched

    # without the remote's `verify`, DVC takes the bad object; the checksum step still refuses it
    sh(shared.env, repo, BIN / "dvc", "remote", "modify", "--local", "local", "verify", "false")
    shutil.rmtree(repo / ".dvc/cache")
    proc = pull(shared, repo, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "corrupted  results/distill/distilled/model.safetensors" in proc.stderr
    assert not metadata(repo)


def test_missing_remote_object_fails_the_pull(shared):
    remote = corrupted_remote(shared, "remote-partial", lambda p: p.unlink())
    repo = clone(shared, "clone-partial")
    sh(shared.env, repo, BIN / "dvc", "remote", "modify", "--local", "local", "url", remote)
    proc = pull(shared, repo, "results/distill", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "dvc pull failed" in proc.stderr and "failed to" in proc.stderr


def test_damaged_workspace_is_reported_not_used(shared):
    repo = clone(shared, "clone-damaged")
    pull(shared, repo, "results/distill")
    check = [sys.executable, "scripts/restore_mtimes.py", "--check", "results/distill"]
    assert sh(shared.env, repo, *check).returncode == 0

    weights = repo / "results/distill/distilled/model.safetensors"
    stat = weights.stat()
    flip_a_byte(weights)  # same size, same mtime: invisible to a size/mtime check
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (repo / "results/distill/random-init/config.json").unlink()  # a partial directory
    (repo / "results/distill/distilled/stray.bin").write_bytes(b"x")
    proc = sh(shared.env, repo, *check, check=False)
    assert proc.returncode == 2
    assert "corrupted  results/distill/distilled/model.safetensors" in proc.stderr
    assert "missing    results/distill/random-init/config.json" in proc.stderr
    assert "unexpected results/distill/distilled/stray.bin" in proc.stderr


def test_changed_workflow_code_is_not_adopted(shared):
    repo = clone(shared, "clone-code")
    with open(repo / "workflow/rules/distill.smk", "a") as fh:
        fh.write("\n# a local change\n")
    proc = pull(shared, repo, check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "workflow code differs" in proc.stderr and "workflow (modified)" in proc.stderr
    assert not (repo / "results").exists()
