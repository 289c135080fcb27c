"""Initialise a student's embeddings from a small pretrained BERT (`init: embeddings`).

The reference code starts its E=312 students from the embedding layer of a 312-wide BERT
(TinyBERT_General_4L_312D for the general domain, nlpie/tiny-biobert for the biomedical one):
word, position and token-type embeddings and their LayerNorm are copied; the projector (E -> H),
the shared layer, the adapters and the MLM head keep their random initialisation. The source must
share the teacher's vocabulary (the same token ids mean the same strings), which is checked here
rather than trusted, since the corpus was tokenised with the teacher's tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import torch


def _vocab_sha256(folder: Path) -> str:
    # the same identity the tokenised corpus records (meta.json vocab_sha256)
    from .data.packed import load_teacher_tokenizer, vocab_sha256

    return vocab_sha256(load_teacher_tokenizer(folder)[0])


@torch.no_grad()
def init_embeddings_from(student, source_dir: str | Path, teacher_dir: str | Path) -> dict:
    """Copy the embedding layer of the BERT model in `source_dir` into `student` (any MiniALBERT).

    Raises ValueError naming the folder when the source is not BERT-like, its hidden size is not the
    student's embedding_size, it has fewer positions or token types than the student, or its
    vocabulary differs from the teacher's. Returns what was copied, for the distillation summary.
    """
    from transformers import AutoModel

    source_dir, s_emb = Path(source_dir), student.base_model.embeddings
    cfg = student.base_model.config
    if not (source_dir / "config.json").is_file():
        raise ValueError(f"embeddings source {source_dir}: no config.json (not a model folder)")
    source = AutoModel.from_pretrained(str(source_dir), trust_remote_code=False)
    t_emb = getattr(source, "embeddings", None)
    names = ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm")
    if t_emb is None or not all(hasattr(t_emb, n) for n in names):
        raise ValueError(f"embeddings source {source_dir}: {type(source).__name__} has no BERT embedding layer "
                         f"({', '.join(names)})")
    width = t_emb.word_embeddings.weight.shape[1]
    if width != cfg.embedding_size:
        raise ValueError(f"embeddings source {source_dir}: its embeddings are {width}-dimensional but the "
                         f"student's embedding_size is {cfg.embedding_size}; use a preset with E = {width}")
    for part, need in (("word_embeddings", cfg.vocab_size), ("position_embeddings", cfg.max_position_embeddings),
                       ("token_type_embeddings", cfg.type_vocab_size)):
        have = getattr(t_emb, part).weight.shape[0]
        if have < need or (part == "word_embeddings" and have != need):
            raise ValueError(f"embeddings source {source_dir}: {part} has {have} rows, the student needs {need}")
    if _vocab_sha256(source_dir) != _vocab_sha256(Path(teacher_dir)):
        raise ValueError(f"embeddings source {source_dir}: its vocabulary differs from the teacher's "
                         f"({teacher_dir}); the copied rows would embed the wrong tokens")

    s_emb.word_embeddings.weight.copy_(t_emb.word_embeddings.weight)
    s_emb.position_embeddings.weight.copy_(t_emb.position_embeddings.weight[: cfg.max_position_embeddings])
    s_emb.token_type_embeddings.weight.copy_(t_emb.token_type_embeddings.weight[: cfg.type_vocab_size])
    s_emb.layer_norm.weight.copy_(t_emb.LayerNorm.weight)
    s_emb.layer_norm.bias.copy_(t_emb.LayerNorm.bias)
    return {"embeddings_from": str(source_dir), "embedding_size": width,
            "copied": ["word_embeddings", "position_embeddings", "token_type_embeddings", "layer_norm"]}
