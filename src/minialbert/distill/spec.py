"""The `distill` settings (`--spec`) and the student description (`--student-spec`), validated.

Every key has a default, so `--spec '{}'` is a valid (offline-default) run; unknown keys are an
error that names them. Settings split in two groups (as in Cramming): *method* keys change the
training trajectory and enter the state hash that guards `--resume`; *runtime* keys
(`RUNTIME_KEYS`: logging, checkpoint cadence, wall-clock budget, threads, compile) may change
between an interrupted run and its resumption.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

DEFAULT_WEIGHTS = {"mlm": 1.0, "kd": 0.0, "att": 3.0, "hid": 3.0}  # offline default (DESIGN s5)
REFERENCE_WEIGHTS = {"mlm": 1.0, "kd": 5.0, "att": 3.0, "hid": 3.0}  # the paper (DESIGN s4)

DEFAULTS: dict[str, Any] = {
    "steps": 600,  # optimiser steps
    "batch_size": 32,  # sequences per process per micro-step
    "grad_accum": 1,  # micro-steps per optimiser step
    "lr": 5e-4,
    "warmup_steps": 60,
    "weight_decay": 1e-4,
    "grad_clip": 1.0,  # max global grad norm; 0 or null = no clipping
    "seed": 42,
    "weights": dict(DEFAULT_WEIGHTS),
    "temperature": 1.0,
    "layer_map": None,  # null = default map (see default_layer_map)
    "hid_loss": "cosine",  # cosine | mse
    "hid_projection": "auto",  # auto | always | never
    "mask_prob": 0.15,
    "precision": "auto",  # auto | bf16 | fp32
    "compile": False,
    "checkpoint_every": 100,  # optimiser steps; 0 = only on SIGTERM / budget / end
    "log_every": 10,
    "eval_every": 200,  # 0 or null = only at the end
    "max_minutes": None,  # wall-clock budget of this invocation; null = none
    "threads": None,  # torch.set_num_threads; null = leave as is
    "tensorboard": True,
}

# keys that do not change what is learned: excluded from the resume hash
RUNTIME_KEYS = frozenset(
    {"compile", "checkpoint_every", "log_every", "eval_every", "max_minutes", "threads", "tensorboard"}
)

STUDENT_DEFAULTS: dict[str, Any] = {
    "name": None,
    "init": "teacher",
    "distill": True,
    "preset": "offline-default",
    "overrides": {},
}


def _load(obj: str | dict | None, what: str) -> dict:
    if obj is None:
        return {}
    if isinstance(obj, str):
        try:
            obj = json.loads(obj) if obj.strip() else {}
        except json.JSONDecodeError as err:
            raise ValueError(f"{what}: not valid JSON ({err})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{what}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class DistillSpec:
    steps: int
    batch_size: int
    grad_accum: int
    lr: float
    warmup_steps: int
    weight_decay: float
    grad_clip: float | None
    seed: int
    weights: dict[str, float]
    temperature: float
    layer_map: list[int | None] | None
    hid_loss: str
    hid_projection: str
    mask_prob: float
    precision: str
    compile: bool
    checkpoint_every: int
    log_every: int
    eval_every: int
    max_minutes: float | None
    threads: int | None
    tensorboard: bool

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.__dict__)

    def method_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_KEYS}


def parse_spec(obj: str | dict | None) -> DistillSpec:
    """Validate the distill section; raises ValueError naming the offending key."""
    raw = _load(obj, "distill spec")
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"distill: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(DEFAULTS))})"
        )
    s = copy.deepcopy(DEFAULTS)
    for k, v in raw.items():
        if k == "weights":
            if not isinstance(v, dict):
                raise ValueError("distill.weights must be a mapping {mlm, kd, att, hid}")
            bad = sorted(set(v) - set(DEFAULT_WEIGHTS))
            if bad:
                raise ValueError(f"distill.weights: unknown key(s) {', '.join(bad)} (known: mlm, kd, att, hid)")
            s["weights"].update(v)
        else:
            s[k] = v

    def need(key: str, ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(f"distill.{key} must be {what}, got {s[key]!r}")

    need("steps", _is_int(s["steps"]) and s["steps"] >= 0, "an integer >= 0")
    need("batch_size", _is_int(s["batch_size"]) and s["batch_size"] >= 1, "an integer >= 1")
    need("grad_accum", _is_int(s["grad_accum"]) and s["grad_accum"] >= 1, "an integer >= 1")
    need("lr", _is_num(s["lr"]) and s["lr"] > 0, "a number > 0")
    need("warmup_steps", _is_int(s["warmup_steps"]) and s["warmup_steps"] >= 0, "an integer >= 0")
    need("weight_decay", _is_num(s["weight_decay"]) and s["weight_decay"] >= 0, "a number >= 0")
    need("grad_clip", s["grad_clip"] is None or (_is_num(s["grad_clip"]) and s["grad_clip"] >= 0),
         "a number >= 0 or null")
    need("seed", _is_int(s["seed"]) and s["seed"] >= 0, "an integer >= 0")
    for k, v in s["weights"].items():
        if not (_is_num(v) and v >= 0):
            raise ValueError(f"distill.weights.{k} must be a number >= 0, got {v!r}")
    if not any(v > 0 for v in s["weights"].values()):
        raise ValueError("distill.weights: at least one of mlm, kd, att, hid must be > 0")
    need("temperature", _is_num(s["temperature"]) and s["temperature"] > 0, "a number > 0")
    lm = s["layer_map"]
    need("layer_map", lm is None or (isinstance(lm, list) and all(x is None or _is_int(x) for x in lm)),
         "null or a list of teacher layer indices (0-based; null skips a recursion)")
    need("hid_loss", s["hid_loss"] in ("cosine", "mse"), "'cosine' or 'mse'")
    need("hid_projection", s["hid_projection"] in ("auto", "always", "never"), "'auto', 'always' or 'never'")
    need("mask_prob", _is_num(s["mask_prob"]) and 0 < s["mask_prob"] < 1, "a number in (0, 1)")
    need("precision", s["precision"] in ("auto", "bf16", "fp32"), "'auto', 'bf16' or 'fp32'")
    need("compile", isinstance(s["compile"], bool), "true or false")
    need("checkpoint_every", _is_int(s["checkpoint_every"]) and s["checkpoint_every"] >= 0, "an integer >= 0")
    need("log_every", _is_int(s["log_every"]) and s["log_every"] >= 1, "an integer >= 1")
    if s["eval_every"] is None:
        s["eval_every"] = 0
    need("eval_every", _is_int(s["eval_every"]) and s["eval_every"] >= 0, "an integer >= 0 or null")
    need("max_minutes", s["max_minutes"] is None or (_is_num(s["max_minutes"]) and s["max_minutes"] > 0),
         "a number > 0 or null")
    need("threads", s["threads"] is None or (_is_int(s["threads"]) and s["threads"] >= 1),
         "an integer >= 1 or null")
    need("tensorboard", isinstance(s["tensorboard"], bool), "true or false")
    s["weights"] = {k: float(v) for k, v in s["weights"].items()}
    for k in ("lr", "weight_decay", "temperature", "mask_prob"):
        s[k] = float(s[k])
    if s["grad_clip"] == 0:
        s["grad_clip"] = None
    return DistillSpec(**s)


@dataclass
class StudentSpec:
    name: str | None
    init: str
    distill: bool
    preset: str
    overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.__dict__)


def parse_student_spec(obj: str | dict | None) -> StudentSpec:
    raw = _load(obj, "student spec")
    unknown = sorted(set(raw) - set(STUDENT_DEFAULTS))
    if unknown:
        raise ValueError(
            f"student: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(STUDENT_DEFAULTS))})"
        )
    s = copy.deepcopy(STUDENT_DEFAULTS)
    s.update(copy.deepcopy(raw))
    if s["name"] is not None and not (isinstance(s["name"], str) and s["name"]):
        raise ValueError(f"student.name must be a non-empty string, got {s['name']!r}")
    if s["init"] not in ("teacher", "random"):
        raise ValueError(f"student.init must be 'teacher' or 'random', got {s['init']!r}")
    if not isinstance(s["distill"], bool):
        raise ValueError(f"student.distill must be true or false, got {s['distill']!r}")
    if not (isinstance(s["preset"], str) and s["preset"]):
        raise ValueError(f"student.preset must be a preset name, got {s['preset']!r}")
    if s["overrides"] is None:
        s["overrides"] = {}
    if not isinstance(s["overrides"], dict):
        raise ValueError("student.overrides must be a mapping {config key: value}")
    return StudentSpec(**s)


def default_layer_map(num_recursions: int, teacher_layers: int) -> list[int]:
    """Student recursion i (0-based) <- teacher layer (0-based).

    When the teacher depth is a multiple of the recursions: (i+1) * L/N - 1, i.e. every
    (L/N)-th layer ending at the last one (6 <- 12: 1,3,5,7,9,11; 3 <- 6: 1,3,5). Otherwise the
    targets are spread evenly and still end at the teacher's last layer: round((i+1) * L/N) - 1
    (4 <- 6: 1,2,4,5). A student deeper than the teacher repeats layers (6 <- 3: 0,0,1,1,2,2).
    """
    n, big_l = int(num_recursions), int(teacher_layers)
    if n < 1 or big_l < 1:
        raise ValueError(f"layer map needs >= 1 recursion and >= 1 teacher layer (got {n}, {big_l})")
    if big_l % n == 0:
        return [(i + 1) * (big_l // n) - 1 for i in range(n)]
    out = []
    for i in range(n):
        # round half up, deterministic (Python's round() is banker's rounding)
        out.append(max(0, min(big_l - 1, math.floor((i + 1) * big_l / n + 0.5) - 1)))
    return out


def resolve_layer_map(layer_map: list | None, num_recursions: int, teacher_layers: int) -> list[int | None]:
    """The configured map validated against the models, or the default one."""
    if layer_map is None:
        return default_layer_map(num_recursions, teacher_layers)
    if len(layer_map) != num_recursions:
        raise ValueError(
            f"distill.layer_map has {len(layer_map)} entries but the student has {num_recursions} "
            f"recursions (one teacher layer index per recursion, or null to skip one)"
        )
    for i, t in enumerate(layer_map):
        if t is None:
            continue
        if not _is_int(t) or not (0 <= t < teacher_layers):
            raise ValueError(
                f"distill.layer_map[{i}] = {t!r} is not a teacher layer index in 0..{teacher_layers - 1} "
                f"(0-based; the teacher has {teacher_layers} layers)"
            )
    if all(t is None for t in layer_map):
        raise ValueError("distill.layer_map maps no recursion to a teacher layer")
    return list(layer_map)


def state_hash(payload: dict[str, Any]) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
