"""`minialbert bench-inference`: encoder throughput and latency of model folders on this machine.

Each model (the teacher folder, a student folder: anything `AutoModel` loads) encodes batches of
`SEQ_LEN` random token ids at every batch size in `BATCH_SIZES`, after `WARMUP` untimed passes.
Latency is the median wall time of one forward pass (CUDA synchronised), throughput is batch size
over that median. Passes repeat until `MAX_REPEATS` or, once `MIN_REPEATS` are done, until
`TIME_BUDGET_S` is spent, so a slow CPU still finishes in bounded time. Speed depends on the
architecture, not the weights: models whose config.json match are timed once (`timed_as` names
the one that ran). One row per (model, batch size) goes to the CSV with the device named; the
numbers describe the machine that ran the rule, which is why this is a workflow rule that writes a
table and never a timed test.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

BATCH_SIZES = (1, 32)
SEQ_LEN = 128
WARMUP = 2
MIN_REPEATS = 5
MAX_REPEATS = 50
TIME_BUDGET_S = 5.0
SEED = 0
# config.json keys that do not change the computation
NOT_ARCHITECTURE = {"_name_or_path", "architectures", "transformers_version", "dtype", "torch_dtype"}

COLUMNS = ["model", "model_type", "layers", "hidden_size", "params", "device", "device_name", "precision",
           "threads", "batch_size", "seq_len", "repeats", "latency_ms_median", "latency_ms_p90",
           "sequences_per_second", "tokens_per_second", "timed_as", "torch"]


def device_name(device) -> str:
    """What a reader needs to compare numbers: the GPU's or the CPU's model name."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def architecture(folder: Path) -> str:
    """The model's config.json without the keys that do not change its speed."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a model folder")
    cfg = json.loads(path.read_text(encoding="utf-8"))
    return json.dumps({k: v for k, v in cfg.items() if k not in NOT_ARCHITECTURE}, sort_keys=True)


def _load(folder: Path, device):
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    import minialbert  # noqa: F401  (registers MiniALBERT with the Auto classes)

    # the bare encoder: heads differ between checkpoints and are not what is compared (so the
    # load report's list of unused head weights is noise here)
    hf_logging.set_verbosity_error()
    model = AutoModel.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    return model.to(device).eval()


def _timed_passes(model, batch: dict, device, precision: str) -> list[float]:
    import torch

    from ..runtime import autocast

    def one_pass() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.inference_mode(), autocast(device, precision):
            model(**batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for _ in range(WARMUP):
        one_pass()
    times, spent = [], 0.0
    while len(times) < MAX_REPEATS and (len(times) < MIN_REPEATS or spent < TIME_BUDGET_S):
        times.append(one_pass())
        spent += times[-1]
    return times


def bench_model(folder: Path, name: str, device, precision: str, batch_sizes=BATCH_SIZES,
                seq_len: int = SEQ_LEN) -> list[dict]:
    import torch

    model = _load(folder, device)
    cfg = model.config
    vocab = cfg.vocab_size
    gen = torch.Generator().manual_seed(SEED)
    rows = []
    for bs in batch_sizes:
        # ids above the special tokens; every position real (no padding), one segment
        ids = torch.randint(min(1000, vocab - 1), vocab, (bs, seq_len), generator=gen).to(device)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
        times = sorted(_timed_passes(model, batch, device, precision))
        median = statistics.median(times)
        rows.append({
            "model": name, "model_type": cfg.model_type, "layers": cfg.num_hidden_layers,
            "hidden_size": cfg.hidden_size, "params": sum(p.numel() for p in model.parameters()),
            "device": device.type, "device_name": device_name(device), "precision": precision,
            "threads": torch.get_num_threads(), "batch_size": bs, "seq_len": seq_len, "repeats": len(times),
            "latency_ms_median": 1e3 * median, "latency_ms_p90": 1e3 * times[int(0.9 * (len(times) - 1))],
            "sequences_per_second": bs / median, "tokens_per_second": bs * seq_len / median,
            "timed_as": name, "torch": torch.__version__,
        })
    del model
    return rows


def run(args) -> None:
    import pandas as pd
    import torch

    from ..atomic import staged_file
    from ..runtime import resolve_precision

    names = args.names or [Path(m).name for m in args.model]
    if len(names) != len(args.model):
        raise ValueError(f"--names gives {len(names)} name(s) for {len(args.model)} --model folder(s)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    precision = resolve_precision(args.precision, device)
    rows, timed = [], {}
    for folder, name in zip(args.model, names):
        arch = architecture(folder)
        if arch in timed:
            rows += [{**r, "model": name} for r in timed[arch]]
            print(f"bench-inference: {name}: the architecture of {timed[arch][0]['model']}, not timed again")
            continue
        timed[arch] = bench_model(Path(folder), name, device, precision, args.batch_sizes, args.seq_len)
        rows += timed[arch]
        for r in timed[arch]:
            print(f"bench-inference: {name} batch {r['batch_size']}: {r['latency_ms_median']:.2f} ms, "
                  f"{r['sequences_per_second']:,.1f} seq/s ({r['device_name']}, {precision})")
    with staged_file(args.out) as tmp:
        pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False)
