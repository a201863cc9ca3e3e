"""SparseVLM: text raters score the visual tokens inside the LLM; pruned ones are recycled."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import (
    Budget,
    Compression,
    Method,
    Tokens,
    check_bool,
    check_int,
    resolve_keep,
    validate_keep,
)
from ..ops import (
    density_peaks,
    gather,
    merge,
    order,
    pairwise_distance,
    select,
    top_k,
    with_special,
    work_dtype,
)
from ..registry import register

#: the share of pruned tokens recycled (the official top 30%, plus one)
RECYCLED_SHARE = 0.3


def rater_rows(visual: Tensor, text: Tensor) -> Tensor:
    """(B, M) bool: SparseVLM's "raters", the text rows most relevant to the visual tokens.

    Relevance of text row m is the mean over visual tokens of softmax_m(visual @ text^T); the
    raters are the rows above their row's average relevance (every row where none is).
    """
    dtype = work_dtype(visual)
    relevance = (visual.to(dtype) @ text.to(dtype).transpose(1, 2)).softmax(dim=-1).mean(dim=1)
    raters = relevance > relevance.mean(dim=-1, keepdim=True)
    return torch.where(raters.any(dim=-1, keepdim=True), raters, torch.ones_like(raters))


def recycled_counts(pruned: int) -> tuple[int, int]:
    """(tokens recycled, clusters) for `pruned` pruned tokens, the official rounding."""
    recycled = int(pruned * RECYCLED_SHARE) + 1
    return recycled, int(recycled / 10) + 1


def cluster(x: Tensor, clusters: int, seed: int) -> tuple[Tensor, Tensor]:
    """SparseVLM's density-peak clustering of the rows of `x` (n, D) into `clusters` groups.

    DPC-kNN with k = `clusters` neighbours and the official 1e-6 tie-breaking noise (from a
    generator seeded with `seed`); the centres are the `clusters` highest density * delta, in
    that order; every row joins its nearest centre (the first on ties), centres themselves.
    Returns (assignment (n,) in [0, clusters), centres (clusters,) row indices).
    """
    generator = torch.Generator(device=x.device).manual_seed(seed)
    x = x.to(work_dtype(x))
    dist = pairwise_distance(x[None]) / x.shape[-1] ** 0.5  # computed once, for both steps
    density, delta = density_peaks(x[None], clusters, generator=generator, dist=dist)
    centres = top_k(density[0] * delta[0], clusters, sorted_by_position=False)
    assignment = dist[0, centres].argmin(dim=0)
    assignment[centres] = torch.arange(clusters, device=x.device)
    return assignment, centres


@register("sparsevlm")
@dataclass
class SparseVLM(Method):
    """SparseVLM (Zhang et al., "SparseVLM: Visual Token Sparsification for Efficient
    Vision-Language Model Inference", ICML 2025, arXiv 2410.04417), one sparsification layer.

    Raters are the text rows (`text`, the hidden states of the M query rows) whose mean over
    visual tokens of softmax(features @ text^T, over text) exceeds that relevance's average.
    Each ordinary token's score is `attention` (B, heads, M, N) averaged over heads, then over
    the rater rows; the top keep - special tokens are kept, in positional order. With
    `recycle`, the int(0.3 * pruned) + 1 best-scored pruned tokens are clustered (density peaks,
    k-nearest-neighbour density with k = clusters = int(recycled / 10) + 1) and each cluster's
    mean is appended after the kept tokens, in centre order. Output count: keep, plus the
    clusters when recycling and something was pruned.

    Parameters: `keep` (int count or fraction of N, special tokens included; the official
    schedules for 64 / 128 / 192 tokens are per layer, e.g. 66, 30, 17 at layers 2, 6, 15 for
    64), `layer` (K = 3: the official first sparsification scores with layer 2's attention and
    prunes from layer 3), `recycle` (True), `seed` (the clustering's tie-breaking noise).
    Inside a model, `text` holds the query rows' input embeddings (`text_from = "embeddings"`),
    where the official code picks its raters.

    `source`: kept tokens their slot, recycled tokens their cluster's slot, others -1; a
    cluster's position is its centre's index (the official renumbers positions contiguously
    after each sparsification, which is the integration's concern).

    Differences from the official code:
    - The official picks raters once, with a mean over the whole batch (it supports batch 1
      only); here with a per-row mean, from `features` (the visual tokens entering layer K) and
      `text` (the query rows' embeddings, as officially). A row where no text row is above average uses every row (officially an
      empty mean, NaN).
    - The official keeps min(keep, N - 1) tokens, so it always prunes one; here `keep` is exact,
      and keep = N returns the input unchanged.
    - A cluster's mean divides by its size (the official by size + 1e-6); the density noise
      comes from a seeded generator, one per batch row (the official's is unseeded).
    - Scores run in float32 / float64 (the official in float16); ties go to the lower index.
    """

    keep: Budget = 64
    layer: int = 3
    recycle: bool = True
    seed: int = 0

    paper = "zhang2024sparsevlm"
    stage = "llm"
    mechanisms = ("attention", "query")
    needs = ("attention", "text")
    text_from = "embeddings"
    example = {"keep": 16, "layer": 3}

    def __post_init__(self) -> None:
        validate_keep(self.keep)
        check_int(
            "layer",
            self.layer,
            1,
            "pass the 0-based decoder layer whose input is pruned, an int >= 1 (scored by the "
            "attention of layer - 1; the official first is 3)",
        )
        check_bool("recycle", self.recycle, "pass True to recycle pruned tokens, else False")
        check_int("seed", self.seed)

    def output_count(self, tokens: Tokens) -> int:
        kept = resolve_keep(self.keep, tokens.count, tokens.special)
        pruned = tokens.count - kept
        return kept + (recycled_counts(pruned)[1] if self.recycle and pruned else 0)

    def compress(self, tokens: Tokens) -> Compression:
        s, x = tokens.special, tokens.features
        if tokens.text.shape[-1] != x.shape[-1]:
            raise ValueError(
                f"text has width {tokens.text.shape[-1]} but features {x.shape[-1]}: pass the "
                "hidden states of the query rows at the same layer as the visual tokens"
            )
        kept_count = resolve_keep(self.keep, tokens.count, s)
        raters = rater_rows(x[:, s:], tokens.text).to(work_dtype(x))
        attention = tokens.attention[..., s:]
        per_row = attention.to(work_dtype(attention)).mean(dim=1)  # (B, M, n)
        scores = (per_row * raters[..., None]).sum(dim=1) / raters.sum(dim=1, keepdim=True)
        kept = top_k(scores, kept_count - s)
        pruned = tokens.count - kept_count
        if not (self.recycle and pruned):
            return select(tokens, with_special(tokens, kept + s))
        return self.recycled(tokens, kept, scores)

    def recycled(self, tokens: Tokens, kept: Tensor, scores: Tensor) -> Compression:
        """Kept tokens plus the cluster means of the best pruned tokens (see the class doc)."""
        s, x = tokens.special, tokens.features
        b, n_all = x.shape[:2]
        k = kept.shape[1] + s
        pruned_count = n_all - k
        recycled_count, clusters = recycled_counts(pruned_count)
        is_kept = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, kept, True)
        candidates = order(scores.masked_fill(is_kept, -torch.inf))[:, :recycled_count]
        source = torch.full((b, n_all), -1, dtype=torch.long, device=x.device)
        index = with_special(tokens, kept + s)
        source.scatter_(1, index, torch.arange(k, device=x.device).expand(b, k))
        positions = [index]
        centres = []
        for row in range(b):  # one seeded generator per row keeps rows independent
            assignment, centre = cluster(
                gather(x[row : row + 1, s:], candidates[row : row + 1])[0], clusters, self.seed
            )
            source[row, candidates[row] + s] = k + assignment
            centres.append(candidates[row, centre] + s)
        positions.append(torch.stack(centres))
        weights = torch.ones(b, n_all, device=x.device)  # plain means, as officially
        return merge(
            tokens, source, k + clusters, weights=weights, positions=torch.cat(positions, dim=1)
        )
