"""The teacher's MLM head is checked against chance before KD learns from it (`distill.head_check`),
on a tiny BertForMaskedLM over the counting language, tokenised by `minialbert.data`."""

from __future__ import annotations

import json
import math
import re

import pytest

from minialbert.data.packed import PackedWindows
from minialbert.distill.engine import run
from minialbert.distill.head_check import check_windows, teacher_mlm_accuracy
from minialbert.errors import StageError
from test_distill_helpers import counting_world, spec, student_spec

KD = {"mlm": 1.0, "kd": 5.0, "att": 1.0, "hid": 1.0}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "counting"  # shared with test_distill_engine
    return {"trained": counting_world(root), "random": counting_world(root, trained=False)}


def test_the_check_masks_as_the_loss_does_and_chance_is_the_most_frequent_token(worlds):
    from transformers import BertForMaskedLM

    w = worlds["random"]
    data = PackedWindows(w["tokens"])
    teacher = BertForMaskedLM.from_pretrained(w["teacher"]).eval()
    got = teacher_mlm_accuracy(teacher, data, windows=40, mask_prob=0.15, seed=3, device="cpu", batch_size=16)
    assert got == teacher_mlm_accuracy(teacher, data, windows=40, mask_prob=0.15, seed=3, device="cpu")  # seeded
    acc, chance, n = got
    # a seeded sample of 40 windows, each masking ceil(15% of its real non-special tokens)
    idx = check_windows(len(data), 40, 3)
    assert len(idx) == 40 and list(idx) == sorted(set(idx.tolist()))
    assert n == sum(math.ceil(0.15 * (int(data.lengths[i]) - 2)) for i in idx)
    assert 0.4 < chance < 0.6  # "and" is every other word
    assert acc <= chance  # an untrained head


def test_a_trained_head_passes_and_both_numbers_are_recorded(worlds, tmp_path):
    w = worlds["trained"]
    out = tmp_path / "kd"
    s = run(w["teacher"], w["tokens"], student_spec(init="teacher"), spec(steps=2, weights=KD), out)
    summ = json.loads((out / "summary.json").read_text())
    assert summ["teacher_mlm_accuracy"] == s["teacher_mlm_accuracy"] > 0.6
    assert 0.4 < summ["teacher_mlm_chance"] < 0.6 and "kd" in summ["final_losses"]


def test_an_untrained_head_is_refused_under_kd(worlds, tmp_path):
    w = worlds["random"]
    out = tmp_path / "refused"
    with pytest.raises(StageError) as err:
        run(w["teacher"], w["tokens"], student_spec(), spec(steps=2, weights=KD), out)
    msg = str(err.value)
    assert str(w["teacher"]) in msg and "no better than chance" in msg and "distill.weights.kd" in msg
    numbers = re.search(r"accuracy (\d\.\d+) .* chance \(always the most frequent token\) (\d\.\d+)", msg)
    assert numbers and float(numbers[1]) <= float(numbers[2])
    assert not out.exists() and not (tmp_path / "refused.state").exists()  # refused before training
    # without KD the head is not needed: the run goes ahead and still records the numbers
    s = run(w["teacher"], w["tokens"], student_spec(), spec(steps=1), out)
    assert s["teacher_mlm_accuracy"] <= s["teacher_mlm_chance"]

