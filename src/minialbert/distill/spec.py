"""The `distill` settings (`--spec`) and the student description (`--student-spec`), validated.

Keys, types, ranges and defaults live in the config schema (`src/minialbert/config.schema.yaml`,
sections `distill`, `students.*` and `student`); this module keeps only what the schema cannot say:
checks spanning several keys, the layer map against the teacher's depth, the number of steps an
`epochs` setting gives on a corpus, and the state hash.

Settings split in two groups (as in Cramming): *method* keys change the training trajectory and
enter the state hash that guards `--resume`; *runtime* keys (`RUNTIME_KEYS`) may change between
an interrupted run and its resumption.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from .. import settings

# keys that do not change what is learned: excluded from the resume hash
RUNTIME_KEYS = frozenset(
    {"compile", "checkpoint_every", "log_every", "eval_every", "max_minutes", "threads", "tensorboard"}
)

# `--student-spec` = one `students` entry (these keys) merged with the `student` section (the rest)
ENTRY_KEYS = ("name", "init", "distill", "embeddings")


@dataclass
class DistillSpec:
    steps: int
    epochs: float | None
    batch_size: int
    grad_accum: int
    lr: float
    warmup_steps: int
    weight_decay: float
    grad_clip: float | None
    seed: int
    weights: dict[str, float]
    temperature: float
    att_normalisation: str
    head_check_windows: int
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

    def for_corpus(self, n_windows: int, world: int) -> "DistillSpec":
        """This spec with `steps` fixed by `epochs`, when set: ceil(epochs x n_windows / global batch).

        The warm-up and the linear decay follow that number, so a run covers the same share of the
        corpus on every machine and number of processes.
        """
        if self.epochs is None:
            return self
        global_batch = self.batch_size * self.grad_accum * world
        steps = math.ceil(self.epochs * n_windows / global_batch - 1e-9)  # 0.1 x 1000 / 10 is 10, not 11
        return replace(self, steps=steps)


def parse_spec(obj: str | dict | None) -> DistillSpec:
    """The distill section with every default filled; ValueError naming the offending key."""
    s = settings.load_section("distill", obj)
    if not any(v > 0 for v in s["weights"].values()):
        raise ValueError("distill.weights: at least one of mlm, kd, att, hid must be > 0")
    # one spelling per meaning, so equal settings hash equally: 0 means "off" for both
    s["grad_clip"] = s["grad_clip"] or None
    s["eval_every"] = s["eval_every"] or 0
    s["weights"] = {k: float(v) for k, v in s["weights"].items()}
    if s["epochs"] is not None:
        s["epochs"] = float(s["epochs"])
    for k in ("lr", "weight_decay", "temperature", "mask_prob"):
        s[k] = float(s[k])
    return DistillSpec(**s)


def unvalidated_spec(overrides: dict) -> DistillSpec:
    """The schema's defaults with `overrides` (one level deep for `weights`), NOT validated: for a
    stock CUDA image without jsonschema (benchmarks/gpu_check.sh). A stage uses `parse_spec`."""
    props = settings.section_schema("distill")["properties"]
    weights = {k: v["default"] for k, v in props["weights"]["properties"].items()}
    return DistillSpec(**{**{k: v.get("default") for k, v in props.items()}, **overrides,
                          "weights": {**weights, **overrides.get("weights", {})}})


@dataclass
class StudentSpec:
    name: str | None
    init: str
    distill: bool
    preset: str
    overrides: dict[str, Any] = field(default_factory=dict)
    embeddings: dict[str, Any] | None = None  # init: embeddings: where the embedding layer comes from

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.__dict__)


def parse_student_spec(obj: str | dict | None) -> StudentSpec:
    """A `students` entry merged with the `student` section; ValueError naming the offending key.

    The name may be left out (a run by hand): the caller then names the student after its folder.
    """
    raw = settings.parse(obj, "student")
    entry = {k: raw.pop(k) for k in ENTRY_KEYS if k in raw}
    name = entry.pop("name", None)
    # `name` is required in a `students` entry: validate a given one, stand in for a missing one
    entry = settings.load_section("students.*", {"name": "unnamed" if name is None else name, **entry},
                                  where="student")
    model = settings.load_section("student", raw)  # keys of neither section are reported here
    if (entry["init"] == "embeddings") != ("embeddings" in entry):
        raise ValueError(f"student {name or 'unnamed'}: init: embeddings and an `embeddings` source go together "
                         f"(init is {entry['init']!r}, embeddings {'given' if 'embeddings' in entry else 'missing'})")
    return StudentSpec(**{**entry, "name": name}, **model)


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
    # round half up, deterministic (Python's round() is banker's rounding)
    return [max(0, min(big_l - 1, math.floor((i + 1) * big_l / n + 0.5) - 1)) for i in range(n)]


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
        if t is not None and not (isinstance(t, int) and not isinstance(t, bool) and 0 <= t < teacher_layers):
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
