"""FlowCut's Qwen2-VL port: progressive pruning in the ViT by a mean query's information flow,
then a second cut at LLM layer 2 by the last prompt token's attention and value similarity."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Budget, Compression, Method, Tokens, check_int, resolve_keep, validate_keep
from ..ops import select_top, work_dtype
from ..registry import register
from .flowcut import flowcut_step, shares


def flowcut_llm_scores(attention: Tensor, values: Tensor, text_values: Tensor) -> Tensor:
    """(B, N) the port's `compute_score_llm` at one decoder layer, for the last query row.

    relation: that row of `attention` (B, heads, M, N) renormalised over the N media columns per
    head (the softmax over a subset of the columns is the full softmax renormalised over it: the
    port's softmax over the visual keys), then the head mean; semantic: per head the softmax over
    the media tokens of v_last . v_j / sqrt(Dh) (`text_values` (B, heads, M, Dh) of the query
    rows, `values` (B, heads, N, Dh) of the media tokens), then the head mean; the score is
    (relation + semantic) * ||head-mean v_j||_1."""
    dtype = torch.promote_types(work_dtype(attention), work_dtype(values))
    relation = shares(attention[:, :, -1].to(dtype)).mean(1)
    v, last = values.to(dtype), text_values[:, :, -1:].to(dtype)
    semantic = ((last @ v.transpose(-1, -2)).squeeze(2) / math.sqrt(v.shape[-1])).softmax(-1).mean(1)
    return (relation + semantic) * v.mean(1).abs().sum(-1)


@dataclass
class FlowCutQwenViT(Method):
    """Part 1 of `flowcut_qwen`: FlowCut in Qwen2-VL's ViT, on whole 2x2 merge units (one LLM
    token each), keeping 2K of each image's units for K = `keep` (an int, or the floor of a
    fraction of the units; an image of at most 2K units is not cut). Official: `FlowCut_Qwen/
    modeling_qwen2_vl_flowcut.py`, `VisionAttention_forward` and
    `Qwen2VisionTransformerPretrainedModel_forward`; `utils_flowcut.py`, `compute_score_vit` and
    `adaptive_prune_ratio`. Every block that still holds more than 2K units scores them by the
    attention of the image's mean query (its rotated queries' mean, per head, softmax over the
    image's tokens, head mean) times the L1 norm of the head-mean values (no [CLS], so no
    semantic term: `flowcut_scores` with special 0), keeps the 0.5 / 0.5 running score, and
    where the blocks left after it are even cuts adaptively (the entropy count of `flowcut`,
    over all n units, towards 2K); the last block cuts to 2K. Reads `cls_attention` (that mean
    query's attention, `cls_free_query = "mean"`), `values` and the carried `scores`. One call
    on its own is the last block's cut."""

    keep: Budget = 128

    stage = "encoder"
    mechanisms = ("attention",)
    needs = ("cls_attention", "values")
    uses = ("scores",)
    special_tokens = (0,)
    cls_free_query = "mean"
    #: the adaptive counts of the blocks before the last are the largest over the batch
    batch_independent = False
    example = {"keep": 8}

    def __post_init__(self) -> None:
        validate_keep(self.keep)

    def output_count(self, tokens: Tokens) -> int | None:
        return min(2 * resolve_keep(self.keep, tokens.count), tokens.count)

    def encoder_step(self, index: int, count: int, feature: int) -> Method | None:
        last = max(feature - 1, 0)
        if index > last:
            return None
        k = self.keep if isinstance(self.keep, int) else resolve_keep(self.keep, count)
        return FlowCutQwenViTBlock(keep=k, remaining=last - index)

    def compress(self, tokens: Tokens) -> Compression:
        return flowcut_step(tokens, 2 * resolve_keep(self.keep, tokens.count), 0)


@dataclass
class FlowCutQwenViTBlock(FlowCutQwenViT):
    """The ViT part in one block, `remaining` blocks before the last, cutting towards 2 x `keep`
    units (`keep` a count, K of the image's units as the stage started it)."""

    remaining: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("keep", self.keep, 1, "pass the count K of the image's LLM tokens, an int >= 1")
        check_int("remaining", self.remaining, 0, "pass the blocks left before the last, an int >= 0")

    def output_count(self, tokens: Tokens) -> int | None:
        return None if self.remaining else min(2 * self.keep, tokens.count)

    def compress(self, tokens: Tokens) -> Compression:
        return flowcut_step(tokens, 2 * self.keep, self.remaining)


@dataclass
class FlowCutQwenLLM(Method):
    """Part 2 of `flowcut_qwen`: at decoder layer `layer` (the port's 2), keep the `keep` media
    tokens (an int, or the floor of a fraction of the tokens it gets; all of them where they are
    fewer, as the port) best scored by `flowcut_llm_scores` from layer `layer - 1`'s attention
    and values, in positional order; layers >= `layer` see only those, while the earlier layers'
    caches keep every row. Official: `modeling_qwen2_vl_flowcut.py`, `Qwen2VLSdpaAttention_forward`
    (the "prune" branch, in layer 1), `Qwen2VLModel_forward` (the rows after layer 1);
    `utils_flowcut.py`, `compute_score_llm`. Reads `attention` (B, heads, M, N) of the M rows
    after the media, its last row the last prompt token's, `values` (B, heads, N, Dh) of the
    media tokens and `text_values` (B, heads, M, Dh) of those rows: layer `layer - 1`'s value
    states, kv heads repeated to the query heads (as the port's `repeat_kv`)."""

    keep: Budget = 128
    layer: int = 2

    stage = "llm"
    mechanisms = ("attention",)
    needs = ("attention", "values", "text_values")
    reads_features = False
    example = {"keep": 8, "layer": 2}

    def __post_init__(self) -> None:
        validate_keep(self.keep)
        hint = "pass the 0-based decoder layer to cut at, an int >= 1 (read: layer - 1; the port's: 2)"
        check_int("layer", self.layer, 1, hint)

    def check_inputs(self, tokens: Tokens) -> None:
        _, heads, _, d = tokens.values.shape
        rows = tokens.attention.shape[2]
        if tuple(tokens.text_values.shape[1:]) != (heads, rows, d):
            raise ValueError(
                f"text_values has shape {tuple(tokens.text_values.shape)}; pass the values of the "
                f"{rows} `attention` query rows in the heads and head size of `values`: (B, {heads}, {rows}, {d})"
            )

    def step(self, index: int, count: int) -> Method:
        return dataclasses.replace(self, keep=count) if isinstance(self.keep, int) and self.keep > count else self

    def compress(self, tokens: Tokens) -> Compression:
        scores = flowcut_llm_scores(tokens.attention, tokens.values, tokens.text_values)
        return select_top(tokens, scores, resolve_keep(self.keep, tokens.count, tokens.special))


@register("flowcut_qwen")
@dataclass
class FlowCutQwen(Method):
    """FlowCut as its repository's Qwen2-VL port runs it: pruning in the ViT, then in the LLM.

    "FlowCut: Rethinking Redundancy via Information Flow for Efficient Vision-Language Models"
    (Jintao Tong, Wenwei Jin, Pengda Qin, Anqi Li, Yixiong Zou, Yuhong Li, Yuhua Li, Ruixuan
    Li; NeurIPS 2025, arXiv 2505.19536), `FlowCut_Qwen/` of TungChintao/FlowCut:
    `flowcut(model, target_num=K)` keeps 4 x 2K patches (2K merged tokens) in the ViT and K
    tokens from LLM layer 2 on. Parts, one per stage: `flowcut_qwen.encoder` (`FlowCutQwenViT`:
    the mean query's attention times the value norm in every ViT block, adaptive cuts, 2K units
    after the last block) and `flowcut_qwen.llm` (`FlowCutQwenLLM`: the last prompt token's
    attention and value similarity at layer 1, K tokens from layer 2). Parameters: `keep` = K
    (the port's `target_num`, default 128 as its `main.py`; an int per image, or a float that
    each part resolves against the tokens it gets), `layer` = 2. Qwen2-VL only: the port patches
    nothing else (Qwen2.5-VL's windowed blocks and Qwen3-VL's DeepStack taps give no mean-query
    `cls_attention`; an encoder with a [CLS] is `flowcut`'s).

    Differences from the official code:
    - ViT units: the port prunes single patches to 8K and its merger then joins any four
      consecutive kept patches into one LLM token, across merge units; here the tokens are whole
      2x2 units (their patches' attention and value norms summed), 2K of them.
    - Per image: the port runs batch size 1, and one ViT call's mean query, softmax, top-k and
      counts span every image of the call; here each image has its own and its own 2K. At the
      LLM the port takes the span from the first to the last image token as one (text between
      images lost) and cuts batch row 0; here each row's media tokens are ranked together.
    - Positions: the port gives the 2K tokens left by the ViT the M-RoPE ids of the image's first
      2K placeholders (`position_ids[first:first + 2K]`); here each keeps its own unit's ids (as
      the port's LLM cut does with `topk_position`). Its `cache_position[keep_indices]` (indices
      within the image, the text positions dropped) reaches only the causal-mask builder, which
      under SDPA and FlashAttention builds no mask (layers >= 2 attend causally over the kept
      rows, as here), and the cache update, which its DynamicCache ignores; under eager
      attention the port would build that mask for K positions of a longer sequence (not run
      here). Decoding steps are the same: layers 0 and 1 see every row, layers >= 2 the kept.
    - Videos pass untouched (the port cuts them in the ViT too, after which they no longer fill
      their placeholders); image tokens only.
    - Scores are computed in float32 from the attention recomputed from the layer's own
      projections (the port: the model's dtype); ties go to the lowest index. The port's
      `compute_score_llm` shares each term out over the tokens and then adds the raw terms;
      both are head means of softmaxes over the media tokens, so the shares are the terms.
    - In the ViT, pruning acts between a block's attention and its MLP; the entropy's
      log(p + 1e-7) is xlogy; one unit left removes none (see `flowcut`).
    - Budgets: an image of at most 2K units is not cut in the ViT, and fewer than K media tokens
      are not cut in the LLM (as the port); a float `keep` is resolved by each part against the
      tokens it gets (the ViT: 2 floor(f N) of N units; the LLM: floor(f n) of n), not a port
      option.
    """

    keep: Budget = 128
    layer: int = 2

    paper = "tong2025flowcut"
    parts_of = (FlowCutQwenViT, FlowCutQwenLLM)
    benchmark = {"keep": 64}

    def __post_init__(self) -> None:
        self.parts()  # each part checks its own hyperparameters


__all__ = ["FlowCutQwen", "FlowCutQwenLLM", "FlowCutQwenViT", "FlowCutQwenViTBlock", "flowcut_llm_scores"]
