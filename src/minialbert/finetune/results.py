"""metrics.json's `runtime` block, and what two runs are compared on.

Everything that differs between two runs of the same settings and seed (timings, throughput,
cache hits, versions, the commit) lives under `runtime`; the rest of metrics.json is a function of
the inputs. The timing keys also stay at the top level for one release (`LEGACY_RUNTIME_KEYS`).
"""

from __future__ import annotations

from typing import Any

from ..provenance import record

LEGACY_RUNTIME_KEYS = ("train_seconds", "examples_per_second", "total_seconds", "threads",
                       "cache_hit")


def runtime_block(timings: dict[str, Any], epoch_seconds: list[float], s: dict, device,
                  precision: str, seed: int) -> dict[str, Any]:
    """Timings and throughput merged with `minialbert.provenance.record`."""
    return {**timings, "epoch_seconds": epoch_seconds,
            **record(settings=s, device=device, precision=precision, seed=seed)}


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    """metrics.json without what may differ between two identical runs (`runtime`, its legacy
    top-level copies, and the anytime throughput)."""
    out = {k: v for k, v in result.items() if k != "runtime" and k not in LEGACY_RUNTIME_KEYS}
    if "anytime" in out:
        out["anytime"] = [{k: v for k, v in row.items() if k != "sequences_per_second"}
                          for row in out["anytime"]]
    return out
