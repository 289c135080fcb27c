"""The fine-tuning run: `run_finetune` trains, keeps the epoch the protocol chooses, evaluates the
reported and extra splits (with predictions), runs anytime inference, saves the checkpoint and
writes metrics.json."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import settings
from ..atomic import write_json
from ..errors import StageError
from ..optim import adamw
from ..runtime import autocast, resolve_precision, seed_everything
from ..tasks.folder import read_task_json
from . import MODES
from .batches import Split, load_or_build_cache, load_tokenizer, train_split
from .checkpoint import CHECKPOINT_DIR, save_checkpoint
from .evaluation import anytime, evaluate, forward_logits
from .modes import count_params, is_minialbert, load_model, setup_mode
from .protocol import Protocol, choose_protocol, slice_indices
from .results import runtime_block


def _loss(kind: str, logits: torch.Tensor, labels: torch.Tensor,
          class_weight: torch.Tensor | None = None) -> torch.Tensor:
    if kind == "regression":
        return torch.nn.functional.mse_loss(logits.squeeze(-1), labels)
    if kind == "token_classification":
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    return torch.nn.functional.cross_entropy(logits, labels, weight=class_weight)


def balanced_class_weights(train: Split, n_labels: int) -> torch.Tensor:
    """n / (k * count_c) over the train split (scikit-learn's "balanced"): every class carries the
    same total weight, so an imbalanced task cannot be won by predicting the majority class."""
    counts = np.bincount(train.a["y"][train.index], minlength=n_labels).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (n_labels * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def _score(metrics: dict, name: str) -> float:
    v = metrics.get(name)
    return -math.inf if v is None else float(v)


def _check_args(mode: str, lr: float, model_dir: Path) -> None:
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"--lr must be a positive number, got {lr!r}")
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: model folder not found")


def _train_epoch(model, train: Split, optimizer, scheduler, params: list, kind: str, s: dict,
                 seed: int, epoch: int, device, precision: str,
                 class_weight: torch.Tensor | None = None) -> float:
    """One pass over the train split; the mean training loss."""
    loss_sum, n_batches = 0.0, 0
    for step, batch_idx in enumerate(train.train_batches(s["batch_size"], seed, epoch), 1):
        batch = train.collate(batch_idx, device)
        with autocast(device, precision):
            logits = forward_logits(model, batch)
        loss = _loss(kind, logits, batch["labels"], class_weight)
        if not torch.isfinite(loss):
            lr = optimizer.param_groups[0]["lr"]
            raise StageError(f"epoch {epoch}, step {step}: the training loss is {loss.item()} (lr "
                             f"{lr:g}); nothing was written: lower --lr or set grad_clip")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if s["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(params, s["grad_clip"])
        optimizer.step()
        scheduler.step()
        loss_sum += loss.item()
        n_batches += 1
    return loss_sum / max(n_batches, 1)


@dataclass
class _Fit:
    """What training leaves: the per-epoch history and the chosen epoch's evaluation."""

    history: list[dict] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    epoch: int | None = None
    metrics: dict | None = None  # on the selection split, at `epoch`
    predictions: dict | None = None
    state: list[torch.Tensor] | None = None  # the trainable tensors at `epoch` (None: the last)


def _fit(model, train: Split, selection: Split, proto: Protocol, task: dict, s: dict, lr: float,
         seed: int, device, precision: str) -> _Fit:
    """Train for `epochs`, scoring the selection split after each; the model ends on the chosen
    epoch's weights (the best one, or the last for the reference protocol)."""
    from transformers import get_scheduler

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    optimizer = adamw(named, lr=lr, weight_decay=s["weight_decay"])  # lr exactly as given
    total_steps = math.ceil(len(train) / s["batch_size"]) * s["epochs"]
    scheduler = get_scheduler(s["scheduler"], optimizer,
                              num_warmup_steps=int(round(s["warmup_ratio"] * total_steps)),
                              num_training_steps=total_steps)
    class_weight = None
    if s["class_weights"] == "balanced" and task["kind"] in ("classification", "pair_classification"):
        class_weight = balanced_class_weights(train, len(task["labels"])).to(device)
    fit, best_score = _Fit(), -math.inf
    model.train()
    for epoch in range(1, s["epochs"] + 1):
        t0 = time.perf_counter()
        loss = _train_epoch(model, train, optimizer, scheduler, params, task["kind"], s, seed,
                            epoch, device, precision, class_weight)
        seconds = time.perf_counter() - t0
        fit.epoch_seconds.append(round(seconds, 3))
        metrics, predictions = evaluate(model, selection, task, s, device, precision)
        fit.history.append({"epoch": epoch, "train_loss": loss, proto.selection_split: metrics})
        print(f"epoch {epoch}/{s['epochs']}: loss {loss:.4f}, {proto.selection_split} "
              f"{task['metric']} {metrics.get(task['metric'])}, {len(train) / seconds:.1f} ex/s",
              flush=True)
        score = _score(metrics, task["metric"])
        if proto.last_epoch or score > best_score or fit.epoch is None:
            best_score = score
            fit.epoch, fit.metrics, fit.predictions = epoch, metrics, predictions
            # the best weights are kept in memory; the last epoch's are the model's own
            fit.state = None if proto.last_epoch else [p.detach().clone() for p in params]
    if fit.epoch != s["epochs"]:
        with torch.no_grad():
            for p, saved in zip(params, fit.state):
                p.copy_(saved)
    return fit


def _splits(data: dict, task: dict, s: dict, pad_id: int) -> tuple[Protocol, Split, Split, dict]:
    """(protocol, train, selection split, evaluation splits by name) for this task."""
    kind = task["kind"]
    evals = {name: Split(arrays, kind, pad_id) for name, arrays in data.items() if name != "train"}
    proto = choose_protocol(task.get("test_has_labels", True) and evals["test"].has_labels,
                            s["selection"])
    held_out = None
    if proto.selection_split == "train_slice":
        held_out = slice_indices(data["train"], task, s["slice_fraction"], s["slice_max"])
        evals["train_slice"] = Split(data["train"], kind, pad_id, held_out)
    train = train_split(data["train"], task, pad_id, s["max_train_examples"], held_out)
    return proto, train, evals[proto.selection_split], evals


def run_finetune(model_dir, model_name: str, task_dir, mode: str, lr: float, seed: int,
                 spec: str | dict | None, out, cache_dir=None) -> dict:
    """Fine-tune `model_dir` on `task_dir` and write metrics.json to `out`; returns its content.

    `spec` is the `finetune.settings` section (JSON text or a mapping), checked by the schema.
    """
    t_start = time.perf_counter()
    s = settings.load_section("finetune.settings", spec)
    model_dir, task_dir, out = Path(model_dir), Path(task_dir), Path(out)
    _check_args(mode, lr, model_dir)
    if s["threads"]:
        torch.set_num_threads(s["threads"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(s["precision"], device)

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
    proto, train, selection, evals = _splits(data, task, s, tokenizer.pad_token_id)

    model = setup_mode(model, mode, kind, s)
    model.to(device)
    trainable, total = count_params(model)
    print(f"{model_name} on {task['name']} ({kind}), mode {mode}: {trainable:,} of {total:,} "
          f"parameters trainable; {len(train)} train examples, protocol {proto.name} "
          f"({proto.selection_split} {len(selection)}); precision {precision} on {device}, "
          f"{torch.get_num_threads()} threads", flush=True)

    fit = _fit(model, train, selection, proto, task, s, lr, seed, device, precision)
    train_seconds = sum(fit.epoch_seconds)

    scores = {proto.selection_split: fit.metrics}
    predictions = {}
    if proto.reported_split == proto.selection_split:  # reference: the last epoch's dev
        predictions[proto.reported_split] = fit.predictions
    for name, split in evals.items():
        if name in scores or not split.has_labels or (name == "test" and proto.reported_split != "test"):
            continue
        scores[name], predictions[name] = evaluate(model, split, task, s, device, precision)
    extra = {name: scores[name] for name in predictions if name not in ("dev", "test")}
    reported = scores[proto.reported_split]

    result = {
        "model": model_name,
        "task": task["name"],
        "kind": kind,
        "mode": mode,
        "lr": lr,
        "seed": seed,
        "trainable_params": trainable,
        "total_params": total,
        "protocol": proto.name,
        "selection_split": proto.selection_split,
        "reported_split": proto.reported_split,
        "eval_split": proto.reported_split,
        "selection_metric": task["metric"],
        "selection": fit.metrics,
        "reported": reported,
        "dev": scores["dev"],
        "test": scores.get("test"),
        "best_epoch": fit.epoch,
        "epochs": s["epochs"],
        "train_examples": len(train),
        "precision": precision,
        "device": str(device),
        "model_type": model.config.model_type if hasattr(model, "config") else None,
        "settings": s,
        "history": fit.history,
        "predictions": predictions,
    }
    if extra:
        result["extra"] = extra
    if s["anytime"] and is_minialbert(model.config):
        result["anytime"] = anytime(model, evals[proto.reported_split], task, s, device, precision,
                                    model.config.num_recursions)
    print(f"{proto.name} protocol: epoch {fit.epoch}; {proto.reported_split} {task['metric']} "
          f"{reported.get(task['metric'])}", flush=True)
    if s["save"]:  # before metrics.json, which names it
        save_checkpoint(model, mode, tokenizer, out.parent / CHECKPOINT_DIR, result, task, model_dir)
        result["checkpoint"] = CHECKPOINT_DIR
    timings = {"train_seconds": round(train_seconds, 3),
               "examples_per_second": (round(len(train) * s["epochs"] / train_seconds, 2)
                                       if train_seconds else None),
               "total_seconds": round(time.perf_counter() - t_start, 3),
               "threads": torch.get_num_threads(), "cache_hit": cache_hit}
    result.update(timings)  # legacy top-level copies, for one release: readers use `runtime`
    result["runtime"] = runtime_block(timings, fit.epoch_seconds, s, device, precision, seed)
    write_json(out, result)
    return result
