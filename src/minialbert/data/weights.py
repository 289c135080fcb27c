"""The teacher's weights: find them in a model folder, and make them one `model.safetensors`.

Weights are taken from safetensors. A teacher that ships only `pytorch_model.bin` (e.g. older hub
checkpoints such as BioBERT) is converted with `torch.load(weights_only=True)`, which unpickles
tensors only and cannot run code; sharded checkpoints are merged into one file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .sources import read_json

# the weight files a hub snapshot may carry, most preferred first: (kind, files to download)
HUB_WEIGHTS = (
    ("model.safetensors", ["model.safetensors"]),
    ("model.safetensors.index.json", ["model.safetensors.index.json", "model-*.safetensors"]),
    ("pytorch_model.bin", ["pytorch_model.bin"]),
    ("pytorch_model.bin.index.json", ["pytorch_model.bin.index.json", "pytorch_model-*.bin"]),
)
MLM_HEAD_PREFIX = "cls.predictions"


def hub_weight_patterns(repo_files: set[str], where: str) -> list[str]:
    """The download patterns of the preferred weights among a hub repo's files."""
    for name, patterns in HUB_WEIGHTS:
        if name in repo_files:
            return patterns
    raise FileNotFoundError(f"{where} has no model.safetensors or pytorch_model.bin")


def find_weights(folder: Path) -> tuple[str, list[Path]]:
    """(kind, files): kind in safetensors | safetensors_sharded | bin | bin_sharded."""
    if (folder / "model.safetensors").is_file():
        return "safetensors", [folder / "model.safetensors"]
    for index_name, kind in (
        ("model.safetensors.index.json", "safetensors_sharded"),
        ("pytorch_model.bin.index.json", "bin_sharded"),
    ):
        index = folder / index_name
        if index.is_file():
            try:
                names = sorted(set(read_json(index, "teacher weights index")["weight_map"].values()))
            except (KeyError, TypeError, AttributeError) as err:
                raise ValueError(f"teacher weights index {index}: unreadable ({err})") from None
            missing = [n for n in names if not (folder / n).is_file()]
            if missing:
                raise FileNotFoundError(f"teacher weights index {index}: missing shard(s) {missing}")
            return kind, [folder / n for n in names]
    if (folder / "pytorch_model.bin").is_file():
        return "bin", [folder / "pytorch_model.bin"]
    raise FileNotFoundError(
        f"teacher folder {folder} has no model.safetensors (nor pytorch_model.bin to convert)"
    )


def _load_bin(path: Path) -> dict:
    import torch

    try:
        part = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a user error
        raise ValueError(  # not torch's text: it runs to a page
            f"teacher weights {path}: refused by torch.load(weights_only=True) "
            f"({type(err).__name__}): it holds more than tensors (a pickle that could run code) "
            f"or is corrupt; provide model.safetensors instead"
        ) from None
    if not isinstance(part, dict):
        raise ValueError(f"teacher weights {path}: not a state dict")
    return part


def convert_to_safetensors(kind: str, files: list[Path], out: Path) -> None:
    """Merge shards / convert pytorch_model.bin into one model.safetensors (tensors only)."""
    import torch
    from safetensors.torch import load_file, save_file

    state: dict[str, Any] = {}
    for path in files:
        state.update(load_file(str(path)) if kind.startswith("safetensors") else _load_bin(path))
    # clone: tied tensors (e.g. decoder <- word embeddings) must not share storage in safetensors
    state = {k: v.detach().contiguous().clone() for k, v in state.items() if torch.is_tensor(v)}
    save_file(state, str(out), metadata={"format": "pt"})


def has_mlm_head(path: Path) -> bool:
    """Whether a safetensors file holds the BERT MLM head (reads the header only)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            names = list(fh.keys())
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"teacher weights {path}: not a readable safetensors file ({err})") from None
    return any(name.startswith(MLM_HEAD_PREFIX) for name in names)
