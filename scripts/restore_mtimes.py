#!/usr/bin/env python3
"""Make artifacts restored by `dvc pull` usable by Snakemake without recomputing them.

DVC restores file contents but not modification times, and a fresh clone has no
`.snakemake/metadata`: Snakemake would then see pulled outputs as older than their inputs (or
newer, at random) and rerun them -- GPU-hours for a distillation. Run after `dvc pull`, or with
`--pull` to do the pull too (`scripts/dvc_pull.sh`, `make pull`), this script:

1. refuses (exit 3) when the workflow code in the workspace (Snakefile, workflow/) differs from
   the one recorded in dvc.lock: the pulled outputs were not made by it (`--force` adopts them);
2. has DVC verify the restored files against dvc.lock (`dvc data status --granular`, every file
   hashed again). Corrupted files, files missing from an artifact (a partial or failed pull) and
   files that the artifact never had are reported and the script exits 2 -- Snakemake would
   silently use a half-pulled directory();
3. runs `snakemake <restored outputs> --touch --forceall` with the config recorded in dvc.lock
   (the params of the stage), so the outputs get mtimes in DAG order and Snakemake records its
   metadata (params, code, input) exactly as the run that made them would have. A config that
   differs from the recorded one (now or later) still reruns the jobs it affects.

What is restored: with no TARGET, every Snakemake output that dvc.lock holds. With TARGETs
(DVC paths such as `results/distill` or `results/distill/distilled`), the Snakemake outputs inside
them *and their upstream* (teacher, corpus, tokens for a checkpoint): Snakemake trusts an output
only when its inputs exist, otherwise it rebuilds them and everything downstream. With `--only`,
just the TARGETs; the script then prints the `--allowed-rules` command that uses them frozen.

The package (src/minialbert) never imports dvc or snakemake; this script only calls their CLIs.
Exit codes: 0 ok, 1 usage or tool error, 2 verification or pull failed, 3 workspace code differs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

BIN = Path(os.path.abspath(sys.executable)).parent  # before any chdir
CODE_DEPS_WARN_ONLY = ("src/",)  # Snakemake does not track package code; DVC does: warn only
# `dvc data status` categories of a workspace file vs dvc.lock -> how the report names them.
# ("unknown": DVC has no manifest of the directory to compare with, neither cached nor on the remote.)
PROBLEMS = {"modified": "corrupted", "deleted": "missing", "added": "unexpected", "unknown": "unverified"}
WHY = {"corrupted": "hash differs from dvc.lock", "missing": "not pulled, or a partial pull",
       "unexpected": "not in dvc.lock", "unverified": "its directory manifest is not in the DVC cache"}


class Failure(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def tool(name: str) -> str:
    """The CLI next to this interpreter (the project's venv), else the one on PATH."""
    here = BIN / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise Failure(1, f"`{name}` not found (activate the project's venv or run `make venv`)")
    return found


def call(args: list[str], what: str, code: int = 1, env: dict | None = None) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise Failure(code, f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def log(msg: str) -> None:
    print(f"[restore] {msg}", flush=True)


def within(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


# --- dvc.lock -------------------------------------------------------------------------------


@dataclass
class Lock:
    stage: str
    params_file: str
    params: dict
    outs: list[str]  # longest first, so a nested out (none today) wins over its parent

    def out_for(self, path: str) -> str | None:
        return next((o for o in self.outs if within(path, o)), None)


def load_lock(root: Path, stage: str) -> Lock:
    lock_path = root / "dvc.lock"
    if not lock_path.exists():
        raise Failure(1, "no dvc.lock here: nothing was recorded (`dvc repro` or `dvc commit` first)")
    stages = (yaml.safe_load(lock_path.read_text()) or {}).get("stages", {})
    if stage not in stages:
        raise Failure(1, f"dvc.lock has no stage '{stage}' (stages: {', '.join(stages) or 'none'})")
    entry = stages[stage]
    params = entry.get("params") or {}
    if len(params) != 1:
        raise Failure(1, f"stage '{stage}' must take its params from exactly one config file, has {list(params)}")
    (params_file, values), = params.items()
    # dvc.lock lists metrics and plots under outs too; be lenient
    outs = [o["path"].rstrip("/") for kind in ("outs", "metrics", "plots") for o in entry.get(kind) or []]
    return Lock(stage, params_file, values or {}, sorted(outs, key=len, reverse=True))


# --- Snakemake ------------------------------------------------------------------------------


class Snakemake:
    def __init__(self, root: Path, configfile: Path):
        self.root, self.configfile = root, configfile
        self.exe = tool("snakemake")

    def _args(self, *args: str, targets: list[str] = ()) -> list[str]:
        # targets first: --configfile takes several values. No --cores: threads and resources come
        # from the workflow profile, and neither a summary nor a touch runs a job.
        return [self.exe, *targets, *args, "--configfile", str(self.configfile)]

    def summary(self, targets: list[str] = ()) -> dict[str, tuple[str, list[str]]]:
        """output file -> (rule, log files), for the DAG of `targets` (default: the whole workflow)."""
        out = call(self._args("--summary", targets=list(targets)), "snakemake --summary")
        lines = out.splitlines()
        start = next((i for i, l in enumerate(lines) if l.startswith("output_file\t")), None)
        if start is None:
            raise Failure(1, f"unexpected `snakemake --summary` output:\n{out[-2000:]}")
        result = {}
        for line in lines[start + 1:]:
            cols = line.split("\t")
            if len(cols) >= 4 and cols[0]:
                logs = [l.strip() for l in cols[3].split(",") if l.strip() not in ("", "-")]
                result[cols[0].rstrip("/")] = (cols[2], logs)
        return result

    def outputs(self, targets: list[str] = ()) -> dict[str, str]:
        """output file -> rule."""
        return {p: rule for p, (rule, _) in self.summary(targets).items()}

    def touch(self, targets: list[str]) -> None:
        # `--touch` also creates an empty log file for every job it touches: remove those, the
        # real logs of the run that made the outputs are not part of the artifacts.
        start = time.time() - 1
        call(self._args("--touch", "--forceall", "--quiet", "all", targets=targets), "snakemake --touch")
        logs = {l for _, ls in self.summary(targets).values() for l in ls}  # recorded by the touch
        for log_file in sorted(logs):
            path = self.root / log_file
            if path.is_file() and path.stat().st_size == 0 and path.stat().st_mtime >= start:
                path.unlink()
                for parent in path.parents:
                    if parent == self.root or any(parent.iterdir()):
                        break
                    parent.rmdir()


# --- the steps ------------------------------------------------------------------------------


def check_code(dvc: str, lock: Lock, force: bool) -> None:
    out = call([dvc, "status", "--json", lock.stage], "dvc status")
    status = json.loads(out or "{}").get(lock.stage, [])
    changed = {}
    for item in status:
        if isinstance(item, dict):
            changed.update(item.get("changed deps", {}))
    changed.pop(lock.params_file, None)  # the config: handled by touching with the recorded one
    blocking = {p: s for p, s in changed.items() if not p.startswith(CODE_DEPS_WARN_ONLY)}
    for p, s in changed.items():
        if p not in blocking:
            log(f"warning: {p} is {s} since dvc.lock (Snakemake does not track package code; kept)")
    if blocking:
        listing = ", ".join(f"{p} ({s})" for p, s in blocking.items())
        if not force:
            raise Failure(3, f"the workflow code differs from the one that made the pulled artifacts "
                             f"(dvc.lock): {listing}. Check out the commit that produced them, or pass "
                             f"--force to adopt them as outputs of this code.")
        log(f"warning: the workflow code differs from dvc.lock: {listing}")


def select(sm: Snakemake, lock: Lock, held: dict[str, str], targets: list[str], only: bool) -> dict[str, str]:
    """Snakemake outputs (-> rule) to restore: held by dvc.lock, for the targets (+ upstream)."""
    if not targets:
        return held
    chosen = {}
    for t in (t.rstrip("/") for t in targets):
        if not lock.out_for(t) and not any(within(o, t) for o in lock.outs):
            raise Failure(1, f"{t} is not an output of stage '{lock.stage}' in dvc.lock "
                             f"(outputs: {', '.join(sorted(lock.outs))})")
        inside = {p: r for p, r in held.items() if within(p, t) or within(t, p)}
        if not inside:
            raise Failure(1, f"{t}: no Snakemake output of the recorded config lies in it")
        chosen.update(inside)
    if only:
        return chosen
    upstream = sm.outputs(sorted(chosen))
    return {p: r for p, r in upstream.items() if p in held}


def dvc_paths(lock: Lock, held: dict[str, str], paths: list[str]) -> list[str]:
    """What to give `dvc pull` / `dvc data status`: a whole DVC output when all its Snakemake
    outputs are wanted, else those outputs."""
    wanted, result = set(paths), []
    for out in sorted(lock.outs):
        inside = [p for p in held if lock.out_for(p) == out]
        chosen = [p for p in inside if p in wanted]
        if inside and len(chosen) == len(inside):
            result.append(out)
        else:
            result.extend(sorted(chosen))
    return result


def verify(dvc: str, targets: list[str], paths: list[str]) -> list[str]:
    """Problems (empty when every file of every path matches dvc.lock), found by DVC itself."""
    with tempfile.TemporaryDirectory(prefix="dvc-site-") as site:
        # An empty site cache holds no state database, so DVC hashes every file again instead of
        # trusting size + mtime: a file damaged in place (or a bad object taken from a remote
        # without `verify`, which DVC records under its expected hash) keeps both.
        out = call([dvc, "data", "status", "--granular", "--json", *targets], "dvc data status",
                   env={**os.environ, "DVC_SITE_CACHE_DIR": site})
    uncommitted = json.loads(out or "{}").get("uncommitted", {})
    found = {entry: PROBLEMS[kind] for kind, entries in uncommitted.items() if kind in PROBLEMS
             for entry in entries}
    problems = []
    for entry, label in sorted(found.items()):
        path = entry.rstrip("/")
        if entry.endswith("/") and any(other != entry and other.startswith(entry) for other in found):
            continue  # a directory whose files are listed themselves
        if any(within(path, p) or within(p, path) for p in paths):
            problems.append(f"{label:<10} {path} ({WHY[label]})")
    return problems


def frozen_hint(sm: Snakemake, restored: dict[str, str], every: dict[str, str], root: Path,
                configfile: str) -> None:
    """After --only: which restored outputs lack inputs, and how to use them without rebuilding."""
    upstream = sm.outputs(sorted(restored))
    absent = sorted(p for p in upstream if p not in restored and not (root / p).exists())
    if not absent:
        return
    frozen = sorted(set(restored.values()))
    allowed = [r for r in sorted(set(every.values()) | {"all"}) if r not in frozen]
    log("note: the inputs of the restored outputs are not here: " + ", ".join(absent))
    log("a plain `snakemake` would rebuild them and redo everything downstream. To use the restored "
        "outputs as they are (rules frozen: " + ", ".join(frozen) + "), run e.g.:")
    print(f"    snakemake --cores all --configfile {configfile} --allowed-rules {' '.join(allowed)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See docs/dvc.md.")
    ap.add_argument("targets", nargs="*", help="DVC paths (default: everything in dvc.lock)")
    ap.add_argument("--pull", action="store_true", help="`dvc pull` what is needed first")
    ap.add_argument("--only", action="store_true", help="restore just the targets, not their upstream")
    ap.add_argument("--check", action="store_true", help="verify only; touch nothing")
    ap.add_argument("--force", action="store_true", help="adopt artifacts although workflow code changed")
    ap.add_argument("--stage", default="pipeline", help="the dvc.yaml stage (default: pipeline)")
    ap.add_argument("-C", "--directory", default=".", help="the repository root (default: .)")
    args = ap.parse_args(argv)

    root = Path(args.directory).resolve()
    os.chdir(root)
    tmpdir = tempfile.TemporaryDirectory(prefix="restore-")
    try:
        dvc = tool("dvc")
        lock = load_lock(root, args.stage)
        # The config the artifacts were made with, as recorded in dvc.lock: Snakemake's DAG and the
        # metadata it records then match that run, whatever the workspace config says now.
        configfile = Path(tmpdir.name) / "recorded-config.yaml"
        configfile.write_text(yaml.safe_dump(lock.params, sort_keys=False))
        sm = Snakemake(root, configfile)

        check_code(dvc, lock, args.force or args.check)
        every = sm.outputs()
        held = {p: r for p, r in every.items() if lock.out_for(p)}
        restore = select(sm, lock, held, args.targets, args.only)
        if not restore:
            raise Failure(1, "nothing to restore: dvc.lock holds no output of this workflow")
        paths = sorted(restore)
        targets = dvc_paths(lock, held, paths)

        if args.pull:
            log(f"dvc pull {' '.join(targets) if len(targets) <= 8 else f'({len(targets)} paths)'}")
            try:
                call([dvc, "pull", *targets], "dvc pull", code=2)
            except Failure as err:
                raise Failure(2, f"{err}\nSome objects are missing from the remote or failed their "
                                 "checksum (remote option `verify`); nothing was touched. Do not run "
                                 "snakemake on this workspace before fixing the remote (see docs/dvc.md, "
                                 "Integrity): it would recompute whatever was not restored.") from None

        log(f"verifying {len(paths)} output(s) against dvc.lock")
        problems = verify(dvc, targets, paths)
        if problems:
            shown = problems[:40] + ([f"... and {len(problems) - 40} more"] if len(problems) > 40 else [])
            raise Failure(2, "the restored artifacts do not match dvc.lock; nothing was touched:\n  "
                             + "\n  ".join(shown)
                             + "\nFix: delete the listed files and `dvc checkout <path>` (even `--force` "
                               "trusts size + mtime, so it keeps a file damaged in place); if that does not "
                               "help the cache or the remote object is bad: delete it from .dvc/cache and "
                               "pull again, with `dvc remote modify <remote> verify true`.")
        log("all files match dvc.lock")
        if args.check:
            return 0

        log(f"snakemake --touch in DAG order ({', '.join(sorted(set(restore.values())))})")
        sm.touch(paths)
        log(f"done: {len(paths)} output(s) are up to date for Snakemake")
        if args.only:
            frozen_hint(sm, restore, every, root, lock.params_file)
        return 0
    except Failure as err:
        print(f"[restore] ERROR: {err}", file=sys.stderr, flush=True)
        return err.code
    finally:
        tmpdir.cleanup()


if __name__ == "__main__":
    sys.exit(main())
