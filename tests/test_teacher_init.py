"""Teacher initialisation: SVD embeddings and one copied layer, on the real packaged teacher
(all-MiniLM-L6-v2, H=384) and on a tiny random BERT for the error cases."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel

from minialbert.modeling_minialbert import MiniAlbertForMaskedLM, MiniAlbertModel, preset_config
from minialbert.teacher_init import BERT_LAYER_TO_SHARED, init_student_from_teacher


@pytest.fixture(scope="module")
def teacher(teacher_package_dir):
    return BertModel.from_pretrained(teacher_package_dir, local_files_only=True).eval()


def test_reconstruction_error_decreases_with_embedding_size(teacher):
    W = teacher.embeddings.word_embeddings.weight
    errors = []
    for E in (64, 128, 256):
        student = MiniAlbertModel(preset_config("offline-default-noadapters", embedding_size=E))
        report = init_student_from_teacher(student, teacher)
        rank_e = student.embeddings.word_embeddings.weight @ student.projector.weight.T
        measured = (torch.linalg.matrix_norm(W - rank_e) / torch.linalg.matrix_norm(W)).item()
        assert report["reconstruction_error"] == pytest.approx(measured, abs=1e-4)
        assert report["reconstruction_error"] == pytest.approx((1 - report["energy_kept"]) ** 0.5, abs=1e-4)
        # the projector's columns are an orthonormal basis
        torch.testing.assert_close(student.projector.weight.T @ student.projector.weight, torch.eye(E), atol=1e-4, rtol=0)
        errors.append(report["reconstruction_error"])
    assert errors[0] > errors[1] > errors[2] > 0


def test_shared_layer_is_the_chosen_teacher_layer_and_student_runs(teacher):
    student = MiniAlbertModel(preset_config("offline-default"))
    report = init_student_from_teacher(student, teacher)
    assert report["teacher_layer"] == 3 and report["teacher_num_layers"] == 6
    assert report["mlm_head_copied"] is False
    shared = student.shared_layer
    for src, dst in BERT_LAYER_TO_SHARED.items():
        for name in ("weight", "bias"):
            source = teacher.encoder.layer[3].get_submodule(src)
            assert torch.equal(getattr(getattr(shared, dst), name), getattr(source, name)), (src, name)
    assert torch.equal(student.att_adapters[0].layer_norm.weight, teacher.embeddings.LayerNorm.weight)
    assert torch.equal(student.att_adapters[1].layer_norm.weight, shared.output_layer_norm.weight)
    assert torch.equal(student.ffn_adapters[2].layer_norm.bias, shared.attention_layer_norm.bias)
    assert all(a.up.weight.abs().max() == 0 for a in student.att_adapters)

    ids = torch.tensor([[101, 7592, 2088, 2003, 1037, 3231, 102, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        out = student.eval()(ids, attention_mask=mask, output_hidden_states=True)
    assert len(out.hidden_states) == 4 and out.last_hidden_state.shape == (1, 8, 384)
    assert torch.isfinite(out.last_hidden_state).all()

    report = init_student_from_teacher(student, teacher, layer=1)
    assert report["teacher_layer"] == 1
    assert torch.equal(shared.query.weight, teacher.encoder.layer[1].attention.self.query.weight)


def test_full_width_embeddings_reproduce_the_teacher_exactly(teacher):
    # E == H: no projector, no truncation: hidden state 0 is the teacher's embedding output and
    # recursion 1 is the copied teacher layer applied to it.
    student = MiniAlbertModel(preset_config("offline-default-noadapters", embedding_size=384)).eval()
    assert init_student_from_teacher(student, teacher)["reconstruction_error"] == 0.0
    ids = torch.tensor([[101, 1996, 4248, 2829, 4419, 14523, 102]])
    with torch.no_grad():
        ref = teacher(ids, output_hidden_states=True).hidden_states[0]
        got = student(ids, output_hidden_states=True).hidden_states
        layer_out = teacher.encoder.layer[3](ref)
    layer_out = layer_out[0] if isinstance(layer_out, tuple) else layer_out
    torch.testing.assert_close(got[0], ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(got[1], layer_out, atol=1e-4, rtol=0)


def tiny_bert(**overrides):
    config = dict(
        vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32,
    )
    return BertForMaskedLM(BertConfig(**{**config, **overrides})).eval()


def tiny_student(cls=MiniAlbertForMaskedLM, **overrides):
    config = dict(
        vocab_size=100, embedding_size=16, hidden_size=32, num_recursions=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=32,
    )
    return cls(preset_config("offline-default", **{**config, **overrides}))


def test_mlm_head_is_copied_from_a_teacher_with_one():
    torch.manual_seed(0)
    teacher = tiny_bert()
    student = tiny_student()
    report = init_student_from_teacher(student, teacher)
    assert report["mlm_head_copied"] is True and report["teacher_layer"] == 2
    predictions = teacher.cls.predictions
    assert torch.equal(student.mlm_head.dense.weight, predictions.transform.dense.weight)
    assert torch.equal(student.mlm_head.decoder.weight, predictions.decoder.weight)
    assert torch.equal(student.mlm_head.decoder.bias, predictions.bias)

    tied = tiny_student(tie_word_embeddings=True)
    assert init_student_from_teacher(tied, teacher)["mlm_head_copied"] is True
    assert torch.equal(tied.mlm_head.bias, predictions.bias)


@pytest.mark.parametrize(
    "teacher_overrides, student_overrides, layer, match",
    [
        ({"hidden_size": 64, "num_attention_heads": 4}, {}, None, "hidden_size"),
        ({"vocab_size": 120}, {}, None, "vocab_size"),
        ({"intermediate_size": 48}, {}, None, "intermediate_size"),
        ({"num_attention_heads": 8}, {}, None, "num_attention_heads"),
        ({}, {"embedding_size": 48}, None, "embedding_size"),
        ({}, {"max_position_embeddings": 64}, None, "max_position_embeddings"),
        ({}, {}, 4, "out of range"),
    ],
)
def test_incompatible_teacher_raises(teacher_overrides, student_overrides, layer, match):
    with pytest.raises(ValueError, match=match):
        init_student_from_teacher(tiny_student(**student_overrides), tiny_bert(**teacher_overrides), layer=layer)


def test_non_bert_teacher_raises():
    with pytest.raises(ValueError, match="BERT-family"):
        init_student_from_teacher(tiny_student(), torch.nn.Linear(2, 2))
