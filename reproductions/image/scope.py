"""SCOPE: keep the tokens that best cover the rest, weighted by how salient they are."""

from __future__ import annotations

import math
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
from ..ops import cosine_matrix, select, with_special
from ..registry import register

COMBINES = ("multi", "add")


def saliency_coverage(
    similarity: Tensor, saliency: Tensor, k: int, combine: str = "multi"
) -> Tensor:
    """(B, k) indices picked by SCOPE's greedy saliency-coverage rule, in pick order.

    `similarity` (B, N, N) holds the cosines between tokens, `saliency` (B, N) the (powered)
    attention. The coverage of token i is c_i = max(0, max over picked j of S[j, i]) (0 before
    the first pick). Each step picks the unpicked token j of largest
    gain_j = sum_i max(0, S[i, j] - c_i), times its saliency (`multi`) or plus it (`add`);
    ties go to the lowest index. A facility-location objective: a token gains by covering
    tokens that nothing picked covers yet.
    """
    b, n = similarity.shape[:2]
    rows = torch.arange(b, device=similarity.device)
    picks = torch.empty(b, k, dtype=torch.long, device=similarity.device)
    picked = torch.zeros(b, n, dtype=torch.bool, device=similarity.device)
    covered = torch.zeros(b, n, 1, dtype=similarity.dtype, device=similarity.device)
    for step in range(k):
        gains = (similarity - covered).clamp_min_(0).sum(dim=1)  # (B, N): column sums
        gains = gains * saliency if combine == "multi" else gains + saliency
        best = gains.masked_fill_(picked, -math.inf).argmax(dim=1)  # first max: lowest index
        picks[:, step] = best
        picked[rows, best] = True
        covered = torch.maximum(covered, similarity[rows, best].unsqueeze(-1))
    return picks


@register("scope")
@dataclass
class Scope(Method):
    """SCOPE (Deng et al., "SCOPE: Saliency-Coverage Oriented Token Pruning for Efficient
    Multimodel LLMs", NeurIPS 2025, arXiv 2510.24214).

    Greedy facility-location selection: each of the `keep` - special steps picks the token j
    maximising gain_j * a_j ** alpha, where gain_j = sum_i max(0, S[i, j] - c_i) is how much j
    raises the coverage c_i = max(0, max over picked p of S[p, i]) of every token i, S is the
    cosine similarity of `features` and a_j the [CLS] attention to j summed over heads (the
    saliency). With `combine="add"` the score is gain_j + a_j ** alpha. Ties go to the lowest
    index. Output: special tokens, then the kept tokens in positional order.

    Parameters: `keep` (int count or fraction of N, special tokens included; the official
    LLaVA-1.5 runs use 64, 128, 192), `alpha` (1.0, the official `ALPHA`), `combine` ("multi",
    the official `COMBINED`). Signal: `cls_attention`. The authors' LLaVA code (kinredon/SCOPE,
    `scope/clip_encoder.py`) reads the penultimate CLIP layer: its output hidden states (the
    features LLaVA's projector reads, [CLS] dropped) and the [CLS] row of its attention over all
    577 keys, summed over heads, then projects the kept tokens. AngelSlim ships a port
    (`token_compressor/algorithm/scope.py`) with the same greedy loop.

    Differences from the official code:
    - Cosines come from norms clamped at 1e-12 and are computed in float32 (float64 kept); the
      official divides by the raw norm in the model's dtype (fp16), so a zero feature gives NaN.
    - Gains are summed in float32 rather than fp16, so near-ties can resolve differently.
    - Leading special tokens are kept in front and take no part; the official drops [CLS].
    - The budget is `keep` (a fraction keeps floor(keep * N)); the official takes a count
      (`SUBSET_RATIO`) divided by the batch size.
    - AngelSlim's port differs from the authors' code, and this follows the authors': it
      selects on the projected LLM-input embeddings and recomputes the [CLS] attention as a
      softmax over the patch keys only (no [CLS] key), averaged over heads.
    """

    keep: Budget = 64
    alpha: float = 1.0
    combine: str = "multi"

    paper = "deng2025scope"
    stage = "projector"
    mechanisms = ("attention", "similarity")
    needs = ("cls_attention",)
    example = {"keep": 16}

    def __post_init__(self) -> None:
        validate_keep(self.keep)
        hint = "pass the exponent on the [CLS] attention, a finite number >= 0 (official: 1.0)"
        check_number("alpha", self.alpha, 0, math.inf, open_high=True, hint=hint)
        if self.combine not in COMBINES:
            raise ValueError(
                f"combine={self.combine!r}: pass 'multi' (gain times saliency, official) or 'add'"
            )

    def compress(self, tokens: Tokens) -> Compression:
        s = tokens.special
        k = resolve_keep(self.keep, tokens.count, s) - s
        features = tokens.features[:, s:]
        similarity = cosine_matrix(features)
        attention = tokens.cls_attention[:, :, s:].to(similarity.dtype).sum(dim=1)
        saliency = attention**self.alpha
        idx = saliency_coverage(similarity, saliency, k, self.combine)
        return select(tokens, with_special(tokens, idx.sort(dim=1).values + s))

