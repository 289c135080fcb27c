"""What produced a result: package versions, the project's commit, the settings' hash, the device.

Every `metrics.json`, distillation `summary.json` and the aggregated summary carry this under their
`runtime` key, next to timings and throughput. It is read when the stage runs, never passed through
rule `params` (a new commit must not rerun the DAG), and comparisons of results exclude `runtime`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "transformers", "snakemake", "dvc", "minialbert")


def settings_sha256(settings: Any) -> str:
    """sha256 of the resolved settings as canonical JSON (sorted keys)."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def git_commit() -> str | None:
    """HEAD of the project's checkout, with "-dirty" when tracked files differ; None outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def record(*, settings: Any = None, device: Any = None, precision: str | None = None,
           seed: int | None = None) -> dict[str, Any]:
    """The provenance block of one result (merge timings into the same `runtime` mapping)."""
    out: dict[str, Any] = {
        "versions": {name: _version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "platform": platform.platform(),
    }
    if settings is not None:
        out["settings_sha256"] = settings_sha256(settings)
    if device is not None:
        out["device"] = str(device)
        if str(device).startswith("cuda"):
            import torch

            out["device_name"] = torch.cuda.get_device_name(torch.device(device))
    if precision is not None:
        out["precision"] = precision
    if seed is not None:
        out["seed"] = seed
    return out
