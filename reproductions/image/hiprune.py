"""HiPrune: anchors from an object-centric encoder layer, their grid neighbours, registers from
the layer the projector reads."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import (
    Budget,
    Compression,
    Method,
    Tokens,
    check_int,
    check_number,
    resolve_keep,
    validate_keep,
)
from ..ops import order, select, top_k, with_special, work_dtype
from ..registry import register

#: the official object layer (1-based) per encoder depth: CLIP ViT-L/14's 24 layers (LLaVA-1.5,
#: LLaVA-NeXT: HIPRUNE_OBJECT_LAYER=9), Qwen2.5-VL's 32-layer ViT (16)
OFFICIAL_OBJECT_LAYER = {24: 9, 32: 16}


def neighbours(mask: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, H * W) bool: the cells above, below, left and right of a set cell of `mask`, inside
    the grid (no wrap-around from one row's end to the next row's start)."""
    b = mask.shape[0]
    m = mask.view(b, *grid)
    out = torch.zeros_like(m)
    out[:, 1:, :] |= m[:, :-1, :]
    out[:, :-1, :] |= m[:, 1:, :]
    out[:, :, 1:] |= m[:, :, :-1]
    out[:, :, :-1] |= m[:, :, 1:]
    return out.view(b, -1)


@register("hiprune")
@dataclass
class HiPrune(Method):
    """Keep anchor, buffer and register tokens picked by the encoder's hierarchical attention.

    "HiPrune: Training-Free Visual Token Pruning via Hierarchical Attention in Vision-Language
    Models" (Liu et al., arXiv 2508.00553, 2025). Official code: Danielement321/HiPrune
    (`LLaVA/llava/model/llava_arch.py` `encode_images`, `Qwen2_5_VL/qwen2_5_vl_HiPrune.py`).
    Training-free, before the projector. A token's score at a layer is its "global attention":
    the attention it receives, averaged over heads and over every query row ([CLS] row
    included; the `received` signal). Of the T = keep - special ordinary tokens kept:

    1. anchors: the round(T * alpha / 5) tokens of highest score at the object layer (Python's
       round, half to even; alpha / 5 because each anchor brings up to 4 buffers);
    2. buffers: the 4-neighbours (up, down, left, right) of the anchors on the patch grid;
    3. registers: the T - |anchors and buffers| other tokens of highest score at the deep layer
       (the one the projector reads).

    Output: special tokens, then the kept tokens in positional order.

    Parameters: `keep` (int count or float fraction of N, special tokens included; official
    LLaVA-1.5 192 / 128 / 64 of 576, Qwen2.5-VL 0.334 / 0.223 / 0.112), `alpha` (the share of
    the budget for anchors and buffers, in [0, 1]; official 0.1), `object_layer` (1-based
    encoder layer of the anchors; None: the official choice for the encoder, 9 of CLIP ViT-L's
    24 layers and 16 of Qwen2.5-VL's 32, else the middle layer, depth // 2).

    Signal: `received` (B, 2, N): row 0 the object layer's scores, row 1 the deep layer's
    (`encoder_layers` names them to the integration). The official LLaVA code reads HF CLIP
    `attentions[object_layer - 1]` and `attentions[mm_vision_select_layer]` (= -2, the layer
    whose output the projector reads), `.mean(dim=1).mean(dim=1)[:, 1:]`; the Qwen2.5-VL port
    the blocks' maps summed over query rows (same order) and averaged over the 4 patches of each
    merged token, at block object_layer - 1 and the last. `reproductions.hf` supplies exactly
    that on LLaVA (CLIP / SigLIP), Qwen2-VL / 2.5-VL / 3-VL, InternVL, Idefics3, Gemma 3 and
    Qwen2.5-Omni; not on LLaVA-NeXT / OneVision images, whose packed anyres tokens have no
    grid (the official LLaVA-NeXT code prunes each 24 x 24 crop on its own grid).

    Differences from the official code:
    - Buffers are the true 4-neighbours on the grid, as the paper defines them. The official
      adds index -1, +1, -W, +W (LLaVA: W = 24 hard-coded) and clamps to [0, N - 1]: an anchor
      in the first column takes the previous row's last token as its left neighbour (the last
      column wraps right), one in the first or last row takes token 0 or N - 1 instead.
    - Where anchors and buffers exceed T (alpha near 1, small budgets) the official `topk` gets
      a negative k and crashes; here the anchors are kept, then the buffers of highest
      object-layer score, up to T.
    - Chosen tokens are left out of the register ranking. The official subtracts 1 from their
      deep score: on LLaVA (scores are means, at most 1) the same; on Qwen2.5-VL (scores are
      sums over query rows, often above 1) chosen tokens can be picked again as registers and
      the image keeps fewer than T tokens: fixed.
    - Qwen2.5-VL: the official flash-attention port takes each block's softmax over the whole
      flat sequence, across images (and windows); here over what the block attends to (its
      `cu_seqlens`): the same for one image at its layers 16 and 32, which attend globally.
    - Scores are compared in float32 (float64 for float64 input); the official averages in the
      model's float16. Exact ties go to the lowest index (`torch.topk` promises no order).
    - Budget: a float `keep` keeps floor(keep * N) (the project's rule; Qwen2.5-VL's official
      rounds, and budgets all images of a prompt together); the official LLaVA count is divided
      by the batch (int(count / B) per image, LLaVA-NeXT: per crop), here each row gets `keep`.
    """

    keep: Budget = 192
    alpha: float = 0.1
    object_layer: int | None = None

    paper = "liu2025hiprune"
    stage = "projector"
    mechanisms = ("attention",)
    needs = ("received",)
    grid = True
    example = {"keep": 16}
    benchmark = {"keep": 192}

    def __post_init__(self) -> None:
        validate_keep(self.keep)
        check_number("alpha", self.alpha, 0, 1, hint="pass the share of the budget spent on anchor "
                     "and buffer tokens, a float in [0, 1] (the official uses 0.1)")
        if self.object_layer is not None:
            check_int("object_layer", self.object_layer, 1, "pass the 1-based encoder layer of the anchors "
                      "(official: 9 on LLaVA's CLIP, 16 on Qwen2.5-VL), or None for the official choice")

    def encoder_layers(self, depth: int, feature: int) -> tuple[int, ...]:
        """The object layer (0-based) and the layer the projector reads."""
        layer = self.object_layer or OFFICIAL_OBJECT_LAYER.get(depth, max(1, depth // 2))
        if layer > depth:
            raise ValueError(
                f"hiprune.object_layer={layer}, but the encoder has {depth} layers: pass "
                f"object_layer between 1 and {depth}"
            )
        return (layer - 1, feature)

    def compress(self, tokens: Tokens) -> Compression:
        if tokens.layout is None or len(tokens.layout) != 2:
            raise ValueError(
                "hiprune takes the 4-neighbours of its anchors on the patch grid: pass "
                f"layout=(H, W) (LLaVA-1.5: (24, 24)), got layout={tokens.layout}"
            )
        if tokens.received.shape[1] != 2:
            raise ValueError(
                f"received has {tokens.received.shape[1]} rows; hiprune reads 2: the object "
                "layer's scores, then the deep layer's (torch.stack([object, deep], dim=1))"
            )
        s = tokens.special
        budget = resolve_keep(self.keep, tokens.count, s) - s
        scores = tokens.received[..., s:]
        scores = scores.to(work_dtype(scores))
        obj, deep = scores[:, 0], scores[:, 1]

        anchors = top_k(obj, round(budget * self.alpha / 5))
        is_anchor = torch.zeros_like(obj, dtype=torch.bool).scatter_(1, anchors, True)
        is_buffer = neighbours(is_anchor, tokens.layout) & ~is_anchor
        # rank anchors first, then buffers (by object-layer score), then the rest by deep
        # score, and keep the first T: the registers fill what anchors and buffers leave
        tier = is_anchor.long() * 2 + is_buffer.long()
        ranked = order(torch.where(tier > 0, obj, deep))
        ranked = ranked.gather(1, order(tier.gather(1, ranked)))
        kept = ranked[:, :budget].sort(dim=1).values + s
        return select(tokens, with_special(tokens, kept))
