"""Fine-tune and evaluate one model on one prepared task: `minialbert finetune ...`.

    minialbert finetune --model DIR --model-name NAME --task DIR --mode full|adapter|lora \
        --lr FLOAT --seed INT --spec JSON --out results/finetune/.../metrics.json

The model is any local Hugging Face checkpoint folder: a MiniALBERT student (saved from
`MiniAlbertForMaskedLM`; the task head is new) or the BERT teacher (a `BertModel` checkpoint), so
teacher and students go through the same code. The tokenizer comes from the same folder; nothing
is downloaded and no remote code is trusted.

Modes: `full` trains every parameter; `adapter` freezes embeddings, projector and the shared layer
and trains the 2N bottleneck adapters and the head (`minialbert.freeze_for_adapter_tuning`, which
creates fresh adapters for a checkpoint without them; MiniALBERT checkpoints only); `lora` wraps the
model with PEFT LoRA on the attention query/value Linear layers (BERT: `attention.self.query/value`,
MiniALBERT: `shared_layer.query/value`, i.e. one LoRA pair reused by every recursion); the head
stays fully trainable.

Settings (`--spec`, the config's `finetune.settings` merged with `per_task` overrides; unknown keys
are rejected): epochs (3), batch_size (16), eval_batch_size (64), max_length (128), weight_decay
(0.01, not on biases / LayerNorm weights), scheduler (linear | cosine), warmup_ratio (0.0),
grad_clip (1.0; 0 disables), max_train_examples (null: all), precision (auto | bf16 | fp32; auto =
bf16 autocast on a CUDA GPU with bf16, or on a CPU whose flags show avx512_bf16 / amx_bf16, else
fp32), threads (null: torch's default, which follows OMP_NUM_THREADS), label_scheme (NER: `word`
scores words by their first sub-token; `subtoken` labels every sub-token with its word's tag,
B- continuations becoming I-, and scores sub-token sequences as the reference code did), lora_r (8),
lora_alpha (16), lora_dropout (0.1), lora_targets (null: query and value).

Training: AdamW, linear/cosine schedule from `transformers.get_scheduler`, dynamic padding,
length-grouped batches (random mega-batches of 50 batches sorted by length, batch order shuffled,
all by the seed). Dev is scored after every epoch; the best-dev epoch's weights are kept in memory
and used for the final numbers: test if the task's test split has labels (`eval_split: test`),
else dev (`eval_split: dev`, e.g. GLUE), plus any extra eval split (MNLI mismatched).

Tokenised splits are cached in `<task>/cache/<key>.npz` (key: tokenizer hash, max_length,
label_scheme), written atomically and verified against the sha256 of the task files on every hit.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import staged_file, write_json
from .metrics import compute_metrics
from .tasks import load_task, parse_spec, read_task_json, subsample_indices, task_files

MODES = ("full", "adapter", "lora")
CACHE_VERSION = 1

DEFAULTS: dict[str, Any] = {
    "epochs": 3,
    "batch_size": 16,
    "eval_batch_size": 64,
    "max_length": 128,
    "weight_decay": 0.01,
    "scheduler": "linear",
    "warmup_ratio": 0.0,
    "grad_clip": 1.0,
    "max_train_examples": None,
    "precision": "auto",
    "threads": None,
    "label_scheme": "word",
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.1,
    "lora_targets": None,
}
MEGA_BATCH = 50  # batches per length-sorted mega-batch


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------
# settings


def check_settings(spec: dict) -> dict:
    if not isinstance(spec, dict):
        raise ValueError("finetune settings must be a mapping")
    unknown = sorted(set(spec) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"finetune settings: unknown key(s) {', '.join(unknown)}; allowed: "
                         f"{', '.join(sorted(DEFAULTS))}")
    s = {**DEFAULTS, **{k: v for k, v in spec.items()}}

    def pos_int(key, allow_none=False):
        v = s[key]
        if v is None and allow_none:
            return
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"finetune settings: {key} must be a positive integer, got {v!r}")

    for key in ("epochs", "batch_size", "eval_batch_size", "max_length", "lora_r"):
        pos_int(key)
    pos_int("max_train_examples", allow_none=True)
    pos_int("threads", allow_none=True)
    for key, lo, hi in (("weight_decay", 0, None), ("warmup_ratio", 0, 1), ("grad_clip", 0, None),
                        ("lora_dropout", 0, 1), ("lora_alpha", 0, None)):
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < lo or (hi and v >= hi):
            rng = f"[{lo}, {hi})" if hi else f">= {lo}"
            raise ValueError(f"finetune settings: {key} must be a number {rng}, got {v!r}")
    for key, allowed in (("scheduler", ("linear", "cosine")), ("precision", ("auto", "bf16", "fp32")),
                         ("label_scheme", ("word", "subtoken"))):
        if s[key] not in allowed:
            raise ValueError(f"finetune settings: {key} must be one of {', '.join(allowed)}, "
                             f"got {s[key]!r}")
    t = s["lora_targets"]
    if t is not None and (not isinstance(t, list) or not t or not all(isinstance(x, str) for x in t)):
        raise ValueError("finetune settings: lora_targets must be a list of module names")
    return s


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX512-BF16 or AMX-BF16)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            info = fh.read()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", info) is not None


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# --------------------------------------------------------------------------------------------
# tokenisation and the cache


def tokenizer_hash(tokenizer) -> str:
    """sha256 of the tokenizer's full definition (normaliser, vocab, post-processor)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError("fine-tuning needs a fast (Rust) tokenizer: tokenizer.json in the model folder")
    spec = json.loads(backend.to_str())
    spec.pop("truncation", None)
    spec.pop("padding", None)
    blob = json.dumps(spec, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob + type(tokenizer).__name__.encode()).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _flatten(seqs: list[list[int]], dtype) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in seqs])
    flat = np.fromiter((x for s in seqs for x in s), dtype=dtype, count=int(offsets[-1]))
    return flat, offsets


def _continuation_tag(tag: str) -> str:
    return "I" + tag[1:] if tag[:1] == "B" and (len(tag) == 1 or tag[1] == "-") else tag


def tokenize_split(tokenizer, task: dict, rows: list[dict], max_length: int,
                   label_scheme: str) -> dict[str, np.ndarray]:
    """Arrays for one split: ids/offsets, token types (pairs), labels y, NER word maps."""
    kind = task["kind"]
    labels = task["labels"]
    label2id = {name: i for i, name in enumerate(labels)}
    out: dict[str, np.ndarray] = {}
    has_labels = all(("label" in r) or ("tags" in r) for r in rows)
    if kind == "token_classification":
        enc = tokenizer([r["tokens"] for r in rows], is_split_into_words=True, truncation=True,
                        max_length=max_length)
        ys, widx = [], []
        for i, r in enumerate(rows):
            tag_ids = [label2id[t] for t in r["tags"]]
            y, w, prev = [], [], None
            for word in enc.word_ids(i):
                if word is None:
                    y.append(-100)
                    w.append(-1)
                elif word != prev:
                    y.append(tag_ids[word])
                    w.append(word)
                else:
                    y.append(label2id[_continuation_tag(r["tags"][word])]
                             if label_scheme == "subtoken" else -100)
                    w.append(-1)
                prev = word
            ys.append(y)
            widx.append(w)
        out["y"], _ = _flatten(ys, np.int64)
        out["widx"], _ = _flatten(widx, np.int32)
        out["gold"], out["gold_offsets"] = _flatten(
            [[label2id[t] for t in r["tags"]] for r in rows], np.int32)
    else:
        texts = [r["text"] for r in rows]
        pairs = [r["text_pair"] for r in rows] if "text_pair" in task.get("text_keys", []) else None
        enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
        if pairs is not None:
            out["tt"], _ = _flatten(enc["token_type_ids"], np.int8)
        if kind == "regression":
            out["y"] = np.array([float(r.get("label", "nan")) for r in rows], dtype=np.float32)
        else:
            out["y"] = np.array([label2id[r["label"]] if "label" in r else -1 for r in rows],
                                dtype=np.int64)
    out["ids"], out["offsets"] = _flatten(enc["input_ids"], np.int32)
    out["has_labels"] = np.array([has_labels and (kind == "token_classification" or
                                                  all("label" in r for r in rows))])
    return out


def load_or_build_cache(task_dir: Path, task: dict, rows: dict | None, tokenizer, max_length: int,
                        label_scheme: str, cache_dir: Path | None = None
                        ) -> tuple[dict[str, dict[str, np.ndarray]], bool]:
    """Tokenised splits for this task and tokenizer: from the cache when valid, else built."""
    files = task_files(task_dir)
    file_sha = {p.name: _sha256_file(p) for p in files}
    tok_sha = tokenizer_hash(tokenizer)
    scheme = label_scheme if task["kind"] == "token_classification" else "-"
    key_src = json.dumps([CACHE_VERSION, tok_sha, max_length, scheme], sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    cache_dir = Path(cache_dir) if cache_dir is not None else task_dir / "cache"
    path = cache_dir / f"tok-{key}.npz"
    meta = {"version": CACHE_VERSION, "tokenizer_sha256": tok_sha, "max_length": max_length,
            "label_scheme": scheme, "task_sha256": file_sha}
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                stored = json.loads(bytes(z["meta"]).decode())
                if stored == meta:
                    data: dict[str, dict[str, np.ndarray]] = {}
                    for name in z.files:
                        if name == "meta":
                            continue
                        split, field = name.split("/", 1)
                        data.setdefault(split, {})[field] = z[name]
                    return data, True
                log(f"cache {path} is stale (task files or tokenizer changed): rebuilding")
        except Exception as err:  # a corrupt cache is rebuilt, never trusted
            log(f"cache {path} unreadable ({err}): rebuilding")
    if rows is None:
        _, rows = load_task(task_dir)
    data = {split: tokenize_split(tokenizer, task, split_rows, max_length, label_scheme)
            for split, split_rows in rows.items()}
    arrays = {f"{split}/{field}": arr for split, fields in data.items() for field, arr in fields.items()}
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    with staged_file(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return data, False


# --------------------------------------------------------------------------------------------
# batches


class Split:
    """Tokenised examples of one split, with batching and padding."""

    def __init__(self, arrays: dict[str, np.ndarray], kind: str, pad_id: int,
                 subset: list[int] | None = None):
        self.a = arrays
        self.kind = kind
        self.pad_id = pad_id
        off = arrays["offsets"]
        n = len(off) - 1
        self.index = np.arange(n) if subset is None else np.asarray(subset, dtype=np.int64)
        self.lengths = (off[1:] - off[:-1])[self.index]
        self.has_labels = bool(arrays["has_labels"][0])

    def __len__(self) -> int:
        return len(self.index)

    def train_batches(self, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([seed, epoch])
        perm = rng.permutation(len(self))
        batches = []
        for s in range(0, len(perm), batch_size * MEGA_BATCH):
            chunk = perm[s:s + batch_size * MEGA_BATCH]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def eval_batches(self, batch_size: int) -> list[np.ndarray]:
        order = np.argsort(-self.lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    def _seq(self, field: str, j: int) -> np.ndarray:
        off = self.a["offsets"]
        return self.a[field][off[j]:off[j + 1]]

    def collate(self, batch: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        rows = self.index[batch]
        width = int(self.lengths[batch].max())
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        tt = np.zeros((len(rows), width), dtype=np.int64) if "tt" in self.a else None
        ylab = np.full((len(rows), width), -100, dtype=np.int64) if self.kind == "token_classification" else None
        for r, j in enumerate(rows):
            seq = self._seq("ids", j)
            ids[r, :len(seq)] = seq
            mask[r, :len(seq)] = 1
            if tt is not None:
                tt[r, :len(seq)] = self._seq("tt", j)
            if ylab is not None:
                ylab[r, :len(seq)] = self._seq("y", j)
        out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if tt is not None:
            out["token_type_ids"] = torch.from_numpy(tt)
        if ylab is not None:
            out["labels"] = torch.from_numpy(ylab)
        elif self.kind == "regression":
            out["labels"] = torch.from_numpy(self.a["y"][rows].astype(np.float32))
        else:
            out["labels"] = torch.from_numpy(self.a["y"][rows])
        return {k: v.to(device, non_blocking=True) for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# model


def _is_minialbert(config) -> bool:
    from .modeling_minialbert import MiniAlbertConfig

    return isinstance(config, MiniAlbertConfig)


def load_model(model_dir: Path, task: dict, mode: str):
    """The task model from a local checkpoint folder (MiniALBERT student or BERT teacher)."""
    from transformers import (AutoConfig, AutoModelForSequenceClassification,
                              AutoModelForTokenClassification)

    import minialbert  # noqa: F401  (registers MiniALBERT with the Auto classes)

    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir / 'config.json'}: not a model folder")
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    if mode == "adapter" and not _is_minialbert(config):
        raise ValueError(f"adapter mode needs a MiniALBERT checkpoint; {model_dir} holds a "
                         f"{config.model_type!r} model: use --mode full or lora")
    kind = task["kind"]
    if kind == "regression":
        kwargs = {"num_labels": 1, "problem_type": "regression"}
    else:
        labels = task["labels"]
        kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                  "label2id": {name: i for i, name in enumerate(labels)}}
        if kind != "token_classification":
            kwargs["problem_type"] = "single_label_classification"
    cls = AutoModelForTokenClassification if kind == "token_classification" else AutoModelForSequenceClassification
    model = cls.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False, **kwargs)
    return model


def _lora_targets(model, targets: list[str] | None) -> list[str]:
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if targets is None:
        targets = ["query", "value"]
    found = [t for t in targets if any(n == t or n.endswith("." + t) for n in names)]
    if len(found) != len(targets):
        missing = sorted(set(targets) - set(found))
        raise ValueError(f"lora_targets {missing} match no Linear module of this model; set "
                         f"finetune lora_targets (Linear modules: {sorted({n.rsplit('.', 1)[-1] for n in names})})")
    return targets


def setup_mode(model, mode: str, kind: str, s: dict):
    """Freeze / wrap the model for `mode`; returns the model to train."""
    if mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if mode == "adapter":
        from .modeling_minialbert import freeze_for_adapter_tuning

        info = freeze_for_adapter_tuning(model)
        if info.get("created_adapters"):
            log("the checkpoint has no adapters: fresh ones were created for adapter tuning")
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    head = [n for n, m in model.named_children()
            if n != model.base_model_prefix and any(True for _ in m.parameters())]
    cfg = LoraConfig(
        task_type=TaskType.TOKEN_CLS if kind == "token_classification" else TaskType.SEQ_CLS,
        r=s["lora_r"], lora_alpha=s["lora_alpha"], lora_dropout=s["lora_dropout"],
        target_modules=_lora_targets(model, s["lora_targets"]), modules_to_save=head or None)
    return get_peft_model(model, cfg)


def count_params(model) -> tuple[int, int]:
    seen, trainable, total = set(), 0, 0
    for name, p in model.named_parameters():
        if id(p) in seen or "original_module" in name:  # PEFT's frozen copy of the saved head
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


# --------------------------------------------------------------------------------------------
# train / evaluate


def _logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = model(**inputs, return_dict=True)
    return (out.logits if hasattr(out, "logits") else out[0]).float()


def _loss(kind: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if kind == "regression":
        return torch.nn.functional.mse_loss(logits.squeeze(-1), labels)
    if kind == "token_classification":
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    return torch.nn.functional.cross_entropy(logits, labels)


def evaluate(model, split: Split, task: dict, s: dict, device, autocast) -> dict:
    kind, labels = task["kind"], task["labels"]
    model.eval()
    preds: list[Any] = [None] * len(split)
    with torch.inference_mode():
        for batch_idx in split.eval_batches(s["eval_batch_size"]):
            batch = split.collate(batch_idx, device)
            with autocast():
                logits = _logits(model, batch)
            if kind == "regression":
                values = logits.squeeze(-1).cpu().tolist()
            else:
                values = logits.argmax(-1).cpu().numpy()
            for b, j in enumerate(batch_idx):
                preds[j] = values[b]
    model.train()
    if kind == "token_classification":
        pred_seqs, gold_seqs = [], []
        off = split.a["offsets"]
        goff = split.a["gold_offsets"]
        for j, p in zip(split.index, preds):
            y = split.a["y"][off[j]:off[j + 1]]
            if s["label_scheme"] == "word":
                gold = [labels[t] for t in split.a["gold"][goff[j]:goff[j + 1]]]
                words = ["O"] * len(gold)  # words cut off by max_length count as O
                widx = split.a["widx"][off[j]:off[j + 1]]
                for pos in np.nonzero(widx >= 0)[0]:
                    words[widx[pos]] = labels[int(p[pos])]
                pred_seqs.append(words)
                gold_seqs.append(gold)
            else:
                keep = np.nonzero(y != -100)[0]
                pred_seqs.append([labels[int(p[pos])] for pos in keep])
                gold_seqs.append([labels[int(y[pos])] for pos in keep])
        return compute_metrics(kind, pred_seqs, gold_seqs, labels)
    refs = split.a["y"][split.index].tolist()
    if kind != "regression":
        preds = [int(p) for p in preds]
    return compute_metrics(kind, preds, refs, labels)


def _score(metrics: dict, name: str) -> float:
    v = metrics.get(name)
    return -math.inf if v is None else float(v)


def run_finetune(model_dir, model_name: str, task_dir, mode: str, lr: float, seed: int, spec: dict,
                 out, cache_dir=None) -> dict:
    t_start = time.perf_counter()
    s = check_settings(spec)
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"--lr must be a positive number, got {lr!r}")
    model_dir, task_dir = Path(model_dir), Path(task_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: model folder not found")
    if s["threads"]:
        torch.set_num_threads(s["threads"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(s["precision"], device)

    from transformers import AutoTokenizer, get_scheduler

    task = read_task_json(task_dir)
    kind = task["kind"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{model_dir}: fine-tuning needs a fast tokenizer (tokenizer.json)")
    if tokenizer.pad_token_id is None:
        raise ValueError(f"{model_dir}: the tokenizer has no padding token")

    seed_everything(seed)
    model = load_model(model_dir, task, mode)
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos is not None and s["max_length"] > max_pos:
        raise ValueError(f"finetune settings: max_length {s['max_length']} exceeds the model's "
                         f"max_position_embeddings ({max_pos})")
    t_cache = time.perf_counter()
    data, cache_hit = load_or_build_cache(task_dir, task, None, tokenizer, s["max_length"],
                                          s["label_scheme"], cache_dir)
    log(f"tokenised splits {'from cache' if cache_hit else 'built and cached'} "
        f"({time.perf_counter() - t_cache:.1f}s)")

    pad_id = tokenizer.pad_token_id
    train_arrays = data["train"]
    n_all = len(train_arrays["offsets"]) - 1
    subset = None
    if s["max_train_examples"] and s["max_train_examples"] < n_all:
        keys = ([str(int(v)) for v in train_arrays["y"]] if kind in ("classification", "pair_classification")
                else [""] * n_all)
        subset = subsample_indices(keys, [str(i) for i in range(n_all)], s["max_train_examples"],
                                   task.get("seed", 13), "max_train_examples")
    train = Split(train_arrays, kind, pad_id, subset)
    evals = {name: Split(arrays, kind, pad_id) for name, arrays in data.items() if name != "train"}

    model = setup_mode(model, mode, kind, s)
    model.to(device)
    trainable, total = count_params(model)
    log(f"{model_name} on {task['name']} ({kind}), mode {mode}: {trainable:,} of {total:,} "
        f"parameters trainable; {len(train)} train examples; precision {precision} on {device}, "
        f"{torch.get_num_threads()} threads")

    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if p.ndim >= 2], "weight_decay": s["weight_decay"]},
        {"params": [p for n, p in params if p.ndim < 2], "weight_decay": 0.0},  # biases, norms
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr,
                                  fused=device.type == "cuda" or None)
    steps_per_epoch = math.ceil(len(train) / s["batch_size"])
    total_steps = steps_per_epoch * s["epochs"]
    scheduler = get_scheduler(s["scheduler"], optimizer,
                              num_warmup_steps=int(round(s["warmup_ratio"] * total_steps)),
                              num_training_steps=total_steps)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    trainable_params = [p for _, p in params]
    history = []
    best = {"score": -math.inf, "epoch": None, "dev": None, "state": None}
    train_seconds = 0.0
    model.train()
    for epoch in range(1, s["epochs"] + 1):
        t0 = time.perf_counter()
        loss_sum, n_batches = 0.0, 0
        for batch_idx in train.train_batches(s["batch_size"], seed, epoch):
            batch = train.collate(batch_idx, device)
            with autocast():
                logits = _logits(model, batch)
            loss = _loss(kind, logits, batch["labels"])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch}: the training loss is {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if s["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(trainable_params, s["grad_clip"])
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item()
            n_batches += 1
        epoch_seconds = time.perf_counter() - t0
        train_seconds += epoch_seconds
        dev = evaluate(model, evals["dev"], task, s, device, autocast)
        score = _score(dev, task["metric"])
        history.append({"epoch": epoch, "train_loss": loss_sum / max(n_batches, 1),
                        "train_seconds": round(epoch_seconds, 3), "dev": dev})
        log(f"epoch {epoch}/{s['epochs']}: loss {loss_sum / max(n_batches, 1):.4f}, dev "
            f"{task['metric']} {dev.get(task['metric'])}, {len(train) / epoch_seconds:.1f} ex/s")
        if score > best["score"] or best["epoch"] is None:
            best = {"score": score, "epoch": epoch, "dev": dev,
                    "state": [p.detach().clone() for p in trainable_params]}
    if best["epoch"] != s["epochs"]:
        with torch.no_grad():
            for p, saved in zip(trainable_params, best["state"]):
                p.copy_(saved)

    test = None
    if task.get("test_has_labels", True) and evals["test"].has_labels:
        test = evaluate(model, evals["test"], task, s, device, autocast)
    extra = {name: evaluate(model, split, task, s, device, autocast)
             for name, split in evals.items() if name not in ("dev", "test") and split.has_labels}
    result = {
        "model": model_name,
        "task": task["name"],
        "kind": kind,
        "mode": mode,
        "lr": lr,
        "seed": seed,
        "trainable_params": trainable,
        "total_params": total,
        "dev": best["dev"],
        "test": test,
        "eval_split": "test" if test is not None else "dev",
        "selection_metric": task["metric"],
        "best_epoch": best["epoch"],
        "epochs": s["epochs"],
        "train_examples": len(train),
        "train_seconds": round(train_seconds, 3),
        "examples_per_second": round(len(train) * s["epochs"] / train_seconds, 2) if train_seconds else None,
        "total_seconds": round(time.perf_counter() - t_start, 3),
        "precision": precision,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "model_type": model.config.model_type if hasattr(model, "config") else None,
        "cache_hit": cache_hit,
        "settings": s,
        "history": history,
    }
    if extra:
        result["extra"] = extra
    final = test if test is not None else best["dev"]
    log(f"best epoch {best['epoch']}; {result['eval_split']} {task['metric']} "
        f"{final.get(task['metric'])}")
    write_json(out, result)
    return result


# --------------------------------------------------------------------------------------------
# CLI


def _cmd_finetune(args) -> None:
    spec = parse_spec(args.spec)
    run_finetune(args.model, args.model_name, args.task, args.mode, args.lr, args.seed, spec,
                 args.out, cache_dir=args.cache_dir)


def register(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune and evaluate one model on one task",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="local checkpoint folder (student or teacher)")
    p.add_argument("--model-name", required=True, help="name recorded in metrics.json")
    p.add_argument("--task", required=True, help="prepared task folder (resources/tasks/<task>)")
    p.add_argument("--mode", required=True, choices=MODES)
    p.add_argument("--lr", required=True, type=float)
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--spec", default="{}", help="fine-tuning settings as a JSON object")
    p.add_argument("--out", required=True, help="path of the metrics.json to write")
    p.add_argument("--cache-dir", default=None,
                   help="where tokenised splits are cached (default: <task>/cache)")
    p.set_defaults(func=_cmd_finetune)
