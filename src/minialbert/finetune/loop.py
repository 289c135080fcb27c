"""The fine-tuning loop: `run_finetune` (train, pick the best dev epoch, final evaluation,
metrics.json) and `evaluate`."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import settings
from ..atomic import write_json
from ..metrics import compute_metrics
from ..optim import adamw
from ..runtime import autocast, resolve_precision, seed_everything
from ..tasks.folder import read_task_json
from . import MODES
from .batches import Split, load_or_build_cache, load_tokenizer, train_split
from .modes import count_params, load_model, setup_mode


def _logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = model(**inputs, return_dict=True)
    return (out.logits if hasattr(out, "logits") else out[0]).float()


def _loss(kind: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if kind == "regression":
        return torch.nn.functional.mse_loss(logits.squeeze(-1), labels)
    if kind == "token_classification":
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    return torch.nn.functional.cross_entropy(logits, labels)


# --------------------------------------------------------------------------------------------
# evaluation


def _predict(model, split: Split, kind: str, batch_size: int, device, precision: str) -> list[Any]:
    """Per example: a float (regression), a class id, or an array of per-token class ids."""
    preds: list[Any] = [None] * len(split)
    model.eval()
    with torch.inference_mode():
        for batch_idx in split.eval_batches(batch_size):
            batch = split.collate(batch_idx, device)
            with autocast(device, precision):
                logits = _logits(model, batch)
            if kind == "regression":
                values = logits.squeeze(-1).cpu().tolist()
            else:
                values = logits.argmax(-1).cpu().numpy()
            for b, j in enumerate(batch_idx):
                preds[j] = values[b]
    model.train()
    return preds


def _tag_sequences(split: Split, preds: list[np.ndarray], labels: list[str],
                   label_scheme: str) -> tuple[list[list[str]], list[list[str]]]:
    """(predicted, gold) tag sequences: per word (by its first sub-token) or per labelled sub-token."""
    pred_seqs, gold_seqs = [], []
    goff = split.a["gold_offsets"]
    for j, p in zip(split.index, preds):
        if label_scheme == "word":
            gold = [labels[t] for t in split.a["gold"][goff[j]:goff[j + 1]]]
            words = ["O"] * len(gold)  # words cut off by max_length count as O
            widx = split.seq("widx", j)
            for pos in np.nonzero(widx >= 0)[0]:
                words[widx[pos]] = labels[int(p[pos])]
            pred_seqs.append(words)
            gold_seqs.append(gold)
        else:
            y = split.seq("y", j)
            keep = np.nonzero(y != -100)[0]
            pred_seqs.append([labels[int(p[pos])] for pos in keep])
            gold_seqs.append([labels[int(y[pos])] for pos in keep])
    return pred_seqs, gold_seqs


def evaluate(model, split: Split, task: dict, s: dict, device, precision: str) -> dict:
    """The task's metric dict (`minialbert.metrics.compute_metrics`) on one split."""
    kind, labels = task["kind"], task["labels"]
    preds = _predict(model, split, kind, s["eval_batch_size"], device, precision)
    if kind == "token_classification":
        return compute_metrics(kind, *_tag_sequences(split, preds, labels, s["label_scheme"]), labels)
    refs = split.a["y"][split.index].tolist()
    if kind != "regression":
        preds = [int(p) for p in preds]
    return compute_metrics(kind, preds, refs, labels)


def _score(metrics: dict, name: str) -> float:
    v = metrics.get(name)
    return -math.inf if v is None else float(v)


# --------------------------------------------------------------------------------------------
# training


def _check_args(mode: str, lr: float, model_dir: Path) -> None:
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"--lr must be a positive number, got {lr!r}")
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: model folder not found")


def _train_epoch(model, train: Split, optimizer, scheduler, params: list, kind: str, s: dict,
                 seed: int, epoch: int, device, precision: str) -> float:
    """One pass over the train split; the mean training loss."""
    loss_sum, n_batches = 0.0, 0
    for batch_idx in train.train_batches(s["batch_size"], seed, epoch):
        batch = train.collate(batch_idx, device)
        with autocast(device, precision):
            logits = _logits(model, batch)
        loss = _loss(kind, logits, batch["labels"])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"epoch {epoch}: the training loss is {loss.item()}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if s["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(params, s["grad_clip"])
        optimizer.step()
        scheduler.step()
        loss_sum += loss.item()
        n_batches += 1
    return loss_sum / max(n_batches, 1)


def run_finetune(model_dir, model_name: str, task_dir, mode: str, lr: float, seed: int,
                 spec: str | dict | None, out, cache_dir=None) -> dict:
    """Fine-tune `model_dir` on `task_dir` and write metrics.json to `out`; returns its content.

    `spec` is the `finetune.settings` section (JSON text or a mapping), checked by the schema.
    """
    t_start = time.perf_counter()
    s = settings.load_section("finetune.settings", spec)
    model_dir, task_dir = Path(model_dir), Path(task_dir)
    _check_args(mode, lr, model_dir)
    if s["threads"]:
        torch.set_num_threads(s["threads"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(s["precision"], device)

    from transformers import get_scheduler

    task = read_task_json(task_dir)
    kind = task["kind"]
    tokenizer = load_tokenizer(model_dir)
    seed_everything(seed)
    model = load_model(model_dir, task, mode)
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos is not None and s["max_length"] > max_pos:
        raise ValueError(f"finetune.settings.max_length: {s['max_length']} exceeds the model's "
                         f"max_position_embeddings ({max_pos})")
    t_cache = time.perf_counter()
    data, cache_hit = load_or_build_cache(task_dir, task, None, tokenizer, s["max_length"],
                                          s["label_scheme"], cache_dir)
    print(f"tokenised splits {'from cache' if cache_hit else 'built and cached'} "
          f"({time.perf_counter() - t_cache:.1f}s)", flush=True)
    pad_id = tokenizer.pad_token_id
    train = train_split(data["train"], task, pad_id, s["max_train_examples"])
    evals = {name: Split(arrays, kind, pad_id) for name, arrays in data.items() if name != "train"}

    model = setup_mode(model, mode, kind, s)
    model.to(device)
    trainable, total = count_params(model)
    print(f"{model_name} on {task['name']} ({kind}), mode {mode}: {trainable:,} of {total:,} "
          f"parameters trainable; {len(train)} train examples; precision {precision} on {device}, "
          f"{torch.get_num_threads()} threads", flush=True)

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    optimizer = adamw(named, lr=lr, weight_decay=s["weight_decay"])  # lr exactly as given
    total_steps = math.ceil(len(train) / s["batch_size"]) * s["epochs"]
    scheduler = get_scheduler(s["scheduler"], optimizer,
                              num_warmup_steps=int(round(s["warmup_ratio"] * total_steps)),
                              num_training_steps=total_steps)

    history = []
    best = {"score": -math.inf, "epoch": None, "dev": None, "state": None}
    train_seconds = 0.0
    model.train()
    for epoch in range(1, s["epochs"] + 1):
        t0 = time.perf_counter()
        loss = _train_epoch(model, train, optimizer, scheduler, params, kind, s, seed, epoch,
                            device, precision)
        epoch_seconds = time.perf_counter() - t0
        train_seconds += epoch_seconds
        dev = evaluate(model, evals["dev"], task, s, device, precision)
        history.append({"epoch": epoch, "train_loss": loss, "train_seconds": round(epoch_seconds, 3),
                        "dev": dev})
        print(f"epoch {epoch}/{s['epochs']}: loss {loss:.4f}, dev {task['metric']} "
              f"{dev.get(task['metric'])}, {len(train) / epoch_seconds:.1f} ex/s", flush=True)
        score = _score(dev, task["metric"])
        if score > best["score"] or best["epoch"] is None:  # best-dev weights kept in memory
            best = {"score": score, "epoch": epoch, "dev": dev,
                    "state": [p.detach().clone() for p in params]}
    if best["epoch"] != s["epochs"]:
        with torch.no_grad():
            for p, saved in zip(params, best["state"]):
                p.copy_(saved)

    test = None
    if task.get("test_has_labels", True) and evals["test"].has_labels:
        test = evaluate(model, evals["test"], task, s, device, precision)
    extra = {name: evaluate(model, split, task, s, device, precision)
             for name, split in evals.items() if name not in ("dev", "test") and split.has_labels}
    result = {
        "model": model_name,
        "task": task["name"],
        "kind": kind,
        "mode": mode,
        "lr": lr,
        "seed": seed,
        "trainable_params": trainable,
        "total_params": total,
        "dev": best["dev"],
        "test": test,
        "eval_split": "test" if test is not None else "dev",
        "selection_metric": task["metric"],
        "best_epoch": best["epoch"],
        "epochs": s["epochs"],
        "train_examples": len(train),
        "train_seconds": round(train_seconds, 3),
        "examples_per_second": round(len(train) * s["epochs"] / train_seconds, 2) if train_seconds else None,
        "total_seconds": round(time.perf_counter() - t_start, 3),
        "precision": precision,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "model_type": model.config.model_type if hasattr(model, "config") else None,
        "cache_hit": cache_hit,
        "settings": s,
        "history": history,
    }
    if extra:
        result["extra"] = extra
    final = test if test is not None else best["dev"]
    print(f"best epoch {best['epoch']}; {result['eval_split']} {task['metric']} "
          f"{final.get(task['metric'])}", flush=True)
    write_json(out, result)
    return result
