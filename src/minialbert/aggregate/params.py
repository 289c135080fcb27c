"""Parameter counts and distillation figures of the checkpoints (params.csv, results.md).

The students are counted as distilled, with their MLM head (`head`) shown apart from the encoder;
the fine-tuned models' counts (no MLM head) come from the metrics files instead.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd


def safetensors_numel(path: Path) -> int:
    """Parameter count from a safetensors header (no tensor is read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        return sum(math.prod(fh.get_slice(k).get_shape()) for k in fh.keys())


def parameter_table(students: list[Path], summaries: dict[str, dict], teacher: Path | None) -> pd.DataFrame:
    from ..modeling_minialbert import MiniAlbertConfig, parameter_counts

    rows = []
    if teacher is not None:
        rows.append({"model": "teacher", "total": safetensors_numel(teacher / "model.safetensors")})
    for student in students:
        summary = summaries.get(student.name, {})
        rows.append({
            "model": student.name,
            **parameter_counts(MiniAlbertConfig.from_pretrained(student)),
            "init": summary.get("init"),
            "distill_steps": summary.get("steps"),
        })
    return pd.DataFrame(rows)


def distill_table(summaries: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for name, s in summaries.items():
        rows.append({
            "student": name,
            "init": s.get("init"),
            "distilled": s.get("distill"),
            "steps": s.get("steps"),
            "tokens_seen": s.get("tokens_seen"),
            "tokens_per_second": s.get("tokens_per_second"),
            "wall_seconds": s.get("wall_seconds"),
            **{f"loss_{k}": v for k, v in (s.get("final_losses") or {}).items()},
        })
    return pd.DataFrame(rows)
