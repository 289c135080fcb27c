"""Evaluation: a split's predictions in file order, their metrics, and anytime inference.

Predictions are kept in the form metrics.json stores them, `{"gold": [...], "pred": [...]}`: label
strings (classification), floats (regression) or one list of tag strings per sentence (token tasks,
per word or per labelled sub-token, see `label_scheme`). The metrics are computed on exactly those
lists, so the aggregate's bootstrap recomputes the same numbers from metrics.json alone.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ..metrics import compute_metrics
from ..runtime import autocast
from .batches import Split


def forward_logits(model, batch: dict[str, torch.Tensor], num_recursions: int | None = None
                   ) -> torch.Tensor:
    """float32 logits of a collated batch (labels stay out: the loss is computed by the caller)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if num_recursions is not None:  # MiniALBERT only; PEFT passes it through to the encoder
        inputs["num_recursions"] = num_recursions
    out = model(**inputs, return_dict=True)
    return (out.logits if hasattr(out, "logits") else out[0]).float()


def predict(model, split: Split, kind: str, batch_size: int, device, precision: str,
            num_recursions: int | None = None) -> list[Any]:
    """Per example: a float (regression), a class id, or an array of per-token class ids."""
    preds: list[Any] = [None] * len(split)
    model.eval()
    with torch.inference_mode():
        for batch_idx in split.eval_batches(batch_size):
            batch = split.collate(batch_idx, device)
            with autocast(device, precision):
                logits = forward_logits(model, batch, num_recursions)
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
    """(gold, predicted) tag sequences: per word (by its first sub-token) or per labelled sub-token."""
    gold_seqs, pred_seqs = [], []
    goff = split.a["gold_offsets"]
    for j, p in zip(split.index, preds):
        if label_scheme == "word":
            gold = [labels[t] for t in split.a["gold"][goff[j]:goff[j + 1]]]
            words = ["O"] * len(gold)  # words cut off by max_length count as O
            widx = split.seq("widx", j)
            for pos in np.nonzero(widx >= 0)[0]:
                words[widx[pos]] = labels[int(p[pos])]
            gold_seqs.append(gold)
            pred_seqs.append(words)
        else:
            y = split.seq("y", j)
            keep = np.nonzero(y != -100)[0]
            gold_seqs.append([labels[int(y[pos])] for pos in keep])
            pred_seqs.append([labels[int(p[pos])] for pos in keep])
    return gold_seqs, pred_seqs


def labelled(split: Split, preds: list[Any], task: dict, label_scheme: str) -> dict[str, list]:
    """`predict`'s output as metrics.json's `{"gold": [...], "pred": [...]}`, in file order."""
    kind, labels = task["kind"], task["labels"]
    if kind == "token_classification":
        gold, pred = _tag_sequences(split, preds, labels, label_scheme)
    elif kind == "regression":
        gold, pred = split.a["y"][split.index].tolist(), [float(p) for p in preds]
    else:
        gold = [labels[int(y)] for y in split.a["y"][split.index]]
        pred = [labels[int(p)] for p in preds]
    return {"gold": gold, "pred": pred}


def score(task: dict, predictions: dict[str, list]) -> dict:
    """The task's metric dict (`minialbert.metrics.compute_metrics`) of `labelled` predictions."""
    kind = task["kind"]
    # token tasks: bio = entity F1, plain = per-tag scores (task.json folders before it: bio)
    scheme = {"tag_scheme": task.get("tag_scheme") or "bio"} if kind == "token_classification" else {}
    return compute_metrics(kind, predictions["pred"], predictions["gold"], task["labels"], **scheme)


def evaluate(model, split: Split, task: dict, s: dict, device, precision: str,
             num_recursions: int | None = None) -> tuple[dict, dict[str, list]]:
    """(metrics, predictions) of `model` on one split."""
    raw = predict(model, split, task["kind"], s["eval_batch_size"], device, precision, num_recursions)
    predictions = labelled(split, raw, task, s["label_scheme"])
    return score(task, predictions), predictions


def anytime(model, split: Split, task: dict, s: dict, device, precision: str, depth: int
            ) -> list[dict]:
    """Metrics and sequences/s (the forward passes only) with the first k = 1..depth recursions."""
    out = []
    for k in range(1, depth + 1):
        t0 = time.perf_counter()
        raw = predict(model, split, task["kind"], s["eval_batch_size"], device, precision, k)
        seconds = time.perf_counter() - t0
        metrics = score(task, labelled(split, raw, task, s["label_scheme"]))
        rate = round(len(split) / seconds, 2) if seconds else None
        out.append({"num_recursions": k, "metrics": metrics, "sequences_per_second": rate})
        print(f"anytime k={k}/{depth}: {task['metric']} {metrics.get(task['metric'])}, {rate} seq/s",
              flush=True)
    return out
