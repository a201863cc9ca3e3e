"""FasterVLM: keep the visual tokens the vision encoder's [CLS] attends to most."""

from __future__ import annotations

from dataclasses import dataclass

from ..interface import Budget, Compression, Method, Tokens, resolve_keep, validate_keep
from ..ops import select_top, work_dtype
from ..registry import register


@register("fastervlm")
@dataclass
class FasterVLM(Method):
    """Keep the `keep` tokens with the highest [CLS] attention, before the projector.

    "[CLS] Attention is All You Need for Training-Free Visual Token Pruning: Make VLM Inference
    Faster" (Zhang et al., arXiv 2412.01818 v1; later versions of that arXiv entry became
    VisPruner, "Beyond Text-Visual Attention ...", ICCV 2025, hence the paper id
    `zhang2024beyond`). The vision encoder's [CLS] attention to the patch tokens, averaged
    over heads, ranks them; the top `keep` stay in positional order and
    go through the projector, the rest are dropped before the LLM.

    Parameters: `keep` (int count or float fraction of all N tokens, special ones included).
    Reads `cls_attention` (B, heads, N); in LLaVA the official code takes it from the
    attention probabilities of the feature layer (`mm_vision_select_layer`, the penultimate
    CLIP layer), row [CLS], patch columns. A [CLS] among the features (special=1) is kept and
    not ranked; LLaVA's features are the patches only (special=0).

    Differences from the official code:
    None (the official budget `int(N * retention_ratio)` is the project's floor rule; exact
    ties in the ranking go to the lowest index, where `torch.topk` promises no order).
    """

    keep: Budget = 0.25

    paper = "zhang2024beyond"
    mechanisms = ("attention",)
    needs = ("cls_attention",)
    example = {"keep": 16}

    def __post_init__(self) -> None:
        validate_keep(self.keep)

    def compress(self, tokens: Tokens) -> Compression:
        count = resolve_keep(self.keep, tokens.count, tokens.special)
        attention = tokens.cls_attention
        scores = attention.to(work_dtype(attention)).mean(dim=1)
        return select_top(tokens, scores, count)
