"""MiniALBERT: a recursive, adapter-equipped student distilled from a BERT-family teacher.

Importing the package registers the model with the `transformers` Auto classes, so a saved
checkpoint loads with `AutoModel.from_pretrained(path)` and no `trust_remote_code`.
"""

from .modeling_minialbert import (  # noqa: F401  (re-exported public API)
    MiniAlbertConfig,
    MiniAlbertForMaskedLM,
    MiniAlbertForSequenceClassification,
    MiniAlbertForTokenClassification,
    MiniAlbertModel,
    MiniAlbertPreTrainedModel,
    freeze_for_adapter_tuning,
)

__all__ = [
    "MiniAlbertConfig",
    "MiniAlbertForMaskedLM",
    "MiniAlbertForSequenceClassification",
    "MiniAlbertForTokenClassification",
    "MiniAlbertModel",
    "MiniAlbertPreTrainedModel",
    "freeze_for_adapter_tuning",
]
__version__ = "0.1.0"
