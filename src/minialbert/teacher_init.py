"""Initialise a MiniALBERT student from a BERT teacher (`init: teacher`; docs/method.md, "The student").

Embeddings: with the SVD of the teacher's word embeddings W (V x H) = U S V^T, the student's word
embeddings are U_E S_E = W V_E (V x E) and the projector maps E -> H with weight V_E (bias 0), so
word_embeddings @ projector.weight^T = W V_E V_E^T is the best rank-E approximation of W. Teacher
position and token-type embeddings are projected onto the same basis (P V_E).

LayerNorms. The teacher normalises in H space, the student in E space before the projector, so
the teacher's embedding LayerNorm cannot be copied. Choices, measured with the packaged
all-MiniLM-L6-v2 teacher, offline-default student (E=128, H=384, 3 recursions, teacher layer 3),
4 short English sentences, mean cosine over real tokens between the student's hidden state k and
the teacher's embedding output passed k times through the copied layer (k = 0, 1, 2, 3):

    student embedding LN                    no adapters               with adapters
    (a) left at 1 / 0                       0.488 0.499 0.415 0.353   0.488 0.485 0.386 0.339
    (b) 1 / 0, LN folded into projector     0.500 0.508 0.464 0.397   0.500 0.444 0.376 0.313
    (c) sqrt(H/E) rms(gamma) / V_E^T beta   0.514 0.544 0.482 0.419   0.514 0.518 0.428 0.374
    (c) + adapter LNs copied (below)                                  0.514 0.594 0.640 0.613

We use (c): the student LN gets a scalar gain rms(gamma_T) * sqrt(H / E) (an E-dim unit-variance
vector has norm sqrt(E), the teacher's sqrt(H)) and the teacher's shift seen through the basis,
V_E^T beta_T; the projector stays exactly V_E. Adapters keep Up = 0 (so Adapter(x) = LN(x)), but
each adapter's LayerNorm takes the parameters of the LayerNorm whose output it receives in the
teacher: att_adapters[0] the teacher's embedding LN (it then normalises the projector output in
H space, as the teacher does), att_adapters[i > 0] the shared layer's output LN and ffn_adapters[i]
its attention LN, which makes them near-identities instead of re-normalising to gain 1 / shift 0.
The ceiling is set by the rank-E truncation itself (the MiniLM word embeddings keep only ~66% of
their energy at E = 128), not by these choices. With E = H everything is copied exactly (cosine 1
without adapters; 0.92 / 0.90 / 0.85 with adapters, whose LayerNorm cannot be an exact identity).

The shared layer is a copy of one teacher layer (default: the middle one, num_layers // 2) and
the MLM head is copied from the teacher's `cls.predictions` when the teacher has one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# teacher BertLayer parameter prefix -> MiniAlbertSharedLayer attribute
BERT_LAYER_TO_SHARED = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attention_output",
    "attention.output.LayerNorm": "attention_layer_norm",
    "intermediate.dense": "intermediate",
    "output.dense": "output",
    "output.LayerNorm": "output_layer_norm",
}


def _copy(dst: nn.Module, src: nn.Module) -> None:
    dst.weight.copy_(src.weight)
    dst.bias.copy_(src.bias)


def _check_compatible(s_cfg, t_cfg, num_layers: int, layer: int) -> None:
    for name in ("hidden_size", "vocab_size", "num_attention_heads", "intermediate_size"):
        if getattr(s_cfg, name) != getattr(t_cfg, name):
            raise ValueError(
                f"teacher init needs the student's {name} to equal the teacher's: "
                f"student {getattr(s_cfg, name)}, teacher {getattr(t_cfg, name)}"
            )
    for name in ("max_position_embeddings", "type_vocab_size"):
        if getattr(s_cfg, name) > getattr(t_cfg, name):
            raise ValueError(
                f"student {name} ({getattr(s_cfg, name)}) exceeds the teacher's ({getattr(t_cfg, name)})"
            )
    if s_cfg.embedding_size > s_cfg.hidden_size:
        raise ValueError(
            f"teacher init needs embedding_size <= hidden_size, got {s_cfg.embedding_size} > "
            f"{s_cfg.hidden_size}: an SVD basis has at most hidden_size directions"
        )
    if not 0 <= layer < num_layers:
        raise ValueError(f"teacher layer {layer} out of range: the teacher has {num_layers} layers")


@torch.no_grad()
def _init_embeddings(student, t_emb) -> dict:
    s_emb = student.embeddings
    E, H = student.config.embedding_size, student.config.hidden_size
    W = t_emb.word_embeddings.weight.float()
    n_pos, n_types = s_emb.position_embeddings.num_embeddings, s_emb.token_type_embeddings.num_embeddings
    P = t_emb.position_embeddings.weight[:n_pos].float()
    T = t_emb.token_type_embeddings.weight[:n_types].float()
    gamma, beta = t_emb.LayerNorm.weight.float(), t_emb.LayerNorm.bias.float()

    if E == H:  # no projector: copy exactly
        s_emb.word_embeddings.weight.copy_(W)
        s_emb.position_embeddings.weight.copy_(P)
        s_emb.token_type_embeddings.weight.copy_(T)
        s_emb.layer_norm.weight.copy_(gamma)
        s_emb.layer_norm.bias.copy_(beta)
        return {"reconstruction_error": 0.0, "energy_kept": 1.0}

    # Right singular vectors of W from the eigendecomposition of the H x H Gram matrix: the same
    # basis as torch.linalg.svd(W) (up to signs) at a fraction of the cost for V >> H.
    eigenvalues, eigenvectors = torch.linalg.eigh(W.double().T @ W.double())
    order = eigenvalues.argsort(descending=True)
    energy = eigenvalues[order].clamp_min(0)  # squared singular values
    V_E = eigenvectors[:, order[:E]].float()  # (H, E), orthonormal columns
    s_emb.word_embeddings.weight.copy_(W @ V_E)  # = U_E S_E
    s_emb.position_embeddings.weight.copy_(P @ V_E)
    s_emb.token_type_embeddings.weight.copy_(T @ V_E)
    student.projector.weight.copy_(V_E)
    student.projector.bias.zero_()
    s_emb.layer_norm.weight.fill_(gamma.pow(2).mean().sqrt().item() * math.sqrt(H / E))
    s_emb.layer_norm.bias.copy_(V_E.T @ beta)

    return {
        # ||W - W_E||_F / ||W||_F; equals sqrt(1 - energy_kept)
        "reconstruction_error": torch.linalg.matrix_norm(W - W @ V_E @ V_E.T).item() / torch.linalg.matrix_norm(W).item(),
        "energy_kept": (energy[:E].sum() / energy.sum()).item(),
    }


@torch.no_grad()
def init_student_from_teacher(student, teacher, layer: int | None = None) -> dict:
    """Overwrite `student`'s embeddings, projector, shared layer (and MLM head) from `teacher`.

    student: any MiniALBERT model (base or with a head); teacher: a transformers `BertModel` or a
    BERT model with a head (`BertForMaskedLM`, ...). Requires equal hidden size, vocabulary, heads
    and intermediate size, and embedding_size <= hidden_size; raises ValueError otherwise.
    Returns {"teacher_layer", "teacher_num_layers", "embedding_size", "reconstruction_error",
    "energy_kept", "mlm_head_copied"}.
    """
    t_base = getattr(teacher, "base_model", teacher)
    if not (hasattr(t_base, "embeddings") and hasattr(t_base, "encoder") and hasattr(t_base.encoder, "layer")):
        raise ValueError(f"teacher {type(teacher).__name__} is not a BERT-family model (no embeddings/encoder.layer)")
    s_base = student.base_model
    t_layers = t_base.encoder.layer
    layer = len(t_layers) // 2 if layer is None else layer
    _check_compatible(s_base.config, t_base.config, len(t_layers), layer)

    report = {
        "teacher_layer": layer,
        "teacher_num_layers": len(t_layers),
        "embedding_size": s_base.config.embedding_size,
    }
    report.update(_init_embeddings(s_base, t_base.embeddings))

    shared, t_layer = s_base.shared_layer, t_layers[layer]
    for src, dst in BERT_LAYER_TO_SHARED.items():
        _copy(getattr(shared, dst), t_layer.get_submodule(src))

    if s_base.att_adapters is not None:
        for i, (att, ffn) in enumerate(zip(s_base.att_adapters, s_base.ffn_adapters)):
            _copy(att.layer_norm, t_base.embeddings.LayerNorm if i == 0 else shared.output_layer_norm)
            _copy(ffn.layer_norm, shared.attention_layer_norm)

    report["mlm_head_copied"] = _copy_mlm_head(student, teacher)
    return report


def _copy_mlm_head(student, teacher) -> bool:
    head = getattr(student, "mlm_head", None)
    predictions = getattr(getattr(teacher, "cls", None), "predictions", None)
    if head is None or predictions is None:
        return False
    _copy(head.dense, predictions.transform.dense)
    _copy(head.layer_norm, predictions.transform.LayerNorm)
    if head.decoder is not None:
        head.decoder.weight.copy_(predictions.decoder.weight)
        head.decoder.bias.copy_(predictions.bias)
    else:  # tied: the decoder weight is the (rank-E) word embeddings through the projector
        head.bias.copy_(predictions.bias)
    return True
