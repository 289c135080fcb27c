"""MiniALBERT: a recursive transformer with factorised embeddings and per-recursion adapters.

One readable file in the style of a Hugging Face modeling file: the configuration, the modules,
the task heads, Auto registration, adapter-tuning helpers, presets and parameter counts. It imports
only torch and transformers, so it is all a user needs to load a checkpoint.

Architecture (docs/method.md, "The student"):

    ids -> word + position + token-type embeddings (E dims) -> LayerNorm -> dropout
        -> projector Linear(E -> H) (only when E != H)                  = hidden_states[0]
    for recursion i in 0 .. N-1 (the SAME `shared_layer` every time):
        h = att_adapters[i](h)                                           (when use_adapters)
        h = LayerNorm(h + Dropout(O(SelfAttention(Q h, K h, V h))))      shared attention block
        h = ffn_adapters[i](h)                                           (when use_adapters)
        h = LayerNorm(h + Dropout(W2 GELU(W1 h)))                        shared FFN block
                                                                         = hidden_states[i + 1]

Adapters sit on the residual stream *in front of* each shared block: the adapter's output is both
the block's input and the block's residual branch, so it steers what the shared weights see in
each recursion without touching them. Adapter(x) = LayerNorm(x + Up(GELU(Down(x)))), bottleneck
H // adapter_reduction_factor, 2N adapters, none shared. `Up` starts at zero, so at initialisation
Adapter(x) = LayerNorm(x): at random init an identity (up to eps) on every adapter input except the
first, which are outputs of unit-gain, zero-shift LayerNorms, and a plain normalisation of the
projector output for att_adapters[0]. (`teacher_init` sets the adapters' LayerNorms to keep this
near-identity for teacher weights.) `use_adapters=False` gives a plain recursive ALBERT.

Anytime inference: every forward takes `num_recursions=k` (1 <= k <= N) and then stops after
recursion k, which the heads read exactly as they read recursion N: one checkpoint, N depths.
"""

import math
import numbers
from dataclasses import fields

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


class MiniAlbertConfig(PreTrainedConfig):
    """Configuration of a MiniALBERT student.

    Besides the fields below it accepts the usual `PreTrainedConfig` keywords (`num_labels`,
    `id2label`, `label2id`, `problem_type`, ...). `num_hidden_layers` is an alias of
    `num_recursions` so generic code that counts layers works. `tie_word_embeddings=True` makes
    the MLM decoder reuse the input embeddings through the projector (see `MiniAlbertForMaskedLM`).
    Invalid values raise `ValueError` naming the field.
    """

    model_type = "minialbert"
    attribute_map = {"num_hidden_layers": "num_recursions"}

    vocab_size: int = 30522
    embedding_size: int = 128
    hidden_size: int = 768
    num_recursions: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    use_adapters: bool = True
    adapter_reduction_factor: int = 16
    tie_word_embeddings: bool = False
    pad_token_id: int | None = 0
    classifier_dropout: float | None = None

    def __post_init__(self, **kwargs):
        # `from_pretrained`/`from_dict` pass the saved model_type along; transformers only warns
        # on a mismatch, which would silently build a MiniALBERT from e.g. a BERT config.
        model_type = kwargs.pop("model_type", self.model_type)
        if model_type != self.model_type:
            raise ValueError(
                f"config has model_type={model_type!r}, but MiniAlbertConfig needs "
                f"model_type={self.model_type!r}: this is not a MiniALBERT checkpoint"
            )
        super().__post_init__(**kwargs)
        self._check_fields()

    def _check_fields(self):
        for name in (
            "vocab_size",
            "embedding_size",
            "hidden_size",
            "num_recursions",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
            "adapter_reduction_factor",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.adapter_reduction_factor > self.hidden_size:
            raise ValueError(
                f"adapter_reduction_factor ({self.adapter_reduction_factor}) must not exceed "
                f"hidden_size ({self.hidden_size}): the adapter bottleneck would be empty"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if name == "classifier_dropout" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        for name in ("layer_norm_eps", "initializer_range"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act {self.hidden_act!r} is unknown; use one of {sorted(ACT2FN)}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id ({self.pad_token_id}) must lie in [0, vocab_size)")

    @property
    def adapter_size(self) -> int:
        """Bottleneck width of every adapter."""
        return self.hidden_size // self.adapter_reduction_factor


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


class MiniAlbertEmbeddings(nn.Module):
    """Word + position + token-type embeddings in E dimensions, LayerNorm, dropout."""

    def __init__(self, config: MiniAlbertConfig):
        super().__init__()
        E = config.embedding_size
        self.word_embeddings = nn.Embedding(config.vocab_size, E, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, E)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, E)
        self.layer_norm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        batch, length = inputs_embeds.shape[:2]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"sequence length {length} exceeds max_position_embeddings "
                f"({self.position_embeddings.num_embeddings})"
            )
        device = inputs_embeds.device
        if position_ids is None:
            position_ids = torch.arange(length, device=device).expand(batch, length)
        if token_type_ids is None:
            token_type_ids = torch.zeros((batch, length), dtype=torch.long, device=device)
        embeddings = (
            inputs_embeds
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.layer_norm(embeddings))


class MiniAlbertAdapterUp(nn.Linear):
    """An adapter's up-projection: its own class so `_init_weights` can start it at zero."""


class MiniAlbertAdapter(nn.Module):
    """Bottleneck adapter: LayerNorm(x + Up(GELU(Down(x)))). `up` is zero-initialised."""

    def __init__(self, config: MiniAlbertConfig):
        super().__init__()
        self.down = nn.Linear(config.hidden_size, config.adapter_size)
        self.act = ACT2FN["gelu"]
        self.up = MiniAlbertAdapterUp(config.adapter_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states):
        return self.layer_norm(hidden_states + self.up(self.act(self.down(hidden_states))))


class MiniAlbertSharedLayer(nn.Module):
    """The one post-LN BERT layer that every recursion reuses.

    Split into `attention_block` and `feed_forward_block` because the per-recursion adapters sit
    between them. Parameter names map one to one onto a BERT layer (see `teacher_init.py`).
    """

    def __init__(self, config: MiniAlbertConfig):
        super().__init__()
        H = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = H // config.num_attention_heads
        self.attention_dropout = config.attention_probs_dropout_prob
        self.query = nn.Linear(H, H)
        self.key = nn.Linear(H, H)
        self.value = nn.Linear(H, H)
        self.attention_output = nn.Linear(H, H)
        self.attention_layer_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.intermediate = nn.Linear(H, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.output = nn.Linear(config.intermediate_size, H)
        self.output_layer_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def _heads(self, x):
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def attention_block(self, hidden_states, key_mask=None, return_probs=False, eager=False):
        """Self-attention + residual + LayerNorm.

        key_mask: bool (B, 1, 1, T), True where a key may be attended to, or None.
        Returns (output, probs); probs are the PRE-dropout attention probabilities (B, heads, T, T,
        float32) when `return_probs`, else None. Only then (or with `eager`) are they materialised; the
        normal path is fused `scaled_dot_product_attention`.
        """
        q, k, v = (self._heads(proj(hidden_states)) for proj in (self.query, self.key, self.value))
        dropout_p = self.attention_dropout if self.training else 0.0
        probs = None
        if return_probs or eager:
            # softmax in float32: under bf16 autocast the maps feed a KL loss and need the precision
            scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(self.head_dim)
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
            probs = scores.softmax(dim=-1)
            context = F.dropout(probs, dropout_p, self.training).to(v.dtype) @ v
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p)
        context = context.transpose(1, 2).flatten(2)
        output = self.dropout(self.attention_output(context))
        output = self.attention_layer_norm(output + hidden_states)
        return output, (probs if return_probs else None)

    def feed_forward_block(self, hidden_states):
        """FFN H -> I -> H + residual + LayerNorm."""
        output = self.dropout(self.output(self.act(self.intermediate(hidden_states))))
        return self.output_layer_norm(output + hidden_states)


class MiniAlbertMLMHead(nn.Module):
    """Linear(H, H) -> GELU -> LayerNorm -> decoder Linear(H, V).

    With `tie_word_embeddings` there is no decoder weight: `MiniAlbertForMaskedLM.mlm_logits`
    decodes through the transposed projector and the word embeddings, and only `bias` is owned here.
    """

    def __init__(self, config: MiniAlbertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        if config.tie_word_embeddings:
            self.decoder = None
            self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        else:
            self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
            self.bias = None

    def transform(self, hidden_states):
        return self.layer_norm(self.act(self.dense(hidden_states)))


# --------------------------------------------------------------------------------------------
# Pre-trained model base and the encoder
# --------------------------------------------------------------------------------------------


class MiniAlbertPreTrainedModel(PreTrainedModel):
    config_class = MiniAlbertConfig
    config: MiniAlbertConfig
    base_model_prefix = "minialbert"
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module):
        """N(0, initializer_range) for Linear/Embedding, zero biases, LayerNorm 1/0, adapters' `up` 0.

        The `transformers.initialization` functions skip tensors flagged as loaded, so
        `from_pretrained` initialises only the keys missing from the checkpoint.
        """
        super()._init_weights(module)  # Linear, Embedding (pad row zeroed), LayerNorm
        if isinstance(module, MiniAlbertAdapterUp):
            # Up = 0 makes Adapter(x) = LN(x). Done on the Linear itself: transformers skips
            # custom-code modules that own no parameters directly, such as the adapter.
            init.zeros_(module.weight)
        elif isinstance(module, MiniAlbertMLMHead) and module.bias is not None:
            init.zeros_(module.bias)


def _build_adapters(config: MiniAlbertConfig) -> tuple[nn.ModuleList, nn.ModuleList]:
    n = config.num_recursions
    return (
        nn.ModuleList(MiniAlbertAdapter(config) for _ in range(n)),
        nn.ModuleList(MiniAlbertAdapter(config) for _ in range(n)),
    )


class MiniAlbertModel(MiniAlbertPreTrainedModel):
    """The MiniALBERT encoder (see the module docstring for the exact computation)."""

    def __init__(self, config: MiniAlbertConfig):
        super().__init__(config)
        self.embeddings = MiniAlbertEmbeddings(config)
        if config.embedding_size != config.hidden_size:
            self.projector = nn.Linear(config.embedding_size, config.hidden_size)
        else:
            self.projector = nn.Identity()
        self.shared_layer = MiniAlbertSharedLayer(config)
        if config.use_adapters:
            self.att_adapters, self.ffn_adapters = _build_adapters(config)
        else:
            self.att_adapters = self.ffn_adapters = None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def _recursions_to_run(self, num_recursions) -> int:
        n = self.config.num_recursions
        if num_recursions is None:
            return n
        valid = isinstance(num_recursions, numbers.Integral) and not isinstance(num_recursions, bool)
        if not (valid and 1 <= num_recursions <= n):
            raise ValueError(f"num_recursions must be an integer from 1 to {n} (the model's recursions), "
                             f"got {num_recursions!r}")
        return int(num_recursions)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        output_hidden_states=False,
        output_attentions=False,
        attention_recursions=None,
        return_dict=True,
        num_recursions=None,
    ):
        """Encode a batch.

        attention_mask: (B, T), 1 for real tokens, 0 for padding (padded keys are masked out).
        output_hidden_states: return k + 1 states; index 0 is the projector output, i the output
            of recursion i.
        attention_recursions: 0-based recursion indices whose pre-dropout attention probabilities
            (B, heads, T, T; float32) are returned in `attentions`, in the given order; computed
            eagerly (softmax(QK^T / sqrt(d) + mask), differentiable) only for those recursions.
        output_attentions: shorthand for all recursions that run.
        num_recursions: anytime inference: run only the first k (1 <= k <= N) recursions, each with
            its own adapters, and return recursion k's output; None runs all N. The config is not
            changed, so the same checkpoint serves every k.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        n = self._recursions_to_run(num_recursions)
        if output_attentions:
            if attention_recursions is not None:
                raise ValueError("give either output_attentions=True or attention_recursions, not both")
            attention_recursions = range(n)
        wanted = set()
        if attention_recursions is not None:
            attention_recursions = list(attention_recursions)
            bad = [i for i in attention_recursions if not (isinstance(i, numbers.Integral) and 0 <= i < n)]
            if bad:
                raise ValueError(f"attention_recursions {bad} out of range: this forward runs {n} recursions")
            wanted = set(attention_recursions)

        key_mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        eager = self.config._attn_implementation == "eager"

        hidden = self.projector(self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds))
        all_hidden = (hidden,) if output_hidden_states else None
        probs = {}
        for i in range(n):
            if self.att_adapters is not None:
                hidden = self.att_adapters[i](hidden)
            hidden, p = self.shared_layer.attention_block(hidden, key_mask, i in wanted, eager)
            if p is not None:
                probs[i] = p
            if self.ffn_adapters is not None:
                hidden = self.ffn_adapters[i](hidden)
            hidden = self.shared_layer.feed_forward_block(hidden)
            if output_hidden_states:
                all_hidden += (hidden,)

        attentions = tuple(probs[i] for i in attention_recursions) if wanted else None
        out = BaseModelOutput(last_hidden_state=hidden, hidden_states=all_hidden, attentions=attentions)
        return out if return_dict else out.to_tuple()


# --------------------------------------------------------------------------------------------
# Task heads
# --------------------------------------------------------------------------------------------


class MiniAlbertForMaskedLM(MiniAlbertPreTrainedModel):
    """Encoder + MLM head.

    Not tied by default (as in the reference). With `tie_word_embeddings=True` the decoder weight
    is the word-embedding matrix seen through the projector, D = word_embeddings @ projector.weight^T
    (V x H), never materialised: logits = (h @ projector.weight) @ word_embeddings^T + bias, which
    also works when E == H (no projector). transformers' `_tied_weights_keys` only ties equal-shape
    parameters, so it is not used.
    """

    def __init__(self, config: MiniAlbertConfig):
        super().__init__(config)
        self.minialbert = MiniAlbertModel(config)
        self.mlm_head = MiniAlbertMLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.mlm_head.decoder

    def mlm_logits(self, hidden_states):
        """Apply the MLM head to any (..., H) tensor, giving (..., V) logits."""
        h = self.mlm_head.transform(hidden_states)
        if self.mlm_head.decoder is not None:
            return self.mlm_head.decoder(h)
        projector = self.minialbert.projector
        if isinstance(projector, nn.Linear):
            h = h @ projector.weight
        return F.linear(h, self.minialbert.embeddings.word_embeddings.weight, self.mlm_head.bias)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        labels=None,
        masked_positions=None,
        output_hidden_states=False,
        output_attentions=False,
        attention_recursions=None,
        return_dict=True,
        position_ids=None,
        inputs_embeds=None,
        num_recursions=None,
    ):
        """MLM logits and loss.

        masked_positions: LongTensor (B, M) of sequence positions; logits are then computed only
            there, shape (B, M, V), and `labels` must be (B, M). Without it logits are (B, T, V) and
            labels (B, T). Label -100 is ignored.
        """
        outputs = self.minialbert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            attention_recursions=attention_recursions,
            num_recursions=num_recursions,
        )
        hidden = outputs.last_hidden_state
        if masked_positions is not None:
            index = masked_positions.unsqueeze(-1).expand(-1, -1, hidden.size(-1))
            hidden = hidden.gather(1, index)
        logits = self.mlm_logits(hidden)

        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:-1]:
                raise ValueError(f"labels have shape {tuple(labels.shape)}, logits {tuple(logits.shape)}")
            loss = F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=-100)

        out = MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return out if return_dict else out.to_tuple()


def _classifier_dropout(config: MiniAlbertConfig) -> float:
    return config.hidden_dropout_prob if config.classifier_dropout is None else config.classifier_dropout


class MiniAlbertForSequenceClassification(MiniAlbertPreTrainedModel):
    """Last hidden state at position 0 -> dropout -> Linear(H, num_labels); no pooler.

    Loss: MSE for regression (num_labels == 1 or problem_type "regression"), BCE-with-logits for
    "multi_label_classification", cross-entropy otherwise.
    """

    def __init__(self, config: MiniAlbertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.minialbert = MiniAlbertModel(config)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        labels=None,
        output_hidden_states=False,
        output_attentions=False,
        attention_recursions=None,
        return_dict=True,
        position_ids=None,
        inputs_embeds=None,
        num_recursions=None,
    ):
        outputs = self.minialbert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            attention_recursions=attention_recursions,
            num_recursions=num_recursions,
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state[:, 0]))

        loss = None
        if labels is not None:
            problem_type = self.config.problem_type
            if problem_type is None:
                if self.num_labels == 1:
                    problem_type = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    problem_type = "single_label_classification"
                else:
                    problem_type = "multi_label_classification"
            if problem_type == "regression":
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float().view(-1))
            elif problem_type == "single_label_classification":
                loss = F.cross_entropy(logits.float(), labels.view(-1))
            else:
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())

        out = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return out if return_dict else out.to_tuple()


class MiniAlbertForTokenClassification(MiniAlbertPreTrainedModel):
    """Per-token dropout -> Linear(H, num_labels); cross-entropy with label -100 ignored."""

    def __init__(self, config: MiniAlbertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.minialbert = MiniAlbertModel(config)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        labels=None,
        output_hidden_states=False,
        output_attentions=False,
        attention_recursions=None,
        return_dict=True,
        position_ids=None,
        inputs_embeds=None,
        num_recursions=None,
    ):
        outputs = self.minialbert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            attention_recursions=attention_recursions,
            num_recursions=num_recursions,
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state))

        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)

        out = TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return out if return_dict else out.to_tuple()


AutoConfig.register(MiniAlbertConfig.model_type, MiniAlbertConfig, exist_ok=True)
AutoModel.register(MiniAlbertConfig, MiniAlbertModel, exist_ok=True)
AutoModelForMaskedLM.register(MiniAlbertConfig, MiniAlbertForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(MiniAlbertConfig, MiniAlbertForSequenceClassification, exist_ok=True)
AutoModelForTokenClassification.register(MiniAlbertConfig, MiniAlbertForTokenClassification, exist_ok=True)


# --------------------------------------------------------------------------------------------
# Adapter tuning
# --------------------------------------------------------------------------------------------


def freeze_for_adapter_tuning(model: MiniAlbertPreTrainedModel) -> dict:
    """Freeze embeddings, projector and shared layer; train the 2N adapters and the task head.

    A checkpoint without adapters gets fresh ones (identity-before-LayerNorm at init) and its
    config is switched to `use_adapters=True`, so a saved model reloads with them.
    Returns {"trainable": int, "total": int, "created_adapters": bool}.
    """
    base = model.base_model
    created = base.att_adapters is None
    if created:
        shared = next(base.shared_layer.parameters())
        model.config.use_adapters = True
        base.att_adapters, base.ffn_adapters = _build_adapters(model.config)
        for adapters in (base.att_adapters, base.ffn_adapters):
            adapters.to(device=shared.device, dtype=shared.dtype).apply(model._init_weights)

    # Everything outside the encoder (the task head) stays trainable; inside it, only adapters.
    encoder_params = {id(p) for p in base.parameters()}
    adapter_params = {id(p) for m in (base.att_adapters, base.ffn_adapters) for p in m.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) not in encoder_params or id(p) in adapter_params)
    params = list(model.parameters())
    return {
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "total": sum(p.numel() for p in params),
        "created_adapters": created,
    }


# --------------------------------------------------------------------------------------------
# Presets and parameter counts
# --------------------------------------------------------------------------------------------


def _preset(vocab_size, embedding_size, hidden_size, num_recursions, intermediate_size, use_adapters):
    return {
        "vocab_size": vocab_size,
        "embedding_size": embedding_size,
        "hidden_size": hidden_size,
        "num_recursions": num_recursions,
        "num_attention_heads": 12,
        "intermediate_size": intermediate_size,
        "use_adapters": use_adapters,
        "adapter_reduction_factor": 16,
    }


# General/bio: the paper's students of a BERT-base / BioBERT teacher. offline-default matches the
# packaged all-MiniLM-L6-v2 teacher (H=384, 12 heads, I=1536).
PRESETS: dict[str, dict] = {
    f"{name}{suffix}": _preset(vocab, emb, hidden, n, inter, use_adapters)
    for name, vocab, emb, hidden, n, inter in (
        ("general-e128", 30522, 128, 768, 6, 3072),
        ("general-e312", 30522, 312, 768, 6, 3072),
        ("bio-e128", 28996, 128, 768, 6, 3072),
        ("bio-e312", 28996, 312, 768, 6, 3072),
        ("offline-default", 30522, 128, 384, 3, 1536),
    )
    for suffix, use_adapters in (("", True), ("-noadapters", False))
}


def preset_config(name: str, **overrides) -> MiniAlbertConfig:
    """A `MiniAlbertConfig` from a named preset, with keyword overrides of config fields."""
    if name not in PRESETS:
        raise ValueError(f"unknown student preset {name!r}; valid presets: {', '.join(PRESETS)}")
    valid = {f.name for f in fields(MiniAlbertConfig)} | {"num_labels", "num_hidden_layers"}
    for key in overrides:
        if key not in valid:
            raise ValueError(f"unknown MiniAlbertConfig key {key!r} in preset overrides")
    return MiniAlbertConfig(**{**PRESETS[name], **overrides})


def parameter_counts(model_or_config) -> dict:
    """Unique parameters by part: embeddings, projector, shared_layer, adapters, head, total.

    A config is counted as a `MiniAlbertForMaskedLM` built on the meta device (no memory, no
    init); for a model, "head" is everything outside the encoder (MLM head or classifier).
    """
    model = model_or_config
    if isinstance(model_or_config, MiniAlbertConfig):
        with torch.device("meta"):
            model = MiniAlbertForMaskedLM(model_or_config)
    base = model.base_model

    def count(module):
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    total = count(model)
    counts = {
        "embeddings": count(base.embeddings),
        "projector": count(base.projector),
        "shared_layer": count(base.shared_layer),
        "adapters": count(base.att_adapters) + count(base.ffn_adapters),
    }
    counts["head"] = total - count(base)
    counts["total"] = total
    return counts


def albert_state_dict_to_minialbert(state_dict: dict) -> dict:
    """Map a transformers `AlbertModel` state dict (one hidden group, one inner layer) onto
    `MiniAlbertModel` names. The ALBERT pooler has no counterpart and is dropped. Used by the
    test that compares against the trusted ALBERT implementation."""
    layer = "encoder.albert_layer_groups.0.albert_layers.0."
    renames = {
        "embeddings.LayerNorm.": "embeddings.layer_norm.",
        "encoder.embedding_hidden_mapping_in.": "projector.",
        layer + "attention.query.": "shared_layer.query.",
        layer + "attention.key.": "shared_layer.key.",
        layer + "attention.value.": "shared_layer.value.",
        layer + "attention.dense.": "shared_layer.attention_output.",
        layer + "attention.LayerNorm.": "shared_layer.attention_layer_norm.",
        layer + "ffn.": "shared_layer.intermediate.",
        layer + "ffn_output.": "shared_layer.output.",
        layer + "full_layer_layer_norm.": "shared_layer.output_layer_norm.",
    }
    mapped = {}
    for key, value in state_dict.items():
        if key.startswith("pooler."):
            continue
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        if key.startswith("encoder."):
            raise ValueError(f"unexpected ALBERT key {key!r}: only one layer group and one inner layer map")
        mapped[key] = value
    return mapped
