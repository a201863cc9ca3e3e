"""FlowCut: [CLS] attention + [CLS] semantic similarity, weighted by the value L1 norm."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Budget, Compression, Method, Tokens, resolve_keep, validate_keep
from ..ops import select_top, work_dtype
from ..registry import register


def flowcut_scores(cls_attention: Tensor, values: Tensor, special: int) -> Tensor:
    """(B, N - special) FlowCut importance of the tokens after the `special` (0 or 1) [CLS].

    `cls_attention` (B, heads, N): the [CLS] query's attention to every token; `values`
    (B, N, Dv): per-token vectors averaged over heads (the official `value_states.mean(1)`).
    relation = the head-mean [CLS] attention to the ordinary tokens, normalised to sum 1 over
    them. With the [CLS] among the tokens (special=1), score_j = (relation_j + semantic_j) *
    ||values_j||_1, semantic = softmax over all N tokens of values_cls . values_j (unscaled),
    [CLS] column dropped, normalised to sum 1 over the rest. Without it (special=0) there is no
    [CLS] vector to compare with and score_j = relation_j * ||values_j||_1.
    """
    dtype = torch.promote_types(work_dtype(cls_attention), work_dtype(values))
    relation = cls_attention.to(dtype).mean(dim=1)[:, special:]
    # the official divides unguarded; a [CLS] attending only to itself gives 0 / 0 there
    relation = relation / relation.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    v = values.to(dtype)
    norm = v[:, special:].abs().sum(dim=-1)
    if special == 0:
        return relation * norm
    logits = (v[:, :1] @ v.transpose(1, 2)).squeeze(1)  # (B, N): values_cls . values_j
    semantic = logits.softmax(dim=-1)[:, 1:]
    semantic = semantic / semantic.sum(dim=-1, keepdim=True)
    return (relation + semantic) * norm


@register("flowcut")
@dataclass
class FlowCut(Method):
    """Keep the `keep` tokens with the highest FlowCut score ([CLS] attention, [CLS] semantic
    similarity, value norm), in positional order.

    "FlowCut: Rethinking Redundancy via Information Flow for Efficient Vision-Language Models"
    (Jintao Tong, Wenwei Jin, Pengda Qin, Anqi Li, Yixiong Zou, Yuhong Li, Yuhua Li, Ruixuan
    Li; NeurIPS 2025, arXiv 2505.19536). The [CLS] token relays the information flow of the
    vision encoder: a token matters by how much [CLS] draws from it, how close its content is
    to the [CLS]'s, and how much it carries. Per token j after the [CLS] (official
    `compute_score`, `flowcut/utils_flowcut.py`):

        relation_j = mean over heads of attention([CLS] -> j), normalised to sum 1 over tokens
        semantic_j = softmax_j(v_cls . v_j) (unscaled, over all tokens), [CLS] column dropped,
                     normalised to sum 1 over tokens
        score_j    = (relation_j + semantic_j) * ||v_j||_1

    A leading [CLS] and the best-scored tokens, `keep` in all, stay in positional order (the
    official `topk` then `sort`); the rest are dropped.

    Parameters: `keep` (int count or float fraction of all N tokens, a [CLS] included).
    Reads `cls_attention` (B, heads, N), the [CLS] row of an encoder layer's attention
    probabilities, and `keys` (B, N, Dk) of the same layer averaged over heads, which stand in
    for the values (see below). Takes the [CLS] at index 0 (special=1): it is kept, not
    ranked, and gives the semantic term. Or no [CLS] among the tokens (special=0, the [CLS]
    row still read from `cls_attention`): then there is no v_cls and the score is
    relation_j * ||v_j||_1, the form the official Qwen2-VL code uses where there is no [CLS]
    (`compute_score_vit`).

    Inside LLaVA this runs at the projector stage on the patch tokens (special=0, the
    official default `select_feature='patch'`: the [CLS] never reaches the LLM), with the
    [CLS] attention and keys of the CLIP layer the projector reads (the penultimate); `keep=T`
    is the official `flowcut(model, target_num=T)`. The official LLaVA code
    (`flowcut/modeling_clip_flowcut.py`, `CLIPEncoderLayer_forward`) scores the tokens after
    every CLIP layer, keeps a running score (0.5 * previous + 0.5 * this layer's) and prunes at
    every layer whose remaining-layer count (`select_layer - idx - 1`, select_layer = 22 of 24
    layers) is even, by an entropy-adaptive count (`adaptive_prune_ratio`), until the last
    such layer (index 21) cuts to the target. That needs per-layer [CLS] attention, per-head
    values and state carried across layers; the project's per-layer encoder stage hands a
    method only hidden states, keys averaged over heads and sizes, with no [CLS] attention and
    no layer index. So FlowCut here is the single final cut, at the layer the projector reads.

    Differences from the official code:
    - One pruning step instead of progressive pruning over CLIP layers 1-21: the score is that
      of one layer (the one the projector reads, index 22 of CLIP-L, which the official never
      scores), not the running 0.5 / 0.5 average over earlier layers; the entropy-adaptive
      per-layer counts (`adaptive_prune_ratio`) do not occur, and the encoder layers before
      the cut see all tokens.
    - Keys averaged over heads stand in for the values, which the project does not supply: the
      norm is ||k_j||_1 instead of ||v_j||_1 (both averaged over heads), and the semantic term
      is one softmax over k_cls . k_j instead of the mean over heads of per-head softmaxes over
      v_cls,h . v_j,h. Given the values averaged over heads as `keys` and one head, the score
      is the official one.
    - Inside LLaVA the [CLS] is not among the tokens (the projector stage hands the patches,
      as LLaVA-1.5 feeds them to the LLM), so the semantic term is absent there: the score is
      relation * norm. Passing the [CLS] (special=1) gives the full score, and the [CLS] then
      stays in the output and counts in `keep` (the official `select_feature='cls_patch'`
      mode, where target_num counts the [CLS] too).
    - Budgets follow the project's rule (int count, or floor of a fraction of N).
    - Scores are computed in float32 (float64 kept), not the model's float16; ties go to the
      lowest index (`torch.topk` leaves them unspecified). A [CLS] attention of zero on every
      other token gives a zero relation term (the official divides 0 / 0 into NaN).
    - LLaVA-NeXT anyres (half the budget in the encoder, the rest cut at LLM layer 1) and the
      Qwen2-VL variant of the repository (global-query attention in every ViT block, a second
      cut inside the LLM) are not reproduced.
    """

    keep: Budget = 128

    paper = "tong2025flowcut"
    stage = "projector"
    mechanisms = ("attention",)
    needs = ("cls_attention", "keys")
    special_tokens = (0, 1)
    example = {"keep": 16}
    benchmark = {"keep": 64}

    def __post_init__(self) -> None:
        validate_keep(self.keep)

    def compress(self, tokens: Tokens) -> Compression:
        count = resolve_keep(self.keep, tokens.count, tokens.special)
        ordinary = flowcut_scores(tokens.cls_attention, tokens.keys, tokens.special)
        scores = ordinary.new_zeros(tokens.batch, tokens.count)
        scores[:, tokens.special :] = ordinary
        return select_top(tokens, scores, count)
