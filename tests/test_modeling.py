"""MiniALBERT modeling: shapes, attention maps, padding, weight sharing, a trusted ALBERT
reference, adapters, save/load, config validation and parameter counts. Tiny configs only."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AlbertConfig,
    AlbertModel,
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
)

from minialbert import cli
from minialbert.modeling_minialbert import (
    PRESETS,
    MiniAlbertAdapter,
    MiniAlbertConfig,
    MiniAlbertForMaskedLM,
    MiniAlbertForSequenceClassification,
    MiniAlbertForTokenClassification,
    MiniAlbertModel,
    albert_state_dict_to_minialbert,
    freeze_for_adapter_tuning,
    parameter_counts,
    preset_config,
)

V, E, H, HEADS, I = 100, 16, 32, 4, 64


def tiny(**overrides) -> MiniAlbertConfig:
    kwargs = dict(
        vocab_size=V,
        embedding_size=E,
        hidden_size=H,
        num_recursions=3,
        num_attention_heads=HEADS,
        intermediate_size=I,
        max_position_embeddings=32,
    )
    return MiniAlbertConfig(**{**kwargs, **overrides})


def batch(b=2, t=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, t - 2 :] = 0  # second row padded
    ids[mask == 0] = 0
    return ids, mask


def adapter_params(h=H, r_factor=16) -> int:
    r = h // r_factor
    return h * r + r + r * h + h + 2 * h  # down, up, LayerNorm


# ---------------------------------------------------------------------------- shapes


def test_shapes_and_dtypes_of_every_head():
    torch.manual_seed(0)
    ids, mask = batch()
    B, T = ids.shape

    base = MiniAlbertModel(tiny()).eval()
    out = base(ids, attention_mask=mask, output_hidden_states=True)
    assert out.last_hidden_state.shape == (B, T, H) and out.last_hidden_state.dtype == torch.float32
    assert len(out.hidden_states) == 4 and all(h.shape == (B, T, H) for h in out.hidden_states)
    assert out.attentions is None
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    embeds = base.embeddings.word_embeddings(ids)
    torch.testing.assert_close(base(inputs_embeds=embeds, attention_mask=mask).last_hidden_state, out.last_hidden_state)
    assert isinstance(base(ids, return_dict=False), tuple)

    mlm = MiniAlbertForMaskedLM(tiny()).eval()
    labels = torch.full((B, T), -100)
    labels[:, 1] = 5
    o = mlm(ids, attention_mask=mask, labels=labels)
    assert o.logits.shape == (B, T, V) and o.loss.ndim == 0 and torch.isfinite(o.loss)
    assert mlm.mlm_logits(torch.randn(3, 4, 5, H)).shape == (3, 4, 5, V)

    seq = MiniAlbertForSequenceClassification(tiny(num_labels=3)).eval()
    o = seq(ids, attention_mask=mask, labels=torch.tensor([0, 2]))
    assert o.logits.shape == (B, 3) and torch.isfinite(o.loss)
    reg = MiniAlbertForSequenceClassification(tiny(num_labels=1)).eval()
    o = reg(ids, attention_mask=mask, labels=torch.tensor([0.5, -1.0]))
    assert o.logits.shape == (B, 1)
    torch.testing.assert_close(o.loss, F.mse_loss(o.logits.squeeze(-1), torch.tensor([0.5, -1.0])))

    tok = MiniAlbertForTokenClassification(tiny(num_labels=5)).eval()
    tags = torch.randint(0, 5, (B, T))
    tags[mask == 0] = -100
    o = tok(ids, attention_mask=mask, labels=tags)
    assert o.logits.shape == (B, T, 5)
    torch.testing.assert_close(o.loss, F.cross_entropy(o.logits[mask.bool()], tags[mask.bool()]))

    half = MiniAlbertForMaskedLM(tiny()).to(torch.bfloat16).eval()
    o = half(ids, attention_mask=mask, labels=labels)
    assert o.logits.dtype == torch.bfloat16 and o.loss.dtype == torch.float32


def test_masked_positions_gather_the_dense_logits():
    torch.manual_seed(0)
    model = MiniAlbertForMaskedLM(tiny()).eval()
    ids, mask = batch(t=9)
    positions = torch.tensor([[1, 4, 0], [2, 2, 6]])
    labels = torch.tensor([[7, 8, -100], [9, -100, 3]])
    with torch.no_grad():
        dense = model(ids, attention_mask=mask).logits
        sparse = model(ids, attention_mask=mask, masked_positions=positions, labels=labels)
    assert sparse.logits.shape == (2, 3, V)
    expected = torch.stack([dense[b, positions[b]] for b in range(2)])
    torch.testing.assert_close(sparse.logits, expected, atol=1e-6, rtol=1e-5)
    keep = labels != -100
    torch.testing.assert_close(sparse.loss, F.cross_entropy(expected[keep], labels[keep]))
    with pytest.raises(ValueError, match="labels"):
        model(ids, masked_positions=positions, labels=labels[:, :2])


# ---------------------------------------------------------------------------- attention


def test_attention_probabilities_only_for_requested_recursions():
    torch.manual_seed(0)
    model = MiniAlbertModel(tiny()).eval()
    ids, mask = batch()
    with torch.no_grad():
        plain = model(ids, attention_mask=mask)
        every = model(ids, attention_mask=mask, output_attentions=True)
        some = model(ids, attention_mask=mask, attention_recursions=[2, 0])
    assert plain.attentions is None
    assert len(every.attentions) == 3 and len(some.attentions) == 2
    # (recursion 1 runs fused in `some`, eagerly in `every`: equal up to float rounding)
    torch.testing.assert_close(some.attentions[0], every.attentions[2], atol=1e-6, rtol=0)
    assert torch.equal(some.attentions[1], every.attentions[0])
    # materialising the maps (eager path) does not change the outputs of the fused path
    torch.testing.assert_close(some.last_hidden_state, plain.last_hidden_state, atol=1e-5, rtol=1e-5)

    for probs in every.attentions:
        assert probs.shape == (2, HEADS, 7, 7)
        real_rows = probs[mask.bool()[:, None, :].expand(-1, HEADS, -1)]
        torch.testing.assert_close(real_rows.sum(-1), torch.ones(real_rows.shape[:-1]))
        assert probs[1, :, :, 5:].abs().max() == 0  # padded keys get no weight

    with pytest.raises(ValueError, match="out of range"):
        model(ids, attention_recursions=[3])
    with pytest.raises(ValueError, match="either"):
        model(ids, output_attentions=True, attention_recursions=[0])


def test_attention_probabilities_are_pre_dropout_and_differentiable():
    # Attention dropout only (everything else deterministic): recursion 0 sees the same input in
    # train and eval mode, so its pre-dropout probabilities must match exactly, while the
    # outputs differ because dropout is applied to the values' weights.
    torch.manual_seed(0)
    model = MiniAlbertModel(tiny(attention_probs_dropout_prob=0.5, hidden_dropout_prob=0.0))
    ids, mask = batch()
    model.eval()
    with torch.no_grad():
        ref = model(ids, attention_mask=mask, attention_recursions=[0])
    model.train()
    out = model(ids, attention_mask=mask, attention_recursions=[0])
    torch.testing.assert_close(out.attentions[0], ref.attentions[0])
    assert not torch.allclose(out.last_hidden_state, ref.last_hidden_state)
    out.attentions[0][:, :, 0, 1].sum().backward()
    assert model.shared_layer.query.weight.grad.abs().sum() > 0

    # under bf16 autocast the maps are still float32 (they feed a KL loss)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.eval()(ids, attention_mask=mask, attention_recursions=[1])
    assert out.last_hidden_state.dtype == torch.bfloat16 and out.attentions[0].dtype == torch.float32
    torch.testing.assert_close(out.attentions[0].sum(-1)[0], torch.ones(HEADS, 7))


def test_padding_does_not_change_real_tokens():
    torch.manual_seed(0)
    for config in (tiny(), tiny(use_adapters=False, tie_word_embeddings=True)):
        model = MiniAlbertForMaskedLM(config).eval()
        ids = torch.randint(1, V, (2, 6))
        padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], dim=1)
        mask = torch.cat([torch.ones(2, 6), torch.zeros(2, 3)], dim=1).long()
        with torch.no_grad():
            short = model(ids, output_hidden_states=True, output_attentions=True)
            long = model(padded, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        for a, b in zip(short.hidden_states, long.hidden_states):
            torch.testing.assert_close(b[:, :6], a, atol=1e-5, rtol=0)
        torch.testing.assert_close(long.logits[:, :6], short.logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(long.attentions[1][:, :, :6, :6], short.attentions[1], atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------- weight sharing


def unique_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_recursions_share_one_layer():
    no_ad = {n: MiniAlbertModel(tiny(num_recursions=n, use_adapters=False)) for n in (2, 6)}
    with_ad = {n: MiniAlbertModel(tiny(num_recursions=n)) for n in (2, 6)}
    assert unique_params(no_ad[2]) == unique_params(no_ad[6])
    assert unique_params(with_ad[6]) - unique_params(with_ad[2]) == 2 * (6 - 2) * adapter_params()
    assert unique_params(with_ad[2]) - unique_params(no_ad[2]) == 2 * 2 * adapter_params()

    # same weights, more recursions: different computation
    no_ad[6].load_state_dict(no_ad[2].state_dict())
    ids, mask = batch()
    with torch.no_grad():
        a = no_ad[2].eval()(ids, attention_mask=mask, output_hidden_states=True)
        b = no_ad[6].eval()(ids, attention_mask=mask, output_hidden_states=True)
    torch.testing.assert_close(b.hidden_states[2], a.last_hidden_state)
    assert (b.last_hidden_state - a.last_hidden_state).abs().max() > 1e-3


# ---------------------------------------------------------------------------- trusted reference


def test_matches_transformers_albert_without_adapters():
    torch.manual_seed(0)
    n = 3
    albert = AlbertModel(
        AlbertConfig(
            vocab_size=V,
            embedding_size=E,
            hidden_size=H,
            num_hidden_layers=n,
            num_hidden_groups=1,
            inner_group_num=1,
            num_attention_heads=HEADS,
            intermediate_size=I,
            hidden_act="gelu",  # ALBERT defaults to gelu_new (tanh approximation)
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            max_position_embeddings=32,
            attn_implementation="eager",
        )
    ).eval()
    ours = MiniAlbertModel(tiny(num_recursions=n, use_adapters=False)).eval()
    ours.load_state_dict(albert_state_dict_to_minialbert(albert.state_dict()), strict=True)

    ids, mask = batch(b=3, t=10)
    token_types = torch.zeros_like(ids)
    token_types[:, 5:] = 1
    with torch.no_grad():
        ref = albert(ids, attention_mask=mask, token_type_ids=token_types, output_attentions=True)
        got = ours(ids, attention_mask=mask, token_type_ids=token_types, output_attentions=True)
    real = mask.bool()
    assert (got.last_hidden_state - ref.last_hidden_state)[real].abs().max() < 1e-5
    for a, b in zip(got.attentions, ref.attentions):
        assert (a - b).abs().max() < 1e-6


def test_albert_mapping_rejects_multi_group_checkpoints():
    config = AlbertConfig(
        vocab_size=V, embedding_size=E, hidden_size=H, num_hidden_layers=2, num_hidden_groups=2,
        num_attention_heads=HEADS, intermediate_size=I,
    )
    with pytest.raises(ValueError, match="one layer group"):
        albert_state_dict_to_minialbert(AlbertModel(config).state_dict())


# ---------------------------------------------------------------------------- adapters


def test_adapters_start_as_identity_before_layernorm():
    torch.manual_seed(0)
    model = MiniAlbertModel(tiny())
    adapter = model.ffn_adapters[1]
    assert isinstance(adapter, MiniAlbertAdapter) and adapter.down.out_features == H // 16
    assert adapter.up.weight.abs().max() == 0 and adapter.down.weight.abs().max() > 0
    x = torch.randn(2, 5, H) * 3 + 1
    with torch.no_grad():
        torch.testing.assert_close(adapter(x), F.layer_norm(x, (H,), eps=1e-12))
        normed = F.layer_norm(x, (H,))
        torch.testing.assert_close(adapter(normed), normed, atol=1e-5, rtol=0)

    # so the encoder with fresh adapters equals the plain encoder after one extra LayerNorm of the
    # projector output (recursion 0's attention adapter); later adapters see normalised states
    plain = MiniAlbertModel(tiny(use_adapters=False)).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    ids, mask = batch()
    with torch.no_grad():
        got = model.eval()(ids, attention_mask=mask).last_hidden_state
        h = F.layer_norm(plain.projector(plain.embeddings(ids)), (H,), eps=1e-12)
        key_mask = mask.bool()[:, None, None, :]
        for _ in range(3):
            h = plain.shared_layer.feed_forward_block(plain.shared_layer.attention_block(h, key_mask)[0])
    torch.testing.assert_close(got, h, atol=1e-5, rtol=0)


def test_freeze_for_adapter_tuning_trains_adapters_and_head_only():
    n, labels = 3, 4
    model = MiniAlbertForSequenceClassification(tiny(num_recursions=n, num_labels=labels))
    report = freeze_for_adapter_tuning(model)
    expected = 2 * n * adapter_params() + H * labels + labels
    assert report == {"trainable": expected, "total": unique_params(model), "created_adapters": False}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        name.startswith(("minialbert.att_adapters.", "minialbert.ffn_adapters.", "classifier.")) for name in trainable
    )

    mlm = MiniAlbertForMaskedLM(tiny(num_recursions=n))
    head = H * H + H + 2 * H + H * V + V
    assert freeze_for_adapter_tuning(mlm)["trainable"] == 2 * n * adapter_params() + head


def test_freeze_creates_adapters_on_a_plain_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = MiniAlbertForTokenClassification(tiny(use_adapters=False, num_labels=3))
    before = unique_params(model)
    report = freeze_for_adapter_tuning(model)
    assert report["created_adapters"] is True and model.config.use_adapters is True
    assert len(model.minialbert.att_adapters) == len(model.minialbert.ffn_adapters) == 3
    assert report["total"] == before + 2 * 3 * adapter_params()
    assert report["trainable"] == 2 * 3 * adapter_params() + H * 3 + 3
    assert all(a.up.weight.abs().max() == 0 for a in model.minialbert.att_adapters)

    ids, mask = batch()
    model(ids, attention_mask=mask, labels=torch.zeros_like(ids)).loss.backward()
    assert model.minialbert.att_adapters[0].down.weight.grad is not None
    assert model.minialbert.shared_layer.query.weight.grad is None

    model.save_pretrained(tmp_path)  # the new adapters are part of the saved architecture
    reloaded = AutoModelForTokenClassification.from_pretrained(tmp_path)
    assert reloaded.minialbert.att_adapters is not None


# ---------------------------------------------------------------------------- save / load


def test_save_and_auto_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = MiniAlbertForSequenceClassification(tiny(num_labels=3, id2label={0: "a", 1: "b", 2: "c"})).eval()
    with torch.no_grad():  # weights that a re-initialisation on load would overwrite
        model.minialbert.att_adapters[0].up.weight.normal_()
        model.minialbert.embeddings.word_embeddings.weight[0].normal_()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "minialbert"

    assert isinstance(AutoConfig.from_pretrained(tmp_path), MiniAlbertConfig)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, MiniAlbertForSequenceClassification)
    assert loaded.config.id2label == {0: "a", 1: "b", 2: "c"}
    ids, mask = batch()
    with torch.no_grad():
        assert torch.equal(loaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)
    assert isinstance(AutoModel.from_pretrained(tmp_path), MiniAlbertModel)

    mlm, info = AutoModelForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(mlm, MiniAlbertForMaskedLM)
    assert {k for k in info["missing_keys"] if k.startswith("mlm_head.")} == {
        "mlm_head.dense.weight", "mlm_head.dense.bias", "mlm_head.layer_norm.weight",
        "mlm_head.layer_norm.bias", "mlm_head.decoder.weight", "mlm_head.decoder.bias",
    }
    assert set(info["unexpected_keys"]) == {"classifier.weight", "classifier.bias"}


def test_tied_decoder_goes_through_the_projector(tmp_path):
    torch.manual_seed(0)
    model = MiniAlbertForMaskedLM(tiny(tie_word_embeddings=True)).eval()
    assert model.mlm_head.decoder is None
    assert not any(k.startswith("mlm_head.decoder") for k in model.state_dict())
    untied = parameter_counts(MiniAlbertForMaskedLM(tiny()))
    assert untied["head"] - parameter_counts(model)["head"] == H * V

    h = torch.randn(2, 3, H)
    decoder_weight = model.minialbert.embeddings.word_embeddings.weight @ model.minialbert.projector.weight.T
    with torch.no_grad():
        expected = F.linear(model.mlm_head.transform(h), decoder_weight, model.mlm_head.bias)
        torch.testing.assert_close(model.mlm_logits(h), expected)

    model.save_pretrained(tmp_path)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    ids, mask = batch()
    with torch.no_grad():
        assert torch.equal(loaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)

    same_width = MiniAlbertForMaskedLM(tiny(embedding_size=H, tie_word_embeddings=True)).eval()
    assert isinstance(same_width.minialbert.projector, torch.nn.Identity)
    assert same_width(ids, attention_mask=mask).logits.shape == (2, 7, V)


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "field, value",
    [
        ("hidden_size", 30),  # not divisible by 4 heads
        ("num_attention_heads", 5),
        ("adapter_reduction_factor", 0),
        ("adapter_reduction_factor", 64),  # > hidden_size
        ("vocab_size", 0),
        ("embedding_size", -16),
        ("num_recursions", 0),
        ("intermediate_size", 0),
        ("hidden_dropout_prob", 1.0),
        ("attention_probs_dropout_prob", -0.1),
        ("classifier_dropout", 1.5),
        ("hidden_act", "swishy"),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        tiny(**{field: value})


def test_config_fields_and_aliases():
    config = MiniAlbertConfig()
    assert (config.vocab_size, config.embedding_size, config.hidden_size, config.num_recursions) == (30522, 128, 768, 6)
    assert config.use_adapters and config.adapter_size == 48 and not config.tie_word_embeddings
    assert config.num_hidden_layers == 6 and config.num_labels == 2
    assert tiny(num_labels=5).num_labels == 5


def test_loading_another_model_type_fails_clearly(tmp_path):
    BertConfig(vocab_size=V, hidden_size=H, num_attention_heads=HEADS, intermediate_size=I).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type='bert'"):
        MiniAlbertConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type='bert'"):
        MiniAlbertForSequenceClassification.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------- presets


def formula_counts(c: MiniAlbertConfig) -> dict:
    Vv, Ee, Hh, Ii, P, T = (
        c.vocab_size, c.embedding_size, c.hidden_size, c.intermediate_size,
        c.max_position_embeddings, c.type_vocab_size,
    )
    r = Hh // c.adapter_reduction_factor
    counts = {
        "embeddings": Vv * Ee + P * Ee + T * Ee + 2 * Ee,
        "projector": Ee * Hh + Hh if Ee != Hh else 0,
        "shared_layer": 4 * (Hh * Hh + Hh) + 2 * Hh + Hh * Ii + Ii + Ii * Hh + Hh + 2 * Hh,
        "adapters": 2 * c.num_recursions * (Hh * r + r + r * Hh + Hh + 2 * Hh) if c.use_adapters else 0,
        "head": Hh * Hh + Hh + 2 * Hh + Hh * Vv + Vv,
    }
    counts["total"] = sum(counts.values())
    return counts


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_counts_match_the_formula(name):
    config = preset_config(name)
    assert parameter_counts(config) == formula_counts(config)


def test_preset_shapes_and_errors():
    assert set(PRESETS) == {
        "general-e128", "general-e128-noadapters", "general-e312", "general-e312-noadapters",
        "bio-e128", "bio-e128-noadapters", "bio-e312", "bio-e312-noadapters", "offline-default",
        "offline-default-noadapters",
    }
    offline = preset_config("offline-default")
    assert (offline.hidden_size, offline.num_recursions, offline.intermediate_size, offline.adapter_size) == (
        384, 3, 1536, 24,
    )
    assert preset_config("bio-e128").vocab_size == 28996
    assert preset_config("general-e312-noadapters").use_adapters is False
    assert preset_config("offline-default", num_recursions=2).num_recursions == 2
    with pytest.raises(ValueError, match="general-e128"):
        preset_config("huge")
    with pytest.raises(ValueError, match="num_layers"):
        preset_config("offline-default", num_layers=4)
    # a built model counts the same as its config
    model = MiniAlbertForMaskedLM(tiny())
    assert parameter_counts(model) == formula_counts(tiny())
    assert parameter_counts(MiniAlbertModel(tiny()))["head"] == 0


def test_params_cli_prints_every_preset(capsys):
    assert cli.main(["params"]) == 0
    table = capsys.readouterr().out
    for name in PRESETS:
        assert f"| {name} |" in table
    assert cli.main(["params", "--preset", "offline-default", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"preset": "offline-default", **formula_counts(preset_config("offline-default"))}]
    assert cli.main(["params", "--preset", "bio-e128", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "preset,embeddings,projector,shared_layer,adapters,head,total"
    assert lines[1].startswith("bio-e128,")
