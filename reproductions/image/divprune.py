"""DivPrune: keep the most diverse tokens by greedy max-min selection on cosine distance."""

from __future__ import annotations

from dataclasses import dataclass

from ..interface import Budget, Compression, Method, Tokens, resolve_keep, validate_keep
from ..ops import max_min_diverse, select, with_special
from ..registry import register


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
