"""VisPruner: keep the [CLS]-attended tokens, then thin the rest to a diverse set."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import (
    Budget,
    Compression,
    Method,
    Tokens,
    check_number,
    resolve_keep,
    validate_keep,
)
from ..ops import cosine_matrix, gather, order, select, with_special, work_dtype
from ..registry import register

#: the most residual tokens one round removes (the official constant)
ROUND = 8


def remove_duplicates(similarity: Tensor, target: int) -> Tensor:
    """VisPruner's rounds: thin a list to `target` entries, dropping near-duplicates.

    `similarity` (B, R, R) holds the cosines among the list's entries, in list order. Each round
    splits the current list by position parity (a = even, b = odd), scores each a by its
    highest cosine to any b, drops the min(8, excess) highest-scoring a (at most all of them),
    and continues with [remaining a by score descending, b]. Returns (B, target) indices into
    the original list, in the final list order. One round is a gather, a max and a sort.
    """
    b, r = similarity.shape[:2]
    flat = similarity.reshape(b * r, r)  # row picks as one index_select: the fast path on CPU
    offsets = torch.arange(b, device=similarity.device)[:, None] * r
    current = torch.arange(r, device=similarity.device).expand(b, r)
    while (excess := current.shape[1] - target) > 0:
        evens, odds = current[:, ::2], current[:, 1::2]
        count = evens.shape[1]
        if odds.shape[1]:
            rows = flat.index_select(0, (evens + offsets).flatten()).view(b, count, r)
            scores = rows.gather(2, odds[:, None, :].expand(b, count, odds.shape[1]))
            scores = scores.amax(dim=-1)
        else:  # a single entry left and nothing to match it with
            scores = torch.zeros(evens.shape, dtype=similarity.dtype, device=similarity.device)
        drop = min(ROUND, excess, count)
        survivors = evens.gather(1, order(scores)[:, drop:])
        current = torch.cat([survivors, odds], dim=1)
    return current


@register("vispruner")
@dataclass
class VisPruner(Method):
    """VisPruner (Zhang et al., "Beyond Text-Visual Attention: Exploiting Visual Cues for
    Effective Token Pruning in VLMs", ICCV 2025, arXiv 2412.01818).

    Of the T = keep - special ordinary tokens to keep, the first int(T * important_ratio) by
    [CLS] attention (`cls_attention` averaged over heads, descending) are "important"; the rest,
    in that attention order, are thinned to the remaining budget by `remove_duplicates`: rounds
    that drop up to 8 tokens most cosine-similar (on `features`) to a token of the other parity.
    Output: special tokens, then the kept tokens in positional order (as the official code emits
    them: its first release sorts the indices, its current one applies a boolean mask).

    Parameters: `keep` (int count or fraction of N, special tokens included),
    `important_ratio` (0.5). Signal: `cls_attention` (the official reads the [CLS] row of the
    penultimate CLIP layer's attention, the layer LLaVA takes its features from).

    Differences from the official code:
    - An odd residual count crashes the official round (its batch index has R // 2 - r entries
      for ceil(R / 2) - r kept even tokens); here the even tokens are ceil(R / 2), as slicing
      gives them.
    - A single residual token with nothing to compare against is dropped when it is in excess
      (the official takes the max over an empty row and crashes; only `important_ratio` = 1
      reaches it).
    - Cosines come from one Gram matrix of the residual tokens, computed once, instead of a
      fresh a @ b^T per round (same values up to rounding); attention ties and score ties sort
      stably (lower index first; the official argsort is unstable).
    - Leading special tokens are kept in front; the official drops [CLS] (LLaVA uses patches).
    """

    keep: Budget = 64
    important_ratio: float = 0.5

    paper = "zhang2024beyond"
    stage = "projector"
    mechanisms = ("attention", "similarity")
    needs = ("cls_attention",)
    example = {"keep": 16}

    def __post_init__(self) -> None:
        validate_keep(self.keep)
        ratio = self.important_ratio
        hint = "pass the share of the budget chosen by attention, a float in [0, 1] (official: 0.5)"
        check_number("important_ratio", ratio, 0, 1, hint=hint)

    def compress(self, tokens: Tokens) -> Compression:
        s = tokens.special
        budget = resolve_keep(self.keep, tokens.count, s) - s
        important = int(budget * self.important_ratio)
        attention = tokens.cls_attention[:, :, s:]
        ranked = order(attention.to(work_dtype(attention)).mean(dim=1))
        residual = ranked[:, important:]
        similarity = cosine_matrix(gather(tokens.features[:, s:], residual))
        diverse = residual.gather(1, remove_duplicates(similarity, budget - important))
        kept = torch.cat([ranked[:, :important], diverse], dim=1).sort(dim=1).values
        return select(tokens, with_special(tokens, kept + s))
