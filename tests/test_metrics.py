"""Metrics on hand-made predictions; every expected number is worked out in the comments."""

from __future__ import annotations

import math

import pytest

from minialbert.metrics import compute_metrics, metric_names


def test_binary_classification_by_hand():
    # refs 1 1 0 0, preds 1 0 0 0: TP=1 FN=1 TN=2 FP=0
    m = compute_metrics("classification", [1, 0, 0, 0], [1, 1, 0, 0], ["neg", "pos"])
    assert m["accuracy"] == pytest.approx(0.75)
    # binary F1 of "pos": P = 1/1, R = 1/2 -> 2/3
    assert m["f1"] == pytest.approx(2 / 3)
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = 2 / sqrt(1*2*2*3)
    assert m["matthews"] == pytest.approx(2 / math.sqrt(12))
    # macro F1: pos 2/3; neg P = 2/3, R = 1 -> 0.8; mean 0.7333
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert m["n"] == 4


def test_multiclass_by_hand_and_string_labels():
    labels = ["a", "b", "c"]
    refs = [0, 0, 1, 1, 2, 2]
    preds = [0, 1, 1, 1, 2, 0]
    m = compute_metrics("pair_classification", preds, refs, labels)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class F1: a P=1/2 R=1/2 -> 0.5; b P=2/3 R=1 -> 0.8; c P=1 R=1/2 -> 2/3
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert "f1" not in m  # binary F1 only for two-class tasks
    same = compute_metrics("classification", [labels[p] for p in preds], [labels[r] for r in refs],
                           labels)
    assert same == m
    perfect = compute_metrics("classification", refs, refs, labels)
    assert perfect["accuracy"] == perfect["macro_f1"] == perfect["matthews"] == 1.0


def test_regression_by_hand():
    m = compute_metrics("regression", [1, 2, 3, 4], [2, 4, 6, 8])
    assert m["pearson"] == pytest.approx(1.0)
    assert m["spearman"] == pytest.approx(1.0)
    # deviations (-1.5, -.5, .5, 1.5) vs (-1.5, .5, -.5, 1.5): cov 4, var 5 and 5 -> r = 0.8
    m = compute_metrics("regression", [1, 2, 3, 4], [1, 3, 2, 4])
    assert m["pearson"] == pytest.approx(0.8)
    assert m["spearman"] == pytest.approx(0.8)
    assert m["mse"] == pytest.approx(0.5)
    # constant predictions: correlation undefined -> None (valid JSON), not NaN
    m = compute_metrics("regression", [0.5, 0.5, 0.5], [1, 2, 3])
    assert m["pearson"] is None and m["spearman"] is None


def test_ner_entity_level_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    # one of two entities found, nothing spurious: P 1/1, R 1/2, F1 2/3
    m = compute_metrics("token_classification", [["B-PER", "I-PER", "O", "O"]], gold)
    assert (m["precision"], m["recall"]) == (pytest.approx(1.0), pytest.approx(0.5))
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(3 / 4)
    # PER cut short is wrong, LOC right: P 1/2, R 1/2, F1 1/2
    m = compute_metrics("token_classification", [["B-PER", "O", "O", "B-LOC"]], gold)
    assert m["precision"] == m["recall"] == m["f1"] == pytest.approx(0.5)
    # default (conlleval) mode: an I-PER after O opens an entity, so this is exact
    m = compute_metrics("token_classification", [["I-PER", "I-PER", "O", "B-LOC"]], gold)
    assert m["f1"] == pytest.approx(1.0)
    # ids into the label list work too
    labels = ["B-LOC", "B-PER", "I-PER", "O"]
    m2 = compute_metrics("token_classification", [[1, 2, 3, 3]], [[1, 2, 3, 0]], labels)
    assert m2["f1"] == pytest.approx(2 / 3)


def test_metric_names_and_errors():
    assert metric_names("classification", 2) == ["accuracy", "macro_f1", "matthews", "f1"]
    assert metric_names("regression", 0)[:2] == ["pearson", "spearman"]
    with pytest.raises(ValueError, match="unknown task kind"):
        compute_metrics("ranking", [1], [1])
    with pytest.raises(ValueError, match="2 predictions for 1"):
        compute_metrics("classification", [0, 1], [0], ["a", "b"])
    with pytest.raises(ValueError, match="not one of"):
        compute_metrics("classification", ["zz"], ["a"], ["a", "b"])


def test_plain_tags_by_hand():
    # POS tags are not BIO: every tag is a class, scored per token
    gold = [["DET", "NOUN", "VERB"], ["NOUN", "VERB"]]
    pred = [["DET", "NOUN", "NOUN"], ["NOUN", "VERB"]]
    m = compute_metrics("token_classification", pred, gold, ["DET", "NOUN", "VERB"], tag_scheme="plain")
    assert set(m) == {"accuracy", "macro_f1", "n"} and m["n"] == 2
    assert m["accuracy"] == pytest.approx(4 / 5)
    # DET P=R=1 -> 1; NOUN P=2/3 R=1 -> 0.8; VERB P=1 R=1/2 -> 2/3
    assert m["macro_f1"] == pytest.approx((1 + 0.8 + 2 / 3) / 3)
    # no scheme given: inferred from the labels (not BIO -> plain), ids work as for BIO
    assert compute_metrics("token_classification", [[0, 1, 1], [1, 2]], [[0, 1, 2], [1, 2]],
                           ["DET", "NOUN", "VERB"]) == m
    # a BIO-looking set scored as plain on request: B-PER / I-PER / O are three classes
    bio = compute_metrics("token_classification", [["B-PER", "O"]], [["B-PER", "I-PER"]],
                          tag_scheme="plain")
    assert bio["accuracy"] == pytest.approx(0.5) and "f1" not in bio
    # and a BIO set without a scheme keeps seqeval's entity F1 (the default, as before)
    assert "f1" in compute_metrics("token_classification", [["B-PER", "O"]], [["B-PER", "O"]])


def test_metric_names_per_tag_scheme():
    assert metric_names("token_classification", 5) == ["precision", "recall", "f1", "accuracy"]
    assert metric_names("token_classification", 5, "plain") == ["accuracy", "macro_f1"]
    with pytest.raises(ValueError, match="unknown tag scheme 'iob'"):
        metric_names("token_classification", 5, "iob")
    with pytest.raises(ValueError, match="unknown tag scheme 'iob'"):
        compute_metrics("token_classification", [["O"]], [["O"]], tag_scheme="iob")
