"""The task model and what of it trains: loading, the modes full / adapter / LoRA, parameter counts.

A model folder is any local Hugging Face checkpoint: a MiniALBERT student (saved from
`MiniAlbertForMaskedLM`) or the BERT teacher (a `BertModel`); either way the task head is new, and
nothing is downloaded or run as remote code.
"""

from __future__ import annotations

from pathlib import Path

import torch

# BERT: attention.self.query/value; MiniALBERT: shared_layer.query/value (one pair, every recursion)
DEFAULT_LORA_TARGETS = ["query", "value"]


def is_minialbert(config) -> bool:
    from ..modeling_minialbert import MiniAlbertConfig

    return isinstance(config, MiniAlbertConfig)


def _head_kwargs(task: dict) -> dict:
    kind = task["kind"]
    if kind == "regression":
        return {"num_labels": 1, "problem_type": "regression"}
    labels = task["labels"]
    kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
              "label2id": {name: i for i, name in enumerate(labels)}}
    if kind != "token_classification":
        kwargs["problem_type"] = "single_label_classification"
    return kwargs


def load_model(model_dir: Path, task: dict, mode: str):
    """The task model from a local checkpoint folder (MiniALBERT student or BERT teacher)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

    import minialbert  # noqa: F401  (registers MiniALBERT with the Auto classes)

    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir / 'config.json'}: not a model folder")
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    if mode == "adapter" and not is_minialbert(config):
        raise ValueError(f"adapter mode needs a MiniALBERT checkpoint; {model_dir} holds a "
                         f"{config.model_type!r} model: use --mode full or lora")
    cls = (AutoModelForTokenClassification if task["kind"] == "token_classification"
           else AutoModelForSequenceClassification)
    if type(config) not in cls._model_mapping:
        raise ValueError(f"{model_dir}: a {config.model_type!r} checkpoint has no "
                         f"{cls.__name__.removeprefix('AutoModelFor')} head in transformers; "
                         "fine-tuning takes a MiniALBERT student or a BERT-family text encoder")
    return cls.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False,
                               **_head_kwargs(task))


def _lora_targets(model, targets: list[str] | None) -> list[str]:
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    targets = list(DEFAULT_LORA_TARGETS if targets is None else targets)
    found = [t for t in targets if any(n == t or n.endswith("." + t) for n in names)]
    if len(found) != len(targets):
        missing = sorted(set(targets) - set(found))
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise ValueError(f"lora_targets {missing} match no Linear module of this model; set "
                         f"finetune lora_targets (Linear modules: {leaves})")
    return targets


def _wrap_lora(model, kind: str, s: dict):
    """PEFT LoRA on the target Linear layers (MiniALBERT: one pair reused by every recursion);
    the task head stays fully trainable."""
    from peft import LoraConfig, TaskType, get_peft_model

    head = [n for n, m in model.named_children()
            if n != model.base_model_prefix and any(True for _ in m.parameters())]
    cfg = LoraConfig(
        task_type=TaskType.TOKEN_CLS if kind == "token_classification" else TaskType.SEQ_CLS,
        r=s["lora_r"], lora_alpha=s["lora_alpha"], lora_dropout=s["lora_dropout"],
        target_modules=_lora_targets(model, s["lora_targets"]), modules_to_save=head or None)
    return get_peft_model(model, cfg)


def setup_mode(model, mode: str, kind: str, s: dict):
    """Freeze / wrap the model for `mode`; returns the model to train."""
    if mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if mode == "adapter":  # embeddings, projector, shared layer frozen; 2N adapters + head train
        from ..modeling_minialbert import freeze_for_adapter_tuning

        if freeze_for_adapter_tuning(model).get("created_adapters"):
            print("the checkpoint has no adapters: fresh ones were created for adapter tuning", flush=True)
        return model
    return _wrap_lora(model, kind, s)


def count_params(model) -> tuple[int, int]:
    """(trainable, total), each shared tensor counted once."""
    seen, trainable, total = set(), 0, 0
    for name, p in model.named_parameters():
        if id(p) in seen or "original_module" in name:  # PEFT's frozen copy of the saved head
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total
