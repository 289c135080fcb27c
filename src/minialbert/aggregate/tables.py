"""The summary's csv tables: results.csv (a row per task, model, mode, metric and split) and
comparisons.csv (a row per comparison of `compare`)."""

from __future__ import annotations

import math

import pandas as pd

from .select import Arm
from .stats import Bootstrap

RESULT_COLUMNS = ["task", "model", "mode", "metric", "split", "protocol", "selection_split", "best_lr",
                  "n_seeds", "mean", "ci_low", "ci_high", "std", "trainable_params", "total_params",
                  "unique_params", "selection_mean"]
COMPARISON_COLUMNS = ["task", "metric", "split", "comparison", "a", "b", "diff", "ci_low", "ci_high",
                      "distinguishable"]


def results_frame(arms: list[Arm], boot: Bootstrap) -> pd.DataFrame:
    rows = []
    for arm in arms:
        run = arm.first
        for split in arm.splits():
            for metric, est in boot.estimates(arm, split).items():
                low, high = est.ci
                rows.append({
                    "task": arm.task, "model": arm.model, "mode": arm.mode, "metric": metric,
                    "split": split, "protocol": run.protocol, "selection_split": run.selection_split,
                    "best_lr": arm.best_lr, "n_seeds": est.n_seeds, "mean": est.mean, "ci_low": low,
                    "ci_high": high, "std": est.std, "trainable_params": run.trainable_params,
                    "total_params": run.total_params,
                    # fine-tuning counts the trained model, shared tensors once: no MLM head in it
                    "unique_params": run.total_params,
                    "selection_mean": arm.selection_mean if math.isfinite(arm.selection_mean) else math.nan,
                })
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    params = ["trainable_params", "total_params", "unique_params"]
    frame[params] = frame[params].astype("Int64")  # counts stay integers next to the floors' blanks
    return frame


def comparisons_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
