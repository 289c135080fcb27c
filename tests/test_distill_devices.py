"""The device-dependent paths of distillation, on the CPU here and on CUDA where there is one
(`benchmarks/gpu_check.sh` runs this file on a GPU): `precision: fp32` does no bf16 anywhere (the
teacher included) and bf16 autocast really runs bf16, fused AdamW, SDPA against materialised
attention maps, the teacher's sparse forward against the dense one, DDP at world size 1 through
torchrun's environment (NCCL on CUDA, gloo on the CPU), and, on CUDA, exact resume and a short
distillation that learns.

Needs neither jsonschema nor the packaged teacher, so a stock CUDA PyTorch image runs it with
`PYTHONPATH=src`.
"""

from __future__ import annotations

import collections
import json
import socket

import pytest
import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from minialbert.distill.engine import run
from minialbert.distill.faults import RunIncomplete
from test_distill_helpers import counting_world, spec_object, student_object

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")  # the engine runs on CUDA whenever there is one
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
ALL_TERMS = {"mlm": 1.0, "kd": 5.0, "att": 1.0, "hid": 1.0}
PRECISIONS = ["fp32", pytest.param("bf16", marks=pytest.mark.skipif(CUDA and not torch.cuda.is_bf16_supported(),
                                                                    reason="this GPU has no bf16"))]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return counting_world(tmp_path_factory.getbasetemp() / "counting")  # shared with test_teacher_head


class DtypeLog(TorchDispatchMode):
    """Every aten op run while active (forward, backward, optimiser), with its outputs' dtypes."""

    def __init__(self):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.ops[(func.overloadpacket.__name__, t.dtype)] += 1
        return out

    def dtypes_of(self, *names: str) -> set[torch.dtype]:
        return {dt for (op, dt) in self.ops if op in names}


def weights(out):
    return load_file(str(out / "model.safetensors"))


def assert_close_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_fp32_does_no_bf16_anywhere_and_bf16_does(world, tmp_path, precision):
    """A whole run (teacher head check, teacher and student forwards, all four terms, backward, fused
    AdamW, evaluation): with fp32 no op makes a bf16 tensor; with bf16 the matmuls run in bf16."""
    log = DtypeLog()
    with log:
        s = run(world["teacher"], world["tokens"], student_object(init="teacher"),
                spec_object(steps=2, eval_every=0, precision=precision, weights=ALL_TERMS), tmp_path / precision)
    assert s["precision"] == precision and all(v == v for v in s["final_losses"].values())
    assert any(op.endswith("_backward") for op, _ in log.ops)  # the backward pass was seen too
    matmuls = log.dtypes_of("mm", "addmm", "bmm", "baddbmm")
    if precision == "fp32":
        half = {torch.bfloat16, torch.float16}
        assert not half & {dt for _, dt in log.ops}, sorted(op for op, dt in log.ops if dt in half)
        assert torch.float32 in matmuls  # (and float64 in the SVD of `init: teacher`)
        if CUDA:  # and no TF32 either
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    else:
        assert torch.bfloat16 in matmuls
        assert torch.float32 in log.dtypes_of("_softmax", "_log_softmax")  # attention maps and losses stay fp32


def test_fused_adamw_on_the_device():
    from minialbert.optim import adamw

    net = torch.nn.Linear(8, 4).to(DEVICE)
    opt = adamw(net.named_parameters(), lr=1e-3, weight_decay=0.01)
    assert opt.defaults.get("fused") is True
    net(torch.randn(3, 8, device=DEVICE)).sum().backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in net.parameters())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_sdpa_and_materialised_attention_maps_agree(precision):
    from minialbert.modeling_minialbert import MiniAlbertModel, preset_config
    from minialbert.runtime import autocast

    torch.manual_seed(0)
    cfg = preset_config("offline-default", vocab_size=50, embedding_size=16, hidden_size=32, num_recursions=3,
                        num_attention_heads=4, intermediate_size=64, adapter_reduction_factor=4,
                        max_position_embeddings=16)
    model = MiniAlbertModel(cfg).to(DEVICE).eval()
    ids = torch.randint(5, 50, (3, 12), device=DEVICE)
    am = (torch.arange(12, device=DEVICE)[None] < torch.tensor([12, 7, 3], device=DEVICE)[:, None]).long()
    with torch.no_grad(), autocast(DEVICE, precision):
        fused = model(input_ids=ids, attention_mask=am).last_hidden_state
        maps = model(input_ids=ids, attention_mask=am, attention_recursions=[0, 2])
    tol = {"rtol": 1e-4, "atol": 1e-5} if precision == "fp32" else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(maps.last_hidden_state.float(), fused.float(), **tol)
    real = am.bool()
    for p in maps.attentions:
        assert p.dtype == torch.float32 and p.shape == (3, 4, 12, 12)
        torch.testing.assert_close(p.sum(-1)[real[:, None, :].expand(-1, 4, -1)],
                                   torch.ones(int(real.sum()) * 4, device=DEVICE))
        assert (p[~real[:, None, None, :].expand_as(p)] == 0).all()  # padded keys get nothing


def test_teacher_runner_matches_eager_dense_forward():
    import copy

    from transformers import BertConfig, BertForMaskedLM

    from minialbert.distill.teacher import TeacherRunner

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=3, num_attention_heads=4,
                     intermediate_size=32, max_position_embeddings=16, attn_implementation="eager")
    dense = BertForMaskedLM(cfg).eval()
    sparse_cfg = copy.deepcopy(cfg)
    sparse_cfg._attn_implementation = "sdpa"
    sparse = BertForMaskedLM(sparse_cfg).eval()
    sparse.load_state_dict(dense.state_dict())
    dense.to(DEVICE)
    sparse.to(DEVICE)
    assert dense.config._attn_implementation == "eager"
    ids = torch.randint(5, 50, (2, 10), device=DEVICE)
    am = (torch.arange(10, device=DEVICE)[None] < torch.tensor([10, 6], device=DEVICE)[:, None]).long()
    pos = torch.tensor([[1, 4, 7], [2, 3, 5]], device=DEVICE)
    with torch.no_grad():
        ref = dense(input_ids=ids, attention_mask=am, output_hidden_states=True, output_attentions=True)
    hidden, probs, logits = TeacherRunner(sparse)(ids, am, pos, hid_layers=(0, 2), att_layers=(1, 2))
    for l in (0, 2):
        torch.testing.assert_close(hidden[l], ref.hidden_states[l + 1], rtol=1e-4, atol=1e-5)
    for l in (1, 2):
        real = am.bool()
        # rows of real tokens agree (HF fills padded keys with finfo.min too)
        torch.testing.assert_close(probs[l][real[:, None, :, None].expand_as(probs[l])],
                                   ref.attentions[l][real[:, None, :, None].expand_as(probs[l])], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(logits, ref.logits.gather(1, pos[..., None].expand(-1, -1, 50)), rtol=1e-4, atol=1e-4)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_at_world_size_1_under_torchrun_matches_a_plain_run(world, tmp_path, monkeypatch):
    """torchrun's environment with one process: a process group (NCCL on CUDA, gloo on the CPU) and
    the DDP-wrapped student; the same weights as a run without torchrun."""
    st = student_object(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    sp = spec_object(steps=3, grad_accum=2, eval_every=0, checkpoint_every=0, weights=ALL_TERMS)
    plain = run(world["teacher"], world["tokens"], st, sp, tmp_path / "plain")
    for key, value in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(_free_port()), "TORCHELASTIC_RUN_ID": "pytest"}.items():
        monkeypatch.setenv(key, value)
    ddp = run(world["teacher"], world["tokens"], st, sp, tmp_path / "ddp")
    assert ddp["runtime"]["backend"] == ("nccl" if CUDA else "gloo") and plain["runtime"]["backend"] is None
    assert not torch.distributed.is_initialized()  # torn down
    assert_close_weights(tmp_path / "plain", tmp_path / "ddp")


@needs_cuda
def test_resume_on_the_device_continues_exactly(world, tmp_path):
    sp = spec_object(steps=6, checkpoint_every=2, eval_every=3, precision="fp32", weights=ALL_TERMS)
    run(world["teacher"], world["tokens"], student_object(), sp, tmp_path / "ref")
    out = tmp_path / "resumed"
    with pytest.raises(RunIncomplete):
        run(world["teacher"], world["tokens"], student_object(), sp, out, max_steps=3)
    state = torch.load(tmp_path / "resumed.state" / "latest.pt", weights_only=True)
    assert state["step"] == 3 and state["data_position"] == [0, 12] and "cuda" in state["rng"][0]
    s = run(world["teacher"], world["tokens"], student_object(), sp, out, resume=True)
    assert s["resumed_from"] == 3 and s["device"].startswith("cuda")
    assert_close_weights(tmp_path / "ref", out)
    la, lb = (json.loads((d / "train_log.json").read_text()) for d in (out, tmp_path / "ref"))
    assert [r["loss"] for r in la["train"]] == pytest.approx([r["loss"] for r in lb["train"]], rel=1e-4)


@needs_cuda
def test_a_short_distillation_learns_on_the_device(world, tmp_path):
    s = run(world["teacher"], world["tokens"], student_object(init="teacher"),
            spec_object(steps=40, batch_size=16, lr=3e-3, warmup_steps=4, log_every=5, eval_every=20,
                        precision="auto", weights=ALL_TERMS), tmp_path / "learn")
    log = json.loads((tmp_path / "learn" / "train_log.json").read_text())["train"]
    assert s["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32") and s["device"].startswith("cuda")
    assert s["teacher_mlm_accuracy"] > 0.6
    assert log[-1]["loss"] < 0.8 * log[0]["loss"] and log[-1]["kd"] < log[0]["kd"]
