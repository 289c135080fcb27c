"""The fine-tuned model as a folder any transformers user loads (`finetune.settings.save`).

`<dir of metrics.json>/checkpoint/` holds `model.safetensors` and `config.json` (with the task's
id2label / label2id), the tokenizer files with `model_max_length` set to the fine-tuning
max_length (so `truncation=True` feeds the model what the evaluation fed it), and `README.md`, the
model card (`model_card`). LoRA is merged into the weights (PEFT's `merge_and_unload`), so the
folder is a plain transformers model and needs no peft. A MiniALBERT folder loads after
`import minialbert`, which registers the model with the Auto classes; nothing runs remote code.

The folder is staged beside its place and renamed into it, so it appears whole or not at all, and
it is written before metrics.json, which names it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..atomic import staged_dir, write_json, write_text
from ..files import TOKENIZER_FILES
from .model_card import lineage, model_card
from .modes import count_params

CHECKPOINT_DIR = "checkpoint"  # beside metrics.json; metrics.json's `checkpoint` names it


def plain_model(model, mode: str):
    """The model as transformers knows it: LoRA merged into the weights it wraps."""
    return model.merge_and_unload() if mode == "lora" else model


def _set_max_length(path: Path, max_length: int) -> None:
    """`truncation=True` through the saved tokenizer then reproduces what the evaluation saw."""
    config = json.loads(path.read_text()) if path.is_file() else {}
    write_json(path, {**config, "model_max_length": max_length})


def save_checkpoint(model, mode: str, tokenizer, dest: Path, result: dict, task: dict,
                    model_dir: Path) -> Path:
    """Write the fine-tuned `model` (and its card, from metrics.json's `result`) to `dest`.

    Merging LoRA changes `model` in place: call this after the last evaluation.
    """
    model = plain_model(model, mode)
    card = model_card(result, task, lineage(model_dir), model.config,
                      unique_params=count_params(model)[1])
    with staged_dir(dest) as tmp:
        model.save_pretrained(tmp)
        # the model folder's own tokenizer files: a tokenizer object that has been used carries
        # the truncation / padding of its last call, which would differ between cache hit and miss
        for name in TOKENIZER_FILES:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, tmp / name)
        _set_max_length(tmp / "tokenizer_config.json", result["settings"]["max_length"])
        write_text(tmp / "README.md", card)
    print(f"saved the fine-tuned model to {dest}", flush=True)
    return dest
