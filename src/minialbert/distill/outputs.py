"""What a distillation run leaves behind: the results folder, its summary, and TensorBoard events.

The results folder (the student in Hugging Face format, the teacher's tokenizer files,
`train_log.json`, `summary.json`, `tb/`) is built in a temporary sibling and renamed into place,
so it appears whole or not at all, and only once every configured step is done (or, for a
`distill: false` student, as initialised). TensorBoard events are written into the state folder
while training (they survive a resume) and copied into the results at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import staged_dir, write_json
from ..files import TOKENIZER_FILES
from .step import TERMS

if TYPE_CHECKING:
    from .checkpoint import Progress
    from .distributed import Runtime
    from .setup import Models, Setup
    from .spec import DistillSpec, StudentSpec

STUDENT_CONFIG_KEYS = ("vocab_size", "embedding_size", "hidden_size", "num_recursions", "num_attention_heads",
                       "intermediate_size", "use_adapters", "adapter_reduction_factor")


def copy_tokenizer(teacher_dir: Path, dest: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        src = Path(teacher_dir) / name
        if src.is_file():
            shutil.copy2(src, dest / name)
            copied.append(name)
    return copied


def write_final(out: Path, student, teacher_dir: Path, summary: dict, log: dict, tb_dir: Path | None) -> None:
    """The results folder appears atomically (built in a temporary sibling, then renamed)."""
    with staged_dir(out) as tmp:
        student.save_pretrained(tmp)
        summary["tokenizer_files"] = copy_tokenizer(teacher_dir, tmp)
        write_json(tmp / "train_log.json", log)
        write_json(tmp / "summary.json", summary)
        if tb_dir is not None and tb_dir.is_dir():
            shutil.copytree(tb_dir, tmp / "tb")
        _umask_perms(tmp)


def _umask_perms(root: Path) -> None:
    """Temporary files/folders are created 0600/0700; give the output the usual umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [root, *root.rglob("*")]:
        with contextlib.suppress(OSError):
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _jsonable(obj):
    try:
        return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    except (TypeError, ValueError):
        return str(obj)


def initial_summary(name: str, sspec: "StudentSpec", spec: "DistillSpec", models: "Models", teacher_dir: Path,
                    tokens_dir: Path | None) -> dict[str, Any]:
    """What is known before training: the student, the teacher, the settings."""
    from ..modeling_minialbert import parameter_counts

    cfg = models.cfg.to_dict()
    return {
        "name": name, "init": sspec.init, "distill": sspec.distill, "preset": sspec.preset,
        "student_config": {k: cfg.get(k) for k in STUDENT_CONFIG_KEYS},
        "teacher": str(teacher_dir), "teacher_has_mlm_head": models.teacher_has_head,
        "tokens": str(tokens_dir) if tokens_dir else None,
        "init_info": _jsonable(models.init_info), "parameter_counts": parameter_counts(models.student),
        "layer_map": models.layer_map, "weights": spec.weights, "spec": spec.to_dict(),
        "student_spec": sspec.to_dict(), "teacher_mlm_accuracy": None, "teacher_mlm_chance": None,
    }


def save_initialised(rt: "Runtime", models: "Models", summary: dict, out: Path, teacher_dir: Path, init: str
                     ) -> dict[str, Any]:
    """`distill: false`: the initialised student, as a results folder of 0 steps."""
    summary.update(steps=0, tokens_seen=0, wall_seconds=0.0, train_seconds=0.0, tokens_per_second=None,
                   final_losses={}, eval_losses=None, precision=None, world_size=rt.world)
    if rt.is_main:
        write_final(out, models.student, teacher_dir, summary, {"train": [], "eval": []}, None)
        rt.say(f"distill: {summary['name']}: saved the {init}-initialised student (steps 0) to {out}")
    rt.barrier()
    return summary if rt.is_main else {}


def tb_writer(s: "Setup", resumed_from: int | None):
    """A TensorBoard writer into `<state>/tb` (rank 0, when asked and installed), or None."""
    if not (s.spec.tensorboard and s.rt.is_main):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        s.rt.say("distill: tensorboard is not installed; no TensorBoard events are written")
        return None
    tb = s.state_dir / "tb"
    if resumed_from is None:
        shutil.rmtree(tb, ignore_errors=True)
    tb.mkdir(parents=True, exist_ok=True)
    return SummaryWriter(log_dir=str(tb), purge_step=resumed_from)


def _steady_tps(p: "Progress") -> float | None:
    """Median tokens/s over this invocation's log intervals after the first (compilation, warm-up)."""
    recs = [r for r in p.log if p.resumed_from is None or r["step"] > p.resumed_from][1:]
    if not recs:
        return None
    vals = sorted(r["tokens_per_second"] for r in recs)
    return vals[len(vals) // 2]


def run_record(s: "Setup", p: "Progress", tps: float) -> dict[str, Any]:
    """The summary's `runtime`: timings, throughput, threads and provenance (what made the numbers,
    not what was learned; comparisons of two runs leave it out)."""
    import torch

    from ..provenance import record

    return {
        "train_seconds": p.train_seconds, "wall_seconds": p.wall(), "tokens_per_second": tps,
        "steady_tokens_per_second": _steady_tps(p), "threads": torch.get_num_threads(),
        "world_size": s.rt.world, "backend": s.rt.backend, "resumed_from": p.resumed_from,
        **record(settings={"distill": s.spec.to_dict(), "student": s.summary["student_spec"]},
                 device=s.rt.device, precision=s.precision, seed=s.spec.seed),
    }


def finish(s: "Setup", p: "Progress") -> dict[str, Any]:
    """Complete the summary of a run that did all its steps, write the results folder, drop the state."""
    rt = s.rt
    last = p.log[-1] if p.log else {}
    final = {k: last[k] for k in ("loss", *TERMS) if k in last}
    if "loss" in final:
        final["total"] = final.pop("loss")
    tps = p.tokens_seen / max(1e-9, p.train_seconds)
    s.summary.update(
        steps=p.step, epochs=s.spec.epochs, complete=True, resumed_from=p.resumed_from,
        tokens_seen=p.tokens_seen, global_batch=s.global_batch, seq_len=s.seq_len, mask_slots=s.mask_slots,
        wall_seconds=p.wall(), train_seconds=p.train_seconds, tokens_per_second=tps,
        steady_tokens_per_second=_steady_tps(p), flops_per_token=s.flops_per_token,
        achieved_tflops=tps * s.flops_per_token / 1e12, final_losses=final,
        eval_losses=p.evals[-1] if p.evals else None, precision=s.precision, device=str(rt.device),
        world_size=rt.world, n_train_windows=s.n_train, n_eval_windows=int(len(s.eval_idx)),
        hid_projection=s.net.proj is not None, runtime=run_record(s, p, tps),
    )
    if rt.is_main:
        tb = s.state_dir / "tb" if s.spec.tensorboard else None
        write_final(s.out, s.models.student, s.teacher_dir, s.summary, {"train": p.log, "eval": p.evals}, tb)
        shutil.rmtree(s.state_dir, ignore_errors=True)
        rt.say(f"distill: {s.summary['name']}: {p.step} steps, {p.tokens_seen:,} tokens, "
               f"{tps:,.0f} tok/s ({s.precision}); wrote {s.out}")
    rt.barrier()
    return s.summary if rt.is_main else {}
