"""FlowCut: progressive pruning inside the vision encoder, by the [CLS]'s information flow."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Budget, Compression, Method, Tokens, check_int, resolve_keep, validate_keep
from ..ops import gather, identity, select_top, work_dtype
from ..registry import register


def shares(x: Tensor) -> Tensor:
    """`x` divided by its sum over the last dim (a zero sum gives zeros, not 0 / 0)."""
    return x / x.sum(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


def flowcut_scores(cls_attention: Tensor, values: Tensor, special: int = 1) -> Tensor:
    """(B, N - special) one encoder layer's FlowCut importance of the tokens after the [CLS]
    (index 0; `special` = 0: an encoder without one).

    `cls_attention` (B, heads, N): the [CLS] row of the layer's attention (without a [CLS], the
    attention of the query standing in for it); `values` (B, heads, N, Dh): the layer's per-head
    values. score_j = (relation_j + semantic_j) * ||v_j||_1 with relation the head-mean [CLS]
    attention to j, semantic the head-mean of each head's softmax over all N tokens of the
    unscaled v_cls . v_j, both shared out to sum 1 over the tokens after the [CLS], and v_j the
    head-mean value. Without a [CLS] there is no v_cls: relation only (the Qwen2-VL port's
    `compute_score_vit`).
    """
    dtype = torch.promote_types(work_dtype(cls_attention), work_dtype(values))
    relation = shares(cls_attention.to(dtype).mean(1)[:, special:])
    v = values.to(dtype)
    if special:
        semantic = (v[:, :, :1] @ v.transpose(-1, -2)).squeeze(2).softmax(-1).mean(1)
        relation = relation + shares(semantic[:, special:])
    return relation * v.mean(1)[:, special:].abs().sum(-1)


def adaptive_cut(attention: Tensor, remaining: int, target: int) -> int:
    """Tokens to remove at a pruning layer `remaining` (even, > 0) layers before the final cut:
    round((n - target) / sqrt(remaining) * (1 - (H / log n)^2)), H the entropy of the [CLS]
    attention `attention` (B, n) over the n tokens after it, the largest over the batch."""
    n = attention.shape[-1]
    if n == 1:  # one token: its attention is uniform (the official 0 / 0 is NaN)
        return 0
    p = shares(attention)
    ratio = -torch.special.xlogy(p, p).sum(-1) / math.log(n)
    cut = (n - target) / math.sqrt(remaining) * (1 - ratio**2)
    return int(cut.max().round())


def flowcut_step(tokens: Tokens, target: int, remaining: int) -> Compression:
    """One encoder layer of FlowCut, `remaining` layers before the final cut to `target` tokens
    (the [CLS], where `tokens.special`, included): the running score (this layer's, averaged
    half and half with the carried `tokens.scores`) comes back as the output's `scores`; an odd
    `remaining` only scores, an even one keeps the [CLS] and the best-scored tokens, in
    positional order: `target` of them at 0, else all but `adaptive_cut` of them (never fewer
    than `target`)."""
    n, s = tokens.count, tokens.special
    if n <= target:
        return dataclasses.replace(identity(tokens), scores=tokens.scores)
    current = flowcut_scores(tokens.cls_attention, tokens.values, s)
    running = current if tokens.scores is None else 0.5 * tokens.scores[:, s:].to(current) + 0.5 * current
    running = torch.cat([running.new_zeros(tokens.batch, s), running], dim=1)  # the [CLS]'s: unread
    if remaining % 2:
        return dataclasses.replace(identity(tokens), scores=running)
    if remaining == 0:
        count = target
    else:
        attention = tokens.cls_attention.to(current.dtype).mean(1)[:, s:]
        count = max(n - adaptive_cut(attention, remaining, target - s), target)
    out = select_top(tokens, running, count)
    return dataclasses.replace(out, scores=gather(running, out.positions))


@register("flowcut")
@dataclass
class FlowCut(Method):
    """Prune the vision encoder's tokens layer by layer, by how the [CLS] draws on them.

    "FlowCut: Rethinking Redundancy via Information Flow for Efficient Vision-Language Models"
    (Jintao Tong, Wenwei Jin, Pengda Qin, Anqi Li, Yixiong Zou, Yuhong Li, Yuhua Li, Ruixuan
    Li; NeurIPS 2025, arXiv 2505.19536). The [CLS] relays the encoder's information flow, so a
    token matters by the [CLS]'s attention to it, the similarity of its value to the [CLS]'s
    and the size of its value. The official LLaVA code (`flowcut/modeling_clip_flowcut.py`,
    `CLIPAttention_forward` and `CLIPEncoderLayer_forward`; `flowcut/utils_flowcut.py`,
    `compute_score` and `adaptive_prune_ratio`) runs, after every CLIP layer that still holds
    more than the target T tokens (the [CLS] included), with that layer's attention and values:

        score_j = (relation_j + semantic_j) * ||mean over heads of v_j||_1   (`flowcut_scores`)
        running = score (first such layer), else 0.5 * running + 0.5 * score

    and prunes where R, the layers left before the last pruning layer, is even: R > 0 removes
    round((n - (T - 1)) / sqrt(R) * (1 - (H / log n)^2)) of the n tokens after the [CLS] (H the
    entropy of its head-mean attention over them; the largest count over the batch), never
    going below T; R = 0 cuts to T. The last pruning layer is the one before the layer the
    projector reads (CLIP-L in LLaVA-1.5: layers 0-21 of 24 score, 1, 3, ..., 19 prune
    adaptively, 21 cuts to T, 22 feeds the projector). The [CLS] is always kept (LLaVA drops
    it afterwards); the kept tokens stay in positional order (the official `topk` then `sort`).

    Parameters: `keep` = T, an int count or a float fraction of the encoder's N input tokens,
    the [CLS] included: inside LLaVA `keep=K + 1` is the official `flowcut(model, target_num=K)`
    (K tokens reach the LLM; the default is the official K = 128).
    Reads `cls_attention` (B, heads, N) and `values` (B, heads, N, Dh) of one encoder layer,
    and `scores` where given (the running score of the previous layer, which the encoder stage
    carries from one layer's output `scores` to the next). Takes the [CLS] at index 0.

    One call on its own is the final cut (R = 0): the best `keep` tokens by the running score.
    Inside `reproductions.hf` the encoder stage runs one step per layer (`encoder_step`) in
    LLaVA's CLIP, where the signals exist. The repository's Qwen2-VL port (no [CLS], a second
    cut inside the LLM) is `flowcut_qwen`.

    Differences from the official code:
    - Pruning acts between the layer's attention and its MLP instead of after the MLP (the
      stage's place for every encoder method): the kept tokens' states are the same, as the MLP
      and its residual act on each token alone, and the MLP runs on the kept tokens only.
    - The last pruning layer is the one before the layer the projector reads, wherever that is
      (`vision_feature_layer`); the official code fixes it at the encoder's depth - 3.
    - Scores are computed in float32 (float64 kept), not in the model's float16, from the
      attention recomputed from the layer's own projections; ties go to the lowest index
      (`torch.topk` leaves them unspecified).
    - A [CLS] attention or semantic term of zero over every other token gives zero shares, and
      0 * log 0 counts as 0 in the entropy (the official code divides 0 / 0 and takes
      0 * log 0 into NaN, which crashes its count); one token left after the [CLS] removes none.
    - Budgets follow the project's rule (an int count, or the floor of a fraction of N).
    - LLaVA-NeXT anyres (half the budget in the encoder, the rest cut at LLM layer 1) is not
      reproduced.
    """

    keep: Budget = 129

    paper = "tong2025flowcut"
    stage = "encoder"
    mechanisms = ("attention",)
    needs = ("cls_attention", "values")
    uses = ("scores",)
    special_tokens = (1,)
    #: the adaptive counts of the layers before the final cut are the largest over the batch
    batch_independent = False
    example = {"keep": 16}
    benchmark = {"keep": 65}

    def __post_init__(self) -> None:
        validate_keep(self.keep)

    def encoder_step(self, index: int, count: int, feature: int) -> Method | None:
        last = max(feature - 1, 0)
        if index > last:
            return None
        return FlowCutLayer(keep=resolve_keep(self.keep, count, 1), remaining=last - index)

    def compress(self, tokens: Tokens) -> Compression:
        return flowcut_step(tokens, resolve_keep(self.keep, tokens.count, tokens.special), 0)


@dataclass
class FlowCutLayer(FlowCut):
    """FlowCut at one encoder layer, `remaining` layers before the final cut to `keep` tokens
    (a count of the encoder's input): what the encoder stage runs in each layer."""

    remaining: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("remaining", self.remaining, 0, "pass the layers left before the final cut, an int >= 0")

    def output_count(self, tokens: Tokens) -> int | None:
        return None if self.remaining else super().output_count(tokens)

    def compress(self, tokens: Tokens) -> Compression:
        return flowcut_step(tokens, resolve_keep(self.keep, tokens.count, tokens.special), self.remaining)
