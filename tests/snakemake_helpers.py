"""Helpers shared by the tests that drive real Snakemake runs (workflow, DVC)."""

from __future__ import annotations

import re


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a snakemake (dry) run; empty when there is nothing to do."""
    counts = {}
    block = output.split("Job stats:", 1)
    if len(block) == 2:
        for line in block[1].splitlines()[3:]:
            m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
            if not m:
                break
            counts[m.group(1)] = int(m.group(2))
    counts.pop("total", None)
    return counts
