"""Each distillation term against a direct, slow reference (explicit loops, the reference code's
formula), with padding masks; the masking rules; the layer map; spec validation. (The sparse
teacher forward against the dense one is in test_distill_devices.py, run on every device.)"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from minialbert.distill import losses as L
from minialbert.distill.masking import IGNORE_INDEX, mask_tokens, num_mask_slots, step_generator
from minialbert.distill.spec import default_layer_map, parse_spec, parse_student_spec, resolve_layer_map

torch.manual_seed(0)


def _lengths_mask(lengths, t):
    return (torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]).long()


def _probs(b, h, t, mask, junk_rows=True):
    """Random attention probabilities with padded keys at exactly 0; padded query rows are junk."""
    scores = torch.randn(b, h, t, t) * 2
    scores = scores.masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
    p = scores.softmax(-1)
    if junk_rows:
        p = torch.where(mask.bool()[:, None, :, None], p, torch.rand_like(p) * 5)
    return p


# ---- MLM / KD --------------------------------------------------------------------------------

def test_mlm_matches_a_loop():
    logits = torch.randn(3, 4, 11)
    labels = torch.randint(0, 11, (3, 4))
    labels[0, 1] = labels[2, 3] = labels[1, 0] = IGNORE_INDEX
    total, n = 0.0, 0
    for b in range(3):
        for m in range(4):
            if labels[b, m] == IGNORE_INDEX:
                continue
            total += -torch.log_softmax(logits[b, m].double(), -1)[labels[b, m]].item()
            n += 1
    assert L.mlm_loss(logits, labels).item() == pytest.approx(total / n, rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kd_is_batchmean_kl_over_masked_positions_only(temperature):
    s, t = torch.randn(2, 5, 13), torch.randn(2, 5, 13)
    valid = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    t[~valid] = 1e4 * torch.randn_like(t[~valid])  # whatever sits in padding slots is ignored
    total, n = 0.0, 0
    for b in range(2):
        for m in range(5):
            if not valid[b, m]:
                continue
            pt = torch.softmax(t[b, m].double() / temperature, -1)
            ps = torch.softmax(s[b, m].double() / temperature, -1)
            total += sum(pt[v] * (math.log(pt[v]) - math.log(ps[v])) for v in range(13)).item()
            n += 1
    ref = total / n * temperature**2
    assert L.kd_loss(s, t, valid, temperature).item() == pytest.approx(ref, rel=1e-5)
    # and it is torch's KLDiv "batchmean" on the masked rows
    kl = F.kl_div(F.log_softmax(s[valid] / temperature, -1), F.softmax(t[valid] / temperature, -1),
                  reduction="batchmean") * temperature**2
    assert L.kd_loss(s, t, valid, temperature).item() == pytest.approx(kl.item(), rel=1e-5)


def test_kd_is_zero_for_identical_logits():
    x = torch.randn(2, 3, 9)
    assert L.kd_loss(x, x.clone(), torch.ones(2, 3, dtype=torch.bool)).item() == pytest.approx(0.0, abs=1e-6)


# ---- ATT -------------------------------------------------------------------------------------

def _att_reference(s, t, mask):
    b_, h_, t_, _ = s.shape
    total, n = 0.0, 0
    for b in range(b_):
        for h in range(h_):
            for q in range(t_):
                if not mask[b, q]:
                    continue
                row = 0.0
                for k in range(t_):
                    if mask[b, k]:  # padded keys: 0 probability in both maps
                        row += t[b, h, q, k].item() * (math.log(t[b, h, q, k].item()) - math.log(s[b, h, q, k].item()))
                total += row
                n += 1
    return total / n


def test_att_is_mean_row_kl_over_real_rows_and_heads():
    mask = _lengths_mask([6, 4, 2], 6)
    s, t = _probs(3, 2, 6, mask), _probs(3, 2, 6, mask)
    got = L.att_loss(s, t, mask, normalisation="row").item()
    assert math.isfinite(got)
    assert got == pytest.approx(_att_reference(s, t, mask), rel=1e-5)


def _reference_code_att(s, t, mask):
    """The reference code's ATT term, literally: the rows of real queries of every head, + 1e-12 on
    both maps, torch.nn.KLDivLoss(reduction="mean") of log(student) against the teacher."""
    b, h, t_len, _ = s.shape
    rows = mask.bool()[:, None, :, None].expand(b, h, t_len, t_len)
    s_rows = torch.masked_select(s.double(), rows).view(-1, t_len) + 1e-12
    t_rows = torch.masked_select(t.double(), rows).view(-1, t_len) + 1e-12
    return torch.nn.KLDivLoss(reduction="mean")(torch.log(s_rows), t_rows).item()


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
def test_att_reference_normalisation_is_the_reference_kldivloss_mean():
    """Short and long windows in one batch (padded query rows and padded keys): the engine's ATT
    term (sum over the batch / global denominator) equals the reference's KLDivLoss mean."""
    from minialbert.distill.masking import MaskedBatch
    from minialbert.distill.step import Terms, global_dens

    mask = _lengths_mask([7, 5, 2, 7], 7)
    s, t = _probs(4, 3, 7, mask), _probs(4, 3, 7, mask)
    ref = _reference_code_att(s, t, mask)
    assert L.att_loss(s, t, mask).item() == pytest.approx(ref, rel=1e-5)  # reference is the default
    weights = {"mlm": 1.0, "kd": 0.0, "att": 1.0, "hid": 0.0}
    labels = torch.zeros(4, 2, dtype=torch.long)
    mb = MaskedBatch(torch.zeros(4, 7, dtype=torch.long), torch.zeros(4, 2, dtype=torch.long), labels)
    for how, scale in (("reference", 1), ("row", 7)):
        den = global_dens(mb, mask, Terms(weights, [(0, 0)], 1.0, "cosine", heads=3, att_normalisation=how))
        split = (L.att_sum(s[:1], t[:1], mask[:1]) + L.att_sum(s[1:], t[1:], mask[1:])) / den["att"]
        assert split.item() == pytest.approx(ref * scale, rel=1e-5)  # row = T x reference
        assert L.att_loss(s, t, mask, normalisation=how).item() == pytest.approx(ref * scale, rel=1e-5)
    with pytest.raises(ValueError, match="att_normalisation"):
        L.att_loss(s, t, mask, normalisation="mean")


def test_att_head_mismatch_uses_head_averaged_maps():
    mask = _lengths_mask([5, 3], 5)
    s, t = _probs(2, 2, 5, mask, junk_rows=False), _probs(2, 4, 5, mask, junk_rows=False)
    ref = _att_reference(s.mean(1, keepdim=True), t.mean(1, keepdim=True), mask)
    assert L.att_loss(s, t, mask, normalisation="row").item() == pytest.approx(ref, rel=1e-5)


def test_att_padded_rows_and_keys_change_nothing_and_never_nan():
    mask = _lengths_mask([4, 2], 6)
    s, t = _probs(2, 3, 6, mask), _probs(2, 3, 6, mask)
    base = L.att_loss(s, t, mask)
    s2 = s.clone()
    s2[1, :, 3] = torch.rand(3, 6)  # a padded query row of the student: ignored
    assert torch.equal(L.att_loss(s2, t, mask), base)
    assert L.att_loss(t, t, mask).item() == pytest.approx(0.0, abs=1e-6)
    s.requires_grad_(True)
    L.att_loss(s, t, mask).backward()
    assert torch.isfinite(s.grad).all()


# ---- HID -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_hid_matches_a_loop_and_ignores_pads(kind):
    mask = _lengths_mask([5, 2, 4], 5)
    s, t = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    s[~mask.bool()] = 1e3  # pads: junk
    total, n = 0.0, 0
    for b in range(3):
        for i in range(5):
            if not mask[b, i]:
                continue
            a, c = s[b, i].double(), t[b, i].double()
            if kind == "cosine":
                total += 1 - (a @ c / (a.norm() * c.norm())).item()
            else:
                total += ((a - c) ** 2).mean().item()
            n += 1
    assert L.hid_loss(s, t, mask, kind).item() == pytest.approx(total / n, rel=1e-5)


def test_hid_with_a_learned_projection():
    torch.manual_seed(1)
    mask = _lengths_mask([4, 3], 4)
    s, t = torch.randn(2, 4, 6), torch.randn(2, 4, 10)
    proj = torch.nn.Linear(6, 10)
    got = L.hid_loss(proj(s), t, mask)
    total, n = 0.0, 0
    for b in range(2):
        for i in range(4):
            if mask[b, i]:
                p = proj.weight.double() @ s[b, i].double() + proj.bias.double()
                total += 1 - (p @ t[b, i].double() / (p.norm() * t[b, i].double().norm())).item()
                n += 1
    assert got.item() == pytest.approx(total / n, rel=1e-5)
    got.backward()
    assert proj.weight.grad.abs().sum() > 0  # the projection is trained


def test_global_denominators_make_sums_split_invariant():
    """Sums over halves / global count == the loss over the whole batch (how DDP shards add up)."""
    mask = _lengths_mask([6, 3, 5, 1], 6)
    s, t = _probs(4, 2, 6, mask), _probs(4, 2, 6, mask)
    whole = L.att_loss(s, t, mask, normalisation="row")
    den = mask.sum() * 2
    halves = (L.att_sum(s[:2], t[:2], mask[:2]) + L.att_sum(s[2:], t[2:], mask[2:])) / den
    assert halves.item() == pytest.approx(whole.item(), rel=1e-6)


# ---- masking ---------------------------------------------------------------------------------

SPECIAL = [0, 100, 101, 102, 103]


def _batch(b=8, t=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, t + 1, (b,), generator=g)
    lengths[0], lengths[1] = t, 3
    ids = torch.randint(1000, 5000, (b, t), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
    ids[:, 0] = 101
    ids[torch.arange(b), lengths - 1] = 102
    ids[mask == 0] = 0
    return ids, mask


def test_masking_static_slots_real_non_special_only():
    ids, am = _batch()
    m = num_mask_slots(32, 0.15)
    assert m == math.ceil(0.15 * 32) == 5
    mb = mask_tokens(ids, am, num_slots=m, mask_id=103, special_ids=SPECIAL, vocab_size=30522,
                     generator=step_generator(42, 0))
    assert mb.positions.shape == mb.labels.shape == (8, m)
    for b in range(8):
        n_cand = int(am[b].sum()) - 2
        valid = mb.labels[b] != IGNORE_INDEX
        assert int(valid.sum()) == min(m, math.ceil(0.15 * n_cand))
        pos = mb.positions[b][valid]
        assert len(set(pos.tolist())) == len(pos)
        assert all(am[b, p] == 1 and ids[b, p].item() not in SPECIAL for p in pos.tolist())
        assert torch.equal(mb.labels[b][valid], ids[b, pos])
        # nothing outside the valid slots changed
        changed = (mb.input_ids[b] != ids[b]).nonzero().flatten().tolist()
        assert set(changed) <= set(pos.tolist())
    # a 3-token window [CLS] x [SEP]: one slot used, the rest padding
    assert int((mb.labels[1] != IGNORE_INDEX).sum()) == 1


def test_masking_is_deterministic_and_dynamic():
    ids, am = _batch()
    kw = dict(num_slots=5, mask_id=103, special_ids=SPECIAL, vocab_size=30522)
    a = mask_tokens(ids, am, generator=step_generator(42, 7), **kw)
    b = mask_tokens(ids, am, generator=step_generator(42, 7), **kw)
    c = mask_tokens(ids, am, generator=step_generator(42, 8), **kw)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.positions, b.positions)
    assert not torch.equal(a.positions, c.positions)


def test_masking_80_10_10():
    ids, am = _batch(b=4000, t=64, seed=3)
    mb = mask_tokens(ids, am, num_slots=num_mask_slots(64, 0.15), mask_id=103, special_ids=SPECIAL,
                     vocab_size=30522, generator=step_generator(1, 0))
    valid = mb.valid
    new = torch.gather(mb.input_ids, 1, mb.positions)[valid]
    orig = mb.labels[valid]
    n = len(orig)
    assert n > 20000
    frac_mask = (new == 103).float().mean().item()
    frac_same = (new == orig).float().mean().item()
    frac_rand = 1 - frac_mask - frac_same
    assert abs(frac_mask - 0.8) < 0.01 and abs(frac_same - 0.1) < 0.01 and abs(frac_rand - 0.1) < 0.01
    assert not torch.isin(new[(new != 103) & (new != orig)], torch.tensor(SPECIAL)).any()


# ---- layer map and settings --------------------------------------------------------------------

@pytest.mark.parametrize("n,layers,expected", [
    (6, 12, [1, 3, 5, 7, 9, 11]),
    (3, 6, [1, 3, 5]),
    (4, 6, [1, 2, 4, 5]),
    (6, 6, [0, 1, 2, 3, 4, 5]),
    (4, 12, [2, 5, 8, 11]),
    (5, 12, [1, 4, 6, 9, 11]),
    (1, 12, [11]),
])
def test_default_layer_map(n, layers, expected):
    assert default_layer_map(n, layers) == expected
    assert expected[-1] == layers - 1


def test_layer_map_validation():
    assert resolve_layer_map(None, 3, 6) == [1, 3, 5]
    assert resolve_layer_map([0, None, 5], 3, 6) == [0, None, 5]
    with pytest.raises(ValueError, match="layer_map has 2 entries but the student has 3"):
        resolve_layer_map([1, 2], 3, 6)
    with pytest.raises(ValueError, match=r"layer_map\[2\] = 6 is not a teacher layer index in 0..5"):
        resolve_layer_map([1, 3, 6], 3, 6)
    with pytest.raises(ValueError, match=r"layer_map\[0\] = -1"):
        resolve_layer_map([-1, 3, 5], 3, 6)


def test_spec_defaults_and_unknown_keys():
    s = parse_spec("{}")
    assert s.weights == {"mlm": 1.0, "kd": 0.0, "att": 3.0, "hid": 3.0} and s.lr == 5e-4 and s.seed == 42
    assert parse_spec({"weights": {"kd": 5}}).weights["kd"] == 5.0
    with pytest.raises(ValueError, match="unknown key.*bogus"):
        parse_spec({"steps": 3, "bogus": 1})
    with pytest.raises(ValueError, match="distill.weights: unknown key.*foo"):
        parse_spec({"weights": {"foo": 1}})
    with pytest.raises(ValueError, match="distill.batch_size"):
        parse_spec({"batch_size": 0})
    with pytest.raises(ValueError, match="distill.precision"):
        parse_spec({"precision": "fp16"})
    with pytest.raises(ValueError, match="distill.compile"):
        parse_spec({"compile": 1})
    with pytest.raises(ValueError, match="student: unknown key.*colour"):
        parse_student_spec({"name": "x", "colour": "red"})
    with pytest.raises(ValueError, match="student.init"):
        parse_student_spec({"init": "svd"})


def test_the_unvalidated_spec_of_the_gpu_check_equals_the_validated_one():
    from minialbert.distill.spec import unvalidated_spec

    for given in ({}, {"steps": 3, "weights": {"kd": 5.0}, "precision": "fp32", "epochs": 1.0}):
        assert unvalidated_spec(given) == parse_spec(given)


def test_zero_cadences_zero_clip_and_null_layer_map_entries_are_valid():
    assert parse_spec({"checkpoint_every": 0}).checkpoint_every == 0  # only on SIGTERM / budget / end
    assert parse_spec({"eval_every": 0}).eval_every == 0  # only at the end
    assert parse_spec({"eval_every": None}).eval_every == 0  # the same, spelt once
    assert parse_spec({"grad_clip": 0}).grad_clip is None  # no clipping, spelt once
    assert parse_spec({"grad_clip": None}).grad_clip is None
    assert parse_spec({"layer_map": [None, 1]}).layer_map == [None, 1]  # null skips a recursion
    with pytest.raises(ValueError, match="distill.weights: at least one"):
        parse_spec({"weights": {"mlm": 0, "kd": 0, "att": 0, "hid": 0}})


def test_student_spec_merges_entry_and_model_keys_and_the_name_is_optional():
    s = parse_student_spec({"init": "random", "overrides": {"hidden_size": 32}})
    assert s.name is None and s.init == "random" and s.distill is True
    assert s.preset == "offline-default" and s.overrides == {"hidden_size": 32}
    assert parse_student_spec('{"name": "x"}').name == "x"
    with pytest.raises(ValueError, match="student.name"):
        parse_student_spec({"name": "teacher"})
    with pytest.raises(ValueError, match="student.distill"):
        parse_student_spec({"distill": "yes"})


def test_linear_schedule_is_warmup_then_linear_decay_to_zero():
    from minialbert.distill.setup import optimizer_and_schedule

    spec = parse_spec({"lr": 1e-3, "warmup_steps": 3, "steps": 10})
    opt, sched = optimizer_and_schedule(torch.nn.Linear(2, 2), spec)
    got = []
    for _ in range(spec.steps + 1):
        got.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    # the hand-written lambda the engine used before transformers' "linear" schedule
    ref = [1e-3 * (k / 3 if k < 3 else max(0.0, (10 - k) / 7)) for k in range(11)]
    assert got == pytest.approx(ref, abs=1e-12)
    assert opt.param_groups[0]["eps"] == 1e-8  # the transformers Trainer default


def test_kd_needs_a_teacher_with_an_mlm_head(tmp_path):
    from minialbert.distill.setup import check_kd

    (tmp_path / "manifest.json").write_text(json.dumps({"has_mlm_head": False}))
    with pytest.raises(ValueError, match=r"distill.weights.kd > 0 needs a teacher with an MLM head \(teacher .* has none\)"):
        check_kd(parse_spec({"weights": {"kd": 5.0}}), tmp_path)
    check_kd(parse_spec({"weights": {"kd": 0.0}}), tmp_path)

