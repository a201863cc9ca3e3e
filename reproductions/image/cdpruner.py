"""CDPruner: keep the visual tokens that maximise instruction-conditioned diversity (a DPP)."""

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

#: the offset the official code adds to the numerator of the min-max normalised relevance
RELEVANCE_OFFSET = 1e-6


def instruction_relevance(visual: Tensor, text: Tensor, theta: float | None = None) -> Tensor:
    """(B, N) CDPruner's relevance of each visual token (B, N, D) to the instruction (B, M, D).

    The mean over the M text rows of the negated cosine between token and row, min-max
    normalised per row as (r - min + 1e-6) / (max - min) (the released code's formula, sign
    included). A row whose relevance is constant gets 1 everywhere. With `theta`, the
    normalised relevance becomes exp(alpha * r), alpha = theta / (2 * (1 - theta)) (the option
    the released code leaves commented out).
    """
    raw = -cosine_matrix(visual, text).mean(dim=-1)  # (B, N)
    low = raw.amin(dim=-1, keepdim=True)
    span = raw.amax(dim=-1, keepdim=True) - low
    relevance = torch.where(
        span > 0, (raw - low + RELEVANCE_OFFSET) / span.clamp_min(torch.finfo(raw.dtype).tiny), 1.0
    )
    if theta is not None:
        relevance = torch.exp(theta / (2 * (1 - theta)) * relevance)
    return relevance


def greedy_dpp(kernel: Tensor, k: int) -> Tensor:
    """(B, k) indices picked by the fast greedy MAP inference of the DPP with `kernel` (B, N, N).

    Chen et al.'s incremental Cholesky form, as the official loop runs it: every step picks the
    token of largest residual gain d_j^2 (initially the kernel's diagonal; ties: lowest index),
    computes its new Cholesky row e = (L_j - c_j^T C) / d_j and lowers every gain by e^2.
    A picked token is never picked again. When no unpicked token of a row has a gain above
    N * eps * max(diag) left (the kernel's rank is spent: duplicates, or k above the rank), the
    row picks its remaining tokens by the diagonal (relevance) instead, highest first; the
    official loop divides by the square root of a zero or negative gain there (NaN). Returned
    in pick order.
    """
    b, n = kernel.shape[:2]
    diag = torch.diagonal(kernel, dim1=1, dim2=2)
    gains = diag.clone()
    tol = (n * torch.finfo(kernel.dtype).eps) * diag.amax(dim=-1)
    offsets = torch.arange(b, device=kernel.device) * n  # row j of batch row r: r * n + j
    flat_kernel = kernel.reshape(b * n, n)
    picks = torch.empty(b, k, dtype=torch.long, device=kernel.device)
    # the Cholesky factor, one column per step (row j holds c_j, the picked tokens' weights)
    factors = torch.zeros(b, n, k, dtype=kernel.dtype, device=kernel.device)
    flat_factors = factors.view(b * n, k)
    spent = torch.zeros(b, dtype=torch.bool, device=kernel.device)
    any_spent = False
    for step in range(k):
        best, j = gains.max(dim=-1)  # the first maximum: lowest index on ties
        low = best <= tol
        if bool(low.any()):
            spent, any_spent = spent | low, True
            gains = torch.where(spent[:, None] & (gains != -math.inf), diag, gains)
            best, j = gains.max(dim=-1)
        picks[:, step] = j
        flat = j + offsets
        row = flat_kernel.index_select(0, flat)  # (B, N): L_j
        if step:
            c = flat_factors.index_select(0, flat)[:, :step, None]  # (B, step, 1): c_j
            row = torch.baddbmm(row.unsqueeze(-1), factors[:, :, :step], c, alpha=-1).squeeze(-1)
        scale = best.rsqrt()
        if any_spent:
            scale = scale.masked_fill(spent, 0.0)
        e = row * scale.unsqueeze(-1)
        factors[:, :, step] = e
        gains.addcmul_(e, e, value=-1)
        gains.view(-1).index_fill_(0, flat, -math.inf)
    return picks


@register("cdpruner")
@dataclass
class CDPruner(Method):
    """Keep the `keep` tokens of maximal conditional diversity: a DPP over relevance-weighted
    cosine similarity, solved by greedy MAP inference.

    "Beyond Attention or Similarity: Maximizing Conditional Diversity for Token Pruning in
    MLLMs" (Qizhe Zhang, Mengzhen Liu, Lichen Li, Ming Lu, Yuan Zhang, Junwen Pan, Qi She,
    Shanghang Zhang; NeurIPS 2025, arXiv 2506.10967). Over the ordinary tokens:

    - similarity S = cosine between the `features` (the projected visual tokens, the LLM's
      input, as the official code takes them after LLaVA's projector);
    - relevance r_i = mean over the M `text` rows of -cos(feature_i, text_m), min-max normalised
      per image as (r - min + 1e-6) / (max - min) (see `instruction_relevance`);
    - kernel L = diag(r) S diag(r); the `keep - special` tokens are chosen by the greedy MAP
      inference of the DPP with kernel L (`greedy_dpp`): each step adds the token that most
      increases log det L_Y.

    Kept tokens come back in positional order (the official sorts the picks); special tokens
    are always kept and take no part.

    Parameters: `keep` (int count or float fraction of all N tokens, special ones included; the
    official `visual_token_num` is a count, 64 / 128 / 192 in the paper's LLaVA-1.5 tables);
    `theta` (None: the released code's linear relevance; a float in [0, 1): relevance
    exp(alpha * r) with alpha = theta / (2 * (1 - theta)), the paper's trade-off, which the
    released code leaves commented out with theta = 0.5; 0 ignores the instruction).
    Signal: `text` (B, M, D), in the same embedding space as `features`.

    Differences from the official code:
    - Relevance: the official compares CLIP's own embeddings, the patch tokens of the layer
      LLaVA reads passed through CLIP's post-layernorm and visual projection, with the CLIP
      text tower's pooled embedding of the prompt (one row per 77-token segment). Here it
      compares the `features` with the `text` rows as supplied; `reproductions.hf` supplies
      the LLM-space prompt embeddings next to the projected tokens (in every family; on LLaVA
      the method therefore runs on the projected image rows of the LLM input, which are the
      tokens the official code keeps), and it keeps the official negated cosine.
    - The min-max normalisation is per image; the official takes min and max over the whole
      batch (LLaVA-NeXT's crops of one image share them). A constant relevance gives 1s (the
      official divides by zero); this does not change which tokens are picked.
    - Once a row's remaining gains are numerically zero (exact duplicates, or a budget above the
      kernel's rank), its remaining picks follow the relevance (ties: lowest index); the official
      takes the square root of a non-positive gain and continues on NaN, which can pick a token
      twice and keep fewer tokens.
    - Scores in float32 (float64 for float64 input); the official normalises the projected
      features in the model's float16 before casting to float32. The similarity's diagonal is
      exactly 1, so that equally relevant tokens tie and the lowest index goes first; the
      official's diagonal is 1 up to rounding, which breaks such ties arbitrarily.
    - Budget: floor(keep * N) for a fraction, the project's rule (the official takes a count).
    - Image tokens only: the paper also prunes LLaVA-Video and Qwen2.5-VL, but the released code
      covers LLaVA-1.5 / LLaVA-NeXT images only, and an N x N kernel over a whole video is too
      slow here.
    """

    keep: Budget = 64
    theta: float | None = None

    paper = "zhang2025beyond"
    stage = "projector"
    mechanisms = ("similarity", "query")
    needs = ("text",)
    example = {"keep": 16}

    def __post_init__(self) -> None:
        validate_keep(self.keep)
        if self.theta is not None:
            hint = (
                "pass None for the released code's linear relevance, or a float in [0, 1) "
                "weighting relevance against diversity (the paper's 0.5)"
            )
            check_number("theta", self.theta, 0.0, 1.0, open_high=True, hint=hint)

    def compress(self, tokens: Tokens) -> Compression:
        s, x, text = tokens.special, tokens.features, tokens.text
        if text.shape[1] == 0:
            raise ValueError("text has no rows: pass the instruction's embeddings, (B, M >= 1, D)")
        if text.shape[-1] != x.shape[-1]:
            raise ValueError(
                f"text has width {text.shape[-1]} but features {x.shape[-1]}: pass text "
                "embeddings from the same space as the visual features"
            )
        k = resolve_keep(self.keep, tokens.count, s) - s
        ordinary = x[:, s:]
        if k == 0:
            idx = torch.zeros(x.shape[0], 0, dtype=torch.long, device=x.device)
        else:
            relevance = instruction_relevance(ordinary, text, self.theta)
            similarity = cosine_matrix(ordinary)
            similarity.diagonal(dim1=1, dim2=2).fill_(1.0)  # exactly, so that ties are ties
            kernel = relevance.unsqueeze(2) * similarity * relevance.unsqueeze(1)
            idx = greedy_dpp(kernel, k).sort(dim=1).values + s
        return select(tokens, with_special(tokens, idx))
