"""Load check: after the default DAG ran under `snakemake --cores all`, are the shared files sound?

Usage (in a fresh clone, after `make run`):

    .venv/bin/python benchmarks/load_check.py .

Jobs race on shared files: many fine-tuning jobs build and read the same task's tokenisation cache
(`resources/tasks/<task>/cache/tok-*.npz`) at once, and read the task folders and the tokenised
corpus while other jobs run. This script checks what those races could have damaged and prints a
table, one row per check; it exits 1 when one fails:

1. no temporary or partial file is left anywhere under resources/ and results/;
2. every JSON and JSONL file parses; the tokenised corpus' .bin sizes match its meta.json; the
   teacher's weights match the sha256 in its manifest;
3. every tokenisation cache equals the same cache rebuilt from scratch in this one process;
4. the data stages (task folders, tokenised corpus) rerun one job at a time (`--cores 1`, in a copy of the workflow) give
   byte-identical task splits and tokenised corpus;
5. `snakemake -n` in the run has nothing to do.
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
from pathlib import Path

import numpy as np

WORKFLOW_FILES = ["Snakefile", "workflow", "config", "profiles"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(run: Path) -> list[str]:
    found = []
    for top in ("resources", "results"):
        for p in (run / top).rglob("*"):
            if p.name.endswith((".tmp", ".old", ".partial", ".state")):
                found.append(str(p.relative_to(run)))
    return found


def parse_all(run: Path) -> tuple[int, list[str]]:
    n, bad = 0, []
    for top in ("resources", "results"):
        for p in (run / top).rglob("*.json*"):
            if not p.is_file() or p.suffix not in (".json", ".jsonl"):
                continue
            n += 1
            try:
                # "\n" only: str.splitlines also splits at U+2028 and U+0085, which JSON strings may hold
                text = p.read_text(encoding="utf-8")
                lines = text.split("\n") if p.suffix == ".jsonl" else [text]
                for line in lines:
                    if line.strip():
                        json.loads(line)
            except (ValueError, UnicodeDecodeError) as err:
                bad.append(f"{p.relative_to(run)}: {err}")
    return n, bad


def corpus_and_teacher(run: Path) -> list[str]:
    problems = []
    for meta_file in (run / "resources/tokens").glob("*/*/meta.json"):
        meta = json.loads(meta_file.read_text())
        width = np.dtype(meta["dtype"]).itemsize
        ids, lengths = meta_file.parent / "input_ids.bin", meta_file.parent / "lengths.bin"
        if ids.stat().st_size != meta["n_windows"] * meta["max_length"] * width:
            problems.append(f"{ids}: {ids.stat().st_size} bytes for {meta['n_windows']} windows")
        if lengths.stat().st_size != meta["n_windows"] * 4:
            problems.append(f"{lengths}: {lengths.stat().st_size} bytes for {meta['n_windows']} windows")
        if int(np.fromfile(lengths, dtype=np.int32).sum(dtype=np.int64)) != meta["n_tokens"]:
            problems.append(f"{lengths}: lengths do not sum to n_tokens {meta['n_tokens']}")
    for manifest in (run / "resources/teacher").glob("*/manifest.json"):
        want = json.loads(manifest.read_text()).get("sha256")
        if want and sha(manifest.parent / "model.safetensors") != want:
            problems.append(f"{manifest.parent}/model.safetensors: sha256 differs from its manifest")
    return problems


def caches_equal_a_fresh_build(run: Path) -> tuple[int, list[str]]:
    from transformers import AutoTokenizer

    from minialbert.finetune.batches import load_or_build_cache, tokenizer_hash
    from minialbert.tasks.folder import load_task

    models = [*(run / "resources/teacher").glob("*"), *(run / "results/distill").glob("*")]
    tokenizers = {}
    for m in models:
        if (m / "config.json").is_file():
            tok = AutoTokenizer.from_pretrained(str(m))
            tokenizers.setdefault(tokenizer_hash(tok), tok)
    n, problems = 0, []
    for cache in sorted((run / "resources/tasks").glob("*/cache/tok-*.npz")):
        n += 1
        with np.load(cache, allow_pickle=False) as z:
            raced = {name: z[name] for name in z.files}
        meta = json.loads(bytes(raced["meta"]).decode())
        tok = tokenizers.get(meta["tokenizer_sha256"])
        if tok is None:
            problems.append(f"{cache}: no model in the run has its tokenizer")
            continue
        task_dir = cache.parent.parent
        task, rows = load_task(task_dir)
        with tempfile.TemporaryDirectory() as fresh:
            data, hit = load_or_build_cache(task_dir, task, rows, tok, meta["max_length"],
                                            meta["label_scheme"] if meta["label_scheme"] != "-" else "word",
                                            cache_dir=Path(fresh))
        assert not hit
        rebuilt = {f"{split}/{field}": arr for split, fields in data.items() for field, arr in fields.items()}
        raced.pop("meta")
        if raced.keys() != rebuilt.keys() or any(not np.array_equal(raced[k], rebuilt[k]) for k in raced):
            problems.append(f"{cache}: differs from a fresh build")
    return n, problems


def sequential_data_stages(run: Path, snakemake: Path) -> tuple[int, list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        for item in WORKFLOW_FILES:
            src = run / item
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, copy / item)
        env = {**os.environ, "PATH": f"{snakemake.parent}{os.pathsep}{os.environ['PATH']}"}  # the `minialbert` CLI
        targets = [str(d.relative_to(run)) for d in (*(run / "resources/tasks").glob("*"),
                                                      *(run / "resources/tokens").glob("*/*"))]
        proc = subprocess.run([str(snakemake), "--cores", "1", *targets], cwd=copy, env=env,
                              capture_output=True, text=True)
        if proc.returncode:
            return 0, [f"the --cores 1 rerun failed: {proc.stderr[-2000:]}"]
        files = [p for p in (copy / "resources").rglob("*")
                 if p.is_file() and p.suffix in (".jsonl", ".bin") and "cache" not in p.parts]
        problems = [str(p.relative_to(copy)) for p in files
                    if not (run / p.relative_to(copy)).is_file() or sha(p) != sha(run / p.relative_to(copy))]
        return len(files), problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a checkout where `make run` (snakemake --cores all) finished")
    args = ap.parse_args()
    run = args.run.resolve()
    snakemake = Path(sys.executable).parent / "snakemake"
    rows = []

    left = leftovers(run)
    rows.append(("no temporary / partial files under resources/, results/", "-", left))
    n, bad = parse_all(run)
    rows.append(("every JSON / JSONL file parses", n, bad))
    rows.append(("tokenised corpus sizes and teacher sha256", "-", corpus_and_teacher(run)))
    n, bad = caches_equal_a_fresh_build(run)
    rows.append(("tokenisation caches equal a fresh single-process build", n, bad))
    n, bad = sequential_data_stages(run, snakemake)
    rows.append(("task splits and tokenised corpus equal a --cores 1 rerun (sha256)", n, bad))
    dry = subprocess.run([str(snakemake), "-n"], cwd=run, capture_output=True, text=True)
    rows.append(("`snakemake -n`: nothing to be done", "-",
                 [] if "Nothing to be done" in dry.stdout + dry.stderr else ["jobs pending"]))

    print("| check | files | result |\n|---|---:|---|")
    for name, count, problems in rows:
        result = "ok" if not problems else "FAIL: " + "; ".join(problems[:5])
        print(f"| {name} | {count} | {result} |")
    return 1 if any(p for _, _, p in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
