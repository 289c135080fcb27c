"""Dynamic MLM masking with static shapes (Cramming-style sparse prediction).

Every sequence gets exactly M = ceil(mask_prob * max_length) *slots*. A sequence with `c` candidate
positions (real, non-special tokens) masks k = min(M, ceil(mask_prob * c)) of them, chosen
uniformly without replacement; the remaining M - k slots are padding (label -100, weight 0). So a
full window masks ~15% of its tokens and a short tail window is not over-masked, while the vocab
projection always runs on a (B, M) tensor. The k chosen tokens follow BERT's 80/10/10 rule: 80%
become [MASK], 10% a random non-special token, 10% stay unchanged.

Randomness comes from an explicit CPU `torch.Generator`, so the masks of a step are a pure
function of (seed, step): exact on resume and identical whatever the number of processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


def num_mask_slots(max_length: int, mask_prob: float) -> int:
    return max(1, math.ceil(mask_prob * max_length - 1e-9))


@dataclass
class MaskedBatch:
    input_ids: torch.Tensor  # (B, T) corrupted inputs
    positions: torch.Tensor  # (B, M) long, the masked slots' positions
    labels: torch.Tensor  # (B, M) long, original ids; -100 on padding slots

    @property
    def valid(self) -> torch.Tensor:
        return self.labels != IGNORE_INDEX

    def __getitem__(self, sl: slice) -> "MaskedBatch":
        return MaskedBatch(self.input_ids[sl], self.positions[sl], self.labels[sl])


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU generator whose state depends only on (seed, step, stream)."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + step * 7_919 + stream * 104_729 + 12_345) % (2**63 - 1))
    return g


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    num_slots: int,
    mask_id: int,
    special_ids: list[int] | torch.Tensor,
    vocab_size: int,
    mask_prob: float = 0.15,
    generator: torch.Generator | None = None,
) -> MaskedBatch:
    """Mask a CPU batch. `input_ids`/`attention_mask` are (B, T); returns a MaskedBatch."""
    ids = input_ids.long()
    b, t = ids.shape
    m = int(num_slots)
    if m > t:
        raise ValueError(f"num_slots {m} > sequence length {t}")
    special = torch.as_tensor(list(special_ids) if not torch.is_tensor(special_ids) else special_ids,
                              dtype=torch.long)
    cand = attention_mask.bool() & ~torch.isin(ids, special)
    n_cand = cand.sum(1)
    k = torch.clamp(torch.ceil(n_cand.double() * mask_prob).long(), max=m)
    k = torch.minimum(k, n_cand)

    score = torch.rand(b, t, generator=generator)
    score = torch.where(cand, score, torch.full_like(score, -1.0))
    positions = torch.topk(score, m, dim=1).indices  # candidates first, random order
    slot = torch.arange(m).unsqueeze(0)
    valid = slot < k.unsqueeze(1)

    labels = torch.gather(ids, 1, positions)
    labels = torch.where(valid, labels, torch.full_like(labels, IGNORE_INDEX))

    u = torch.rand(b, m, generator=generator)
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[special[(special >= 0) & (special < vocab_size)]] = False
    allowed_ids = torch.nonzero(allowed).squeeze(1)
    rand_tok = allowed_ids[torch.randint(len(allowed_ids), (b, m), generator=generator)]
    orig = torch.gather(ids, 1, positions)
    new = torch.where(u < 0.8, torch.full_like(orig, mask_id), torch.where(u < 0.9, rand_tok, orig))
    new = torch.where(valid, new, orig)
    out = ids.clone()
    out.scatter_(1, positions, new)
    return MaskedBatch(out, positions, labels)
