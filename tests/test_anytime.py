"""Anytime inference: the first k recursions of a MiniALBERT, in the model and after fine-tuning."""

from __future__ import annotations

import json

import pytest
import torch

from minialbert import (
    MiniAlbertConfig,
    MiniAlbertForMaskedLM,
    MiniAlbertForSequenceClassification,
    MiniAlbertForTokenClassification,
    MiniAlbertModel,
)
from minialbert.metrics import compute_metrics
from test_finetune import bert_dir, run, student_dir, task_dirs, tokenizer  # noqa: F401  (fixtures)

N = 3


def tiny(**overrides) -> MiniAlbertConfig:
    return MiniAlbertConfig(**{**dict(vocab_size=100, embedding_size=16, hidden_size=32, num_recursions=N,
                                      num_attention_heads=4, intermediate_size=64,
                                      max_position_embeddings=32), **overrides})


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (2, 7), generator=g)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    return ids, mask


@pytest.mark.parametrize("use_adapters", [True, False])
def test_k_equals_n_is_the_normal_forward_and_k_below_n_stops_early(use_adapters):
    torch.manual_seed(0)
    model = MiniAlbertModel(tiny(use_adapters=use_adapters)).eval()
    ids, mask = batch()
    with torch.no_grad():
        full = model(ids, attention_mask=mask, output_hidden_states=True)
        same = model(ids, attention_mask=mask, output_hidden_states=True, num_recursions=N)
        assert torch.equal(same.last_hidden_state, full.last_hidden_state)
        for k in range(1, N):
            out = model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True,
                        num_recursions=k)
            assert len(out.hidden_states) == k + 1 and len(out.attentions) == k
            # the first k recursions (their own adapters included) are exactly the full run's
            for a, b in zip(out.hidden_states, full.hidden_states):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
            assert (out.last_hidden_state - full.last_hidden_state).abs().max() > 1e-3
    assert model.config.num_recursions == N


def test_heads_pass_num_recursions_through():
    torch.manual_seed(0)
    ids, mask = batch()
    heads = [MiniAlbertForMaskedLM(tiny()), MiniAlbertForSequenceClassification(tiny(num_labels=3)),
             MiniAlbertForTokenClassification(tiny(num_labels=5))]
    for model in heads:
        model.eval()
        with torch.no_grad():
            full = model(ids, attention_mask=mask).logits
            assert torch.equal(model(ids, attention_mask=mask, num_recursions=N).logits, full)
            short = model(ids, attention_mask=mask, num_recursions=1, output_hidden_states=True)
        assert short.logits.shape == full.shape and len(short.hidden_states) == 2
        assert not torch.allclose(short.logits, full)


@pytest.mark.parametrize("k", [0, N + 1, -1, 1.0, True, "2"])
def test_out_of_range_recursions_fail_clearly(k):
    model = MiniAlbertModel(tiny()).eval()
    ids, mask = batch()
    with pytest.raises(ValueError, match=f"num_recursions must be an integer from 1 to {N}"):
        model(ids, attention_mask=mask, num_recursions=k)


def test_attention_recursions_must_run():
    model = MiniAlbertModel(tiny()).eval()
    ids, mask = batch()
    with pytest.raises(ValueError, match="out of range: this forward runs 2 recursions"):
        model(ids, attention_mask=mask, num_recursions=2, attention_recursions=[2])


# --------------------------------------------------------------------------------------------
# after fine-tuning: the `anytime` key of metrics.json


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_finetuned_student_reports_every_depth(tmp_path, student_dir, task_dirs, mode):  # noqa: F811
    result = run(student_dir, task_dirs["classification"], tmp_path, mode=mode, epochs=1,
                 precision="fp32")
    rows = result["anytime"]
    depth = json.loads((student_dir / "config.json").read_text())["num_recursions"]
    assert [r["num_recursions"] for r in rows] == list(range(1, depth + 1))
    assert rows[-1]["metrics"] == result["reported"]
    assert all(r["sequences_per_second"] > 0 for r in rows)
    assert all(r["metrics"]["n"] == result["reported"]["n"] for r in rows)


def test_anytime_runs_each_depth_on_the_reported_split(tmp_path, student_dir, task_dirs,  # noqa: F811
                                                        monkeypatch):
    depths = []
    forward = MiniAlbertModel.forward

    def recording(self, *args, num_recursions=None, **kwargs):
        depths.append(num_recursions)
        return forward(self, *args, num_recursions=num_recursions, **kwargs)

    monkeypatch.setattr(MiniAlbertModel, "forward", recording)
    result = run(student_dir, task_dirs["token_classification"], tmp_path, epochs=1,
                 precision="fp32", eval_batch_size=64)
    # training and the dev/test evaluations run all recursions; then one test pass per depth
    assert depths[-2:] == [1, 2] and set(depths[:-2]) == {None}
    last = result["anytime"][-1]["metrics"]
    preds = result["predictions"]["test"]
    assert compute_metrics("token_classification", preds["pred"], preds["gold"]) == last


def test_no_anytime_for_the_teacher_or_when_off(tmp_path, bert_dir, student_dir, task_dirs):  # noqa: F811
    assert "anytime" not in run(bert_dir, task_dirs["classification"], tmp_path / "t", epochs=1)
    assert "anytime" not in run(student_dir, task_dirs["classification"], tmp_path / "s", epochs=1,
                                anytime=False)
