#!/usr/bin/env python3
"""Make artifacts restored by `dvc pull` usable by Snakemake without recomputing them.

DVC restores file contents but not modification times, and a fresh clone has no
`.snakemake/metadata`: Snakemake would then see pulled outputs as older than their inputs (or
newer, at random) and rerun them -- GPU-hours for a distillation. Run after `dvc pull`, or with
`--pull` to do the pull too (`scripts/dvc_pull.sh`, `make pull`), this script:

1. refuses (exit 3) when the workflow code in the workspace (Snakefile, workflow/) differs from
   the one recorded in dvc.lock: the pulled outputs were not made by it (`--force` adopts them);
2. verifies every restored file against the checksums in dvc.lock and the directory manifests in
   the DVC cache. Corrupted files, files missing from an artifact (a partial or failed pull) and
   files that the artifact never had are reported and the script exits 2 -- Snakemake would
   silently use a half-pulled directory(), and `dvc status` trusts its state database;
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
import hashlib
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
SNAKEMAKE_MARKER = ".snakemake_timestamp"  # Snakemake's mtime carrier in directory() outputs
CODE_DEPS_WARN_ONLY = ("src/",)  # Snakemake does not track package code; DVC does: warn only


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


def call(args: list[str], what: str, code: int = 1) -> str:
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise Failure(code, f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def log(msg: str) -> None:
    print(f"[restore] {msg}", flush=True)


# --- dvc.lock -------------------------------------------------------------------------------


@dataclass
class Out:
    path: str
    md5: str  # "<hex>.dir" for a directory
    size: int | None

    @property
    def is_dir(self) -> bool:
        return self.md5.endswith(".dir")

    def covers(self, path: str) -> bool:
        return path == self.path or path.startswith(self.path + "/")


@dataclass
class Lock:
    stage: str
    params_file: str
    params: dict
    deps: list[str]
    outs: list[Out]

    def out_for(self, path: str) -> Out | None:
        return next((o for o in self.outs if o.covers(path)), None)


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
    outs = []
    for kind in ("outs", "metrics", "plots"):  # dvc.lock lists them all under outs; be lenient
        for o in entry.get(kind) or []:
            outs.append(Out(path=o["path"].rstrip("/"), md5=o.get("md5", ""), size=o.get("size")))
    # longest path first, so nested outs (none today) would win over their parents
    outs.sort(key=lambda o: -len(o.path))
    return Lock(stage, params_file, values or {}, [d["path"] for d in entry.get("deps") or []], outs)


class Manifests:
    """Directory manifests (`<md5>.dir`: [{relpath, md5}]) from the DVC cache, checked themselves."""

    def __init__(self, dvc: str, root: Path):
        self.cache = Path(call([dvc, "cache", "dir"], "dvc cache dir").strip())
        if not self.cache.is_absolute():
            self.cache = root / self.cache
        self._memo: dict[str, dict[str, str] | None] = {}

    def object_path(self, md5: str) -> Path:
        return self.cache / "files" / "md5" / md5[:2] / md5[2:]

    def get(self, md5: str) -> dict[str, str] | None:
        """relpath -> md5, or None when the manifest is not in the cache (the artifact was never pulled)."""
        if md5 not in self._memo:
            path = self.object_path(md5)
            if not path.exists():
                self._memo[md5] = None
            else:
                raw = path.read_bytes()
                if hashlib.md5(raw).hexdigest() != md5[: -len(".dir")]:
                    raise Failure(2, f"DVC cache object {path} (directory manifest) is corrupted: its md5 "
                                     f"does not match; delete it and `dvc pull` again")
                self._memo[md5] = {e["relpath"]: e["md5"] for e in json.loads(raw)}
        return self._memo[md5]


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- Snakemake ------------------------------------------------------------------------------


class Snakemake:
    def __init__(self, root: Path, configfile: Path, cores: int):
        self.root, self.configfile, self.cores = root, configfile, cores
        self.exe = tool("snakemake")

    def _args(self, *args: str, targets: list[str] = ()) -> list[str]:
        # targets first: --configfile takes several values
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
        call(self._args("--touch", "--forceall", "--cores", str(self.cores), "--quiet", "all", targets=targets),
             "snakemake --touch")
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
        if not lock.out_for(t) and not any(o.path.startswith(t + "/") for o in lock.outs):
            raise Failure(1, f"{t} is not an output of stage '{lock.stage}' in dvc.lock "
                             f"(outputs: {', '.join(sorted(o.path for o in lock.outs))})")
        inside = {p: r for p, r in held.items() if p == t or p.startswith(t + "/") or t.startswith(p + "/")}
        if not inside:
            raise Failure(1, f"{t}: no Snakemake output of the recorded config lies in it")
        chosen.update(inside)
    if only:
        return chosen
    upstream = sm.outputs(sorted(chosen))
    return {p: r for p, r in upstream.items() if p in held}


def pull_paths(lock: Lock, held: dict[str, str], paths: list[str]) -> list[str]:
    """What to give `dvc pull`: a whole DVC output when all its Snakemake outputs are wanted."""
    wanted, result = set(paths), []
    for out in sorted(lock.outs, key=lambda o: o.path):
        inside = [p for p in held if lock.out_for(p) is out]
        chosen = [p for p in inside if p in wanted]
        if inside and len(chosen) == len(inside):
            result.append(out.path)
        else:
            result.extend(sorted(chosen))
    return result


def verify(root: Path, lock: Lock, manifests: Manifests, paths: list[str]) -> list[str]:
    """Problems (empty when every file of every path matches dvc.lock)."""
    problems = []
    for path in paths:
        out = lock.out_for(path)
        full = root / path
        if not out.is_dir:
            if not full.is_file():
                problems.append(f"missing    {path} (not pulled, or the pull failed)")
            elif md5_file(full) != out.md5:
                problems.append(f"corrupted  {path} (md5 differs from dvc.lock)")
            continue
        manifest = manifests.get(out.md5)
        if manifest is None:
            problems.append(f"missing    {path} (the manifest of {out.path} is not in the DVC cache: not pulled)")
            continue
        rel = "" if path == out.path else path[len(out.path) + 1:]
        if rel and rel in manifest:  # a file output inside a directory out
            expected = {rel: manifest[rel]}
        else:
            prefix = rel + "/" if rel else ""
            expected = {k: v for k, v in manifest.items() if k.startswith(prefix)}
        if not expected:
            problems.append(f"missing    {path} (dvc.lock's {out.path} holds no file of it)")
            continue
        base = root / out.path
        for relpath, md5 in sorted(expected.items()):
            f = base / relpath
            if not f.is_file():
                problems.append(f"missing    {out.path}/{relpath} (partial pull?)")
            elif md5_file(f) != md5:
                problems.append(f"corrupted  {out.path}/{relpath} (md5 differs from dvc.lock)")
        if full.is_dir():
            for f in sorted(full.rglob("*")):
                relpath = f.relative_to(base).as_posix()
                if f.is_file() and f.name != SNAKEMAKE_MARKER and relpath not in expected:
                    problems.append(f"unexpected {out.path}/{relpath} (not in dvc.lock)")
    return problems


def frozen_hint(sm: Snakemake, restored: dict[str, str], root: Path, configfile: str) -> None:
    """After --only: which restored outputs lack inputs, and how to use them without rebuilding."""
    upstream = sm.outputs(sorted(restored))
    absent = sorted(p for p in upstream if p not in restored and not (root / p).exists())
    if not absent:
        return
    frozen = sorted(set(restored.values()))
    every = sorted(set(sm.outputs().values()) | {"all"})
    allowed = [r for r in every if r not in frozen]
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
    ap.add_argument("--cores", type=int, default=1, help="for snakemake --touch (default 1)")
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
        sm = Snakemake(root, configfile, args.cores)

        check_code(dvc, lock, args.force or args.check)
        held = {p: r for p, r in sm.outputs().items() if lock.out_for(p)}
        restore = select(sm, lock, held, args.targets, args.only)
        if not restore:
            raise Failure(1, "nothing to restore: dvc.lock holds no output of this workflow")
        paths = sorted(restore)

        if args.pull:
            targets = pull_paths(lock, held, paths)
            log(f"dvc pull {' '.join(targets) if len(targets) <= 8 else f'({len(targets)} paths)'}")
            try:
                call([dvc, "pull", *targets], "dvc pull", code=2)
            except Failure as err:
                raise Failure(2, f"{err}\nSome objects are missing from the remote or failed their "
                                 "checksum (remote option `verify`); nothing was touched. Do not run "
                                 "snakemake on this workspace before fixing the remote (see docs/dvc.md, "
                                 "Integrity): it would recompute whatever was not restored.") from None

        log(f"verifying {len(paths)} output(s) against dvc.lock")
        problems = verify(root, lock, Manifests(dvc, root), paths)
        if problems:
            shown = problems[:40] + ([f"... and {len(problems) - 40} more"] if len(problems) > 40 else [])
            raise Failure(2, "the restored artifacts do not match dvc.lock; nothing was touched:\n  "
                             + "\n  ".join(shown)
                             + "\nFix: `dvc pull --force <path>` (re-checkout from the cache); if that "
                               "does not help the cache or the remote object is bad: delete it from "
                               ".dvc/cache and pull again, with `dvc remote modify <remote> verify true`.")
        log("all files match dvc.lock")
        if args.check:
            return 0

        log(f"snakemake --touch in DAG order ({', '.join(sorted(set(restore.values())))})")
        sm.touch(paths)
        log(f"done: {len(paths)} output(s) are up to date for Snakemake")
        if args.only:
            frozen_hint(sm, restore, root, lock.params_file)
        return 0
    except Failure as err:
        print(f"[restore] ERROR: {err}", file=sys.stderr, flush=True)
        return err.code
    finally:
        tmpdir.cleanup()


if __name__ == "__main__":
    sys.exit(main())
