"""Loading the teacher and running it for distillation (eval mode, inference mode, SDPA).

`TeacherRunner` runs the teacher's encoder with fused (SDPA) attention and asks it for its hidden
states; the attention probabilities are then *recomputed* only for the mapped layers from those
layers' inputs (softmax(Q K^T / sqrt(d) + mask), no dropout: the teacher is in eval mode), and the
vocabulary head runs only at the masked slots. This is the same result as `output_attentions=True`
and dense logits, without materialising attention maps of every layer or logits of every position.

Supported teachers: BERT-family encoders whose layers are `encoder.layer[i].attention.self` with
`query`/`key` Linear modules and absolute position embeddings (BERT, BioBERT, RoBERTa, MiniLM).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

HEAD_ATTRS = ("cls", "lm_head")  # BertForMaskedLM.cls, RobertaForMaskedLM.lm_head


def teacher_has_mlm_head(teacher_dir: str | Path) -> bool:
    """From manifest.json (`has_mlm_head`) when present, else from config.json `architectures`."""
    folder = Path(teacher_dir)
    manifest = folder / "manifest.json"
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{manifest}: not valid JSON ({err})") from None
        if "has_mlm_head" in data:
            return bool(data["has_mlm_head"])
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"teacher folder {folder} has no config.json")
    archs = json.loads(cfg.read_text(encoding="utf-8")).get("architectures") or []
    return any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in archs)


def teacher_identity(teacher_dir: str | Path) -> dict[str, Any]:
    """What identifies the teacher's weights for the resume hash (manifest sha256, else config)."""
    folder = Path(teacher_dir)
    manifest = folder / "manifest.json"
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            if data.get("sha256"):
                return {"sha256": data["sha256"]}
        except json.JSONDecodeError:
            pass
    st = folder / "model.safetensors"
    ident: dict[str, Any] = {"config": json.loads((folder / "config.json").read_text(encoding="utf-8"))}
    if st.is_file():
        ident["size"] = st.stat().st_size
    return ident


def load_teacher(teacher_dir: str | Path, need_head: bool):
    """The teacher in fp32, eval mode, SDPA attention. With a head when `need_head` (and it has one)."""
    from transformers import AutoModel, AutoModelForMaskedLM

    folder = Path(teacher_dir)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"teacher folder {folder} has no config.json")
    has_head = teacher_has_mlm_head(folder)
    cls = AutoModelForMaskedLM if (need_head and has_head) else AutoModel
    kwargs: dict[str, Any] = {"local_files_only": True, "attn_implementation": "sdpa", "dtype": torch.float32}
    try:
        model = cls.from_pretrained(str(folder), trust_remote_code=False, **kwargs)  # never a folder's own code
    except (ValueError, TypeError) as err:
        if "sdpa" not in str(err).lower():
            raise
        kwargs["attn_implementation"] = "eager"
        model = cls.from_pretrained(str(folder), trust_remote_code=False, **kwargs)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, has_head


def _find_head(model):
    for name in HEAD_ATTRS:
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            return head
    return None


class TeacherRunner:
    """Callable producing, for one batch, what the enabled loss terms need from the teacher."""

    def __init__(self, model, *, dtype: torch.dtype = torch.float32):
        self.model = model
        self.base = model.base_model
        self.head = _find_head(model) if model is not self.base else None
        enc = getattr(self.base, "encoder", None)
        self.layers = getattr(enc, "layer", None)
        if self.layers is None:
            raise ValueError(
                f"teacher {type(model).__name__}: unsupported architecture (expected a BERT-family "
                f"encoder with encoder.layer[i])"
            )
        cfg = model.config
        if getattr(cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
            raise ValueError(f"teacher position_embedding_type={cfg.position_embedding_type!r} is not supported")
        self.num_layers = int(cfg.num_hidden_layers)
        self.hidden_size = int(cfg.hidden_size)
        self.num_heads = int(cfg.num_attention_heads)
        self.head_dim = self.hidden_size // self.num_heads
        self.dtype = dtype
        if dtype != torch.float32:
            model.to(dtype=dtype)
        self._forward = self._run

    def compile(self) -> None:
        self._forward = torch.compile(self._run, dynamic=False)

    def attention_probs(self, layer: int, hidden: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """Pre-dropout attention probabilities (B, heads, T, T) of teacher `layer` given its input."""
        sa = self.layers[layer].attention.self
        b, t, _ = hidden.shape
        q = sa.query(hidden).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = sa.key(hidden).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)).float() * (1.0 / math.sqrt(self.head_dim))
        scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        return scores.softmax(-1)

    def _run(self, input_ids, attention_mask, positions, hid_layers: tuple, att_layers: tuple):
        out = self.base(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                        return_dict=True)
        hs = out.hidden_states  # L + 1: index 0 = embeddings, l + 1 = output of layer l
        key_mask = attention_mask.bool()
        hidden = {l: hs[l + 1] for l in hid_layers}
        probs = {l: self.attention_probs(l, hs[l], key_mask) for l in att_layers}
        logits = None
        if positions is not None:
            if self.head is None:
                raise ValueError("teacher has no MLM head")
            seq = out.last_hidden_state
            idx = positions.unsqueeze(-1).expand(-1, -1, seq.size(-1))
            logits = self.head(seq.gather(1, idx))
        return hidden, probs, logits

    @torch.inference_mode()
    def __call__(self, input_ids, attention_mask, positions=None, hid_layers=(), att_layers=()):
        return self._forward(input_ids, attention_mask, positions, tuple(hid_layers), tuple(att_layers))


def detach_outputs(hidden: dict, probs: dict, logits):
    """Inference tensors cannot be saved for backward: clone them into ordinary tensors."""
    return ({k: v.clone() for k, v in hidden.items()}, {k: v.clone() for k, v in probs.items()},
            None if logits is None else logits.clone())
