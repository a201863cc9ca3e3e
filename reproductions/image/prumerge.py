"""LLaVA-PruMerge and PruMerge+: keep the [CLS]-attention outliers, merge their key neighbours in."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Compression, Method, Tokens, check_bool, check_int, check_number
from ..ops import cosine_matrix, gather, identity, input_sizes, order, top_k, work_dtype
from ..registry import register


def outlier_ratio(scores: Tensor) -> float:
    """Fraction of all `scores` (every batch row together) above Q3 + 1.5 IQR.

    PruMerge's adaptive keep ratio: quartiles with linear interpolation (numpy's default
    percentile), computed over the flattened batch exactly as the official code does.
    """
    flat = scores.flatten().to(work_dtype(scores))
    q1, q3 = torch.quantile(flat, torch.tensor([0.25, 0.75], dtype=flat.dtype, device=flat.device))
    upper = q3 + 1.5 * (q3 - q1)
    return int((flat > upper).sum()) / flat.numel()


def _complement(kept: Tensor, n: int) -> Tensor:
    """(B, n - K) ascending indices of [0, n) missing from each row of `kept` (B, K)."""
    b, k = kept.shape
    index = torch.arange(n, device=kept.device).expand(b, n)
    missing = torch.ones(b, n, dtype=torch.bool, device=kept.device).scatter_(1, kept, False)
    return torch.where(missing, index, n).sort(dim=1).values[:, : n - k]


def prune_and_merge(tokens: Tokens, kept: Tensor, scores: Tensor, neighbors: int) -> Compression:
    """PruMerge's merge step for `kept` (B, K) ordinary-token indices (output in that order).

    Every kept token i becomes x_i + sum_j score_j x_j over its `neighbors` most key-cosine-
    similar ordinary tokens j != i, searched in the list [other kept tokens in `kept` order,
    pruned tokens ascending] (ties: earlier in that list). One extra token sums score_j x_j
    over the pruned tokens. `scores` (B, n) are the ordinary tokens' [CLS] attention.
    """
    s, x_all = tokens.special, tokens.features
    b, n_all, _ = x_all.shape
    n, k = n_all - s, kept.shape[1]
    dtype = work_dtype(x_all)
    pruned = _complement(kept, n)
    listed = torch.cat([kept, pruned], dim=1)  # the official "rest" order, token i included
    x = gather(x_all[:, s:].to(dtype), listed)
    weight = scores.to(dtype).gather(1, listed)

    updated = x[:, :k]
    count = min(neighbors, n - 1)
    if k and count:
        keys = gather(tokens.keys[:, s:], listed)
        sim = cosine_matrix(keys[:, :k], keys).to(dtype)
        self_match = torch.arange(k, device=x.device).expand(b, k).unsqueeze(-1)
        sim = sim.scatter(2, self_match, -math.inf)
        near = order(sim)[..., :count]  # (B, K, count) positions in `listed`
        mix = torch.zeros_like(sim).scatter_(
            2, near, weight.unsqueeze(1).expand_as(sim).gather(2, near)
        )
        updated = updated + mix @ x

    sizes = input_sizes(tokens)
    special = torch.arange(s, device=x.device).expand(b, s)
    slots = torch.arange(s, s + k, device=x.device).expand(b, k)
    source = torch.full((b, n_all), -1, dtype=torch.long, device=x.device)
    source[:, :s] = special
    source.scatter_(1, kept + s, slots)
    parts, positions = [x_all[:, :s].to(dtype), updated], [special, kept + s]
    out_sizes = [sizes[:, :s], sizes.gather(1, kept + s)]
    if n > k:  # the extra token; absent when nothing was pruned (nothing to sum)
        rest = slice(k, None)
        parts.append(weight[:, rest].unsqueeze(1) @ x[:, rest])
        positions.append(pruned[:, :1] + s)
        source.scatter_(1, pruned + s, s + k)
        out_sizes.append(sizes.gather(1, pruned + s).sum(1, keepdim=True))
    return Compression(
        features=torch.cat(parts, dim=1).to(x_all.dtype),
        source=source,
        positions=torch.cat(positions, dim=1),
        sizes=torch.cat(out_sizes, dim=1),
    )


def _validate(ratio: float, neighbors: int, adaptive: bool) -> None:
    hint = "pass the kept fraction of tokens, a float in (0, 1]"
    check_number("ratio", ratio, 0.0, 1.0, open_low=True, hint=hint)
    check_int("neighbors", neighbors, 1, "pass a positive int (the official uses 32)")
    check_bool("adaptive", adaptive, "pass True (outlier ratio) or False (fixed ratio)")


@register("prumerge")
@dataclass
class PruMerge(Method):
    """LLaVA-PruMerge (Shang et al., "LLaVA-PruMerge: Adaptive Token Reduction for Efficient Large
    Multimodal Models", ICCV 2025, arXiv 2403.15388).

    Scores each ordinary token by the [CLS] attention of the last CLIP layer (`cls_attention`,
    averaged over heads; the official uses one full-width head, softmax(q k^T / sqrt(C)), which
    is what the integration supplies). Keeps k = int(n * ratio) tokens, n the ordinary tokens,
    where adaptively ratio is the fraction of all B * n scores above Q3 + 1.5 IQR (the statistic
    spans the batch, as officially: `batch_independent = False`). Kept tokens come out in score
    order; each becomes x_i + sum of score_j x_j over its `neighbors` nearest tokens by key
    cosine (other kept tokens first, then pruned ones); one extra token sums score_j x_j over the
    pruned tokens. Output: special tokens, k merged tokens, the extra token (k + 1 + special).

    Parameters: `adaptive` (use the outlier ratio), `ratio` (the fixed ratio otherwise),
    `neighbors` (32). Signals: `cls_attention`, `keys` (the last layer's key projections).

    `source` records where each input token itself went: kept tokens their slot, pruned tokens
    the extra token (they also feed kept tokens as neighbours, which `source` cannot say); `sizes`
    follow `source`; the extra token's position is its lowest pruned index.

    Differences from the official code:
    - [CLS] handling: the official drops [CLS] (LLaVA uses patches only); here leading special
      tokens are kept unchanged in front and everything else acts on the ordinary tokens.
    - With several attention heads the score is their mean (the official has one head).
    - Neighbours are min(`neighbors`, n - 1) (the official's top-32 crashes below 33 tokens).
    - When nothing is pruned (non-adaptive ratio 1) the empty extra token is left out.
    - Scores and sums run in float32 / float64 (the official runs in the model's float16); ties in
      top-k and neighbour order go to the lower index (torch.topk leaves them unspecified).
    """

    adaptive: bool = True
    ratio: float = 1 / 8
    neighbors: int = 32

    paper = "shang2024llava"
    stage = "projector"
    mechanisms = ("attention", "similarity")
    needs = ("cls_attention", "keys")
    budget_knob = "ratio"
    batch_independent = False  # the adaptive outlier ratio spans the batch, as officially
    copies = False
    example = {}

    def __post_init__(self) -> None:
        _validate(self.ratio, self.neighbors, self.adaptive)

    @classmethod
    def at_budget(cls, budget, tokens, **params):
        """The budget sets `ratio` with the adaptive (outlier) ratio off: a budget fixes the count."""
        return super().at_budget(budget, tokens, **{"adaptive": False, **params})

    def kept_ratio(self, scores: Tensor) -> float:
        """The keep ratio: the batch's outlier fraction when adaptive, else `ratio`."""
        return outlier_ratio(scores) if self.adaptive else self.ratio

    def output_count(self, tokens: Tokens) -> int | None:
        if self.adaptive:
            return None
        n = tokens.count - tokens.special
        k = int(n * self.ratio)
        return tokens.special + k + (1 if k < n else 0)

    def compress(self, tokens: Tokens) -> Compression:
        if tokens.count == tokens.special:
            return identity(tokens)
        scores = _cls_scores(tokens)
        k = int(scores.shape[1] * self.kept_ratio(scores))
        kept = top_k(scores, k, sorted_by_position=False)
        return prune_and_merge(tokens, kept, scores, self.neighbors)


@register("prumerge_plus")
@dataclass
class PruMergePlus(PruMerge):
    """PruMerge+ (same paper as PruMerge: Shang et al., ICCV 2025, arXiv 2403.15388).

    PruMerge plus spatially uniform samples: after the top-k by [CLS] attention (k = int(n *
    ratio), ratio adaptive as in `prumerge`), the indices arange(0, n - 1, int(int(1 / ratio) / 3))
    not already kept are appended in ascending order, then every kept token is merged with its
    key neighbours and the extra token is added exactly as in `prumerge`. Output: special
    tokens, the k + m kept tokens, the extra token; the count depends on the data.

    Parameters and signals as `prumerge`.

    Differences from the official code:
    - Everything listed under `prumerge`.
    - The official end index 575 is n - 1 for any n.
    - No outlier (ratio 0): the official divides by zero; here the stride is unbounded, so
      the samples are index 0 alone. A ratio above 1/3 gives stride 0, where the official
      `arange` fails; here the stride is 1.
    - A sample is skipped when any batch row kept it (the official flattens the batch's indices),
      so every row gets the same count; the official then fails to concatenate for batch > 1.
    - Non-adaptive, the same rule runs with the fixed `ratio` (the official non-adaptive branch
      is a training variant, arange(step / 2, 575, step) without deduplication).
    """

    def output_count(self, tokens: Tokens) -> int | None:
        return None

    def samples(self, kept: Tensor, n: int, ratio: float) -> Tensor:
        """The spatial samples appended after the top-k (B, m), shared by every row."""
        stride = n if ratio == 0 else max(1, int(int(1 / ratio) / 3))
        grid = torch.arange(0, max(n - 1, 0), stride, device=kept.device)
        taken = torch.zeros(n, dtype=torch.bool, device=kept.device)
        taken[kept.flatten()] = True
        fresh = grid[~taken[grid]]
        return fresh.expand(kept.shape[0], fresh.numel())

    def compress(self, tokens: Tokens) -> Compression:
        if tokens.count == tokens.special:
            return identity(tokens)
        scores = _cls_scores(tokens)
        n = scores.shape[1]
        ratio = self.kept_ratio(scores)
        kept = top_k(scores, int(n * ratio), sorted_by_position=False)
        kept = torch.cat([kept, self.samples(kept, n, ratio)], dim=1)
        return prune_and_merge(tokens, kept, scores, self.neighbors)


def _cls_scores(tokens: Tokens) -> Tensor:
    """(B, n) [CLS] attention of the ordinary tokens, averaged over heads, in `work_dtype`."""
    attn = tokens.cls_attention[:, :, tokens.special :]
    return attn.to(work_dtype(attn)).mean(dim=1)
