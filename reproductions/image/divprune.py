"""DivPrune: keep the most diverse tokens by greedy max-min selection on cosine distance."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Budget, Compression, Method, Tokens, resolve_keep, validate_keep
from ..ops import cosine_matrix, select, with_special
from ..registry import register


def max_min_diverse(x: Tensor, k: int) -> Tensor:
    """(B, k) indices of rows of `x` (B, N, D) picked by DivPrune's greedy max-min rule.

    Distance is 1 - cosine. The first pick is the token whose nearest other token is farthest
    (the official "second smallest entry of its column", the smallest being itself); every
    next pick is the token whose distance to the picked set is largest. Ties go to the lowest
    index. Picked tokens are never picked again. Returned in pick order.
    """
    b, n = x.shape[:2]
    if k == 0 or n == 1:
        return torch.zeros(b, k, dtype=torch.long, device=x.device)
    dist = 1.0 - cosine_matrix(x)  # (B, N, N), row i: distances from token i
    rows = torch.arange(b, device=x.device)
    picks = torch.empty(b, k, dtype=torch.long, device=x.device)
    picked = torch.zeros(b, n, dtype=torch.bool, device=x.device)
    scores = dist.topk(2, dim=1, largest=False).values[:, 1]  # per column, as officially
    for step in range(k):
        best = scores.masked_fill(picked, -math.inf).argmax(dim=1)  # first max: lowest index
        picks[:, step] = best
        picked[rows, best] = True
        to_best = dist[rows, best]  # (B, N)
        scores = to_best if step == 0 else torch.minimum(scores, to_best)
    return picks


@register("divprune")
@dataclass
class DivPrune(Method):
    """Keep the `keep` most diverse tokens: greedy max-min selection on cosine distance.

    "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models" (Alvar et al.,
    CVPR 2025, arXiv 2503.02175). On the projected visual tokens (the LLM's input embeddings),
    with distance 1 - cosine similarity: the first token kept is the one whose nearest
    neighbour is farthest; then, K - 1 times, the token whose minimum distance to the kept set
    is largest (a max-min diversity problem). Ties go to the lowest index. Special tokens are
    always kept and do not take part.

    Parameters: `keep` (int count or float fraction of all N tokens, special ones included).

    Inherently sequential (K dependent picks); each pick is one vectorised min-distance update
    over all tokens and the whole batch.

    Differences from the official code:
    - A token already kept is never picked again. The official loop does not mask them; it
      relies on a kept token's distance to itself (0) being the smallest, so exact duplicates
      or rounding can make it pick the same token twice and keep fewer distinct tokens.
    - The official budget is `round(ratio * N)`; here a fraction keeps floor(keep * N) tokens,
      the project's one rounding rule.
    - Output in positional order; the official function returns pick order, and the official
      LLaVA integration gathers tokens in ascending index order, as here.
    """

    keep: Budget = 0.098

    paper = "alvar2025divprune"
    mechanisms = ("similarity",)
    modality = ("image", "video")
    example = {"keep": 16}

    def __post_init__(self) -> None:
        validate_keep(self.keep)

    def compress(self, tokens: Tokens) -> Compression:
        k = resolve_keep(self.keep, tokens.count, tokens.special) - tokens.special
        ordinary = tokens.features[:, tokens.special :]
        idx = max_min_diverse(ordinary, k).sort(dim=1).values + tokens.special
        return select(tokens, with_special(tokens, idx))
