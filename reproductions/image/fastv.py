"""FastV: drop the visual tokens the last prompt token attends to least, inside the LLM."""

from __future__ import annotations

from dataclasses import dataclass

from ..interface import Budget, Compression, Method, Tokens, check_int, resolve_keep, validate_keep
from ..ops import select_top, work_dtype
from ..registry import register


@register("fastv")
@dataclass
class FastV(Method):
    """Keep the `keep` visual tokens that the last prompt token attends to most, at LLM layer K.

    "An Image is Worth 1/2 Tokens After Layer 2: Plug-and-Play Inference Acceleration for Large
    Vision-Language Models" (Chen et al., ECCV 2024, arXiv 2403.06764). During prefill, the
    attention map of decoder layer `layer - 1` is averaged over heads; the row of the last
    token of the prompt ranks the visual tokens; the top `keep` stay (in positional order,
    with their original position ids) and the rest are dropped from layer `layer` on.

    Parameters: `keep` (int count or float fraction of the N visual tokens) and `layer` (K,
    the 0-based decoder layer from which tokens are dropped, >= 1; the official default 2).
    Reads `attention` (B, heads, M, N): the integration supplies the attention probabilities
    of layer `layer - 1` (the official `last_layer_attention`) from the M prompt rows that
    follow the visual span to the N visual tokens; the last row is the last prompt token.

    Differences from the official code:
    - Batches: the official code scores batch row 0 (`mean(dim=1)[0]`) and applies that choice
      to every row; here each row is scored on its own.
    - Exact ties in the ranking go to the lowest index (`torch.topk` promises no order).
    """

    keep: Budget = 0.5
    layer: int = 2

    stage = "llm"
    paper = "chen2024image"
    mechanisms = ("attention",)
    modality = ("image", "video")
    needs = ("attention",)
    reads_features = False
    example = {"keep": 16, "layer": 2}

    def __post_init__(self) -> None:
        validate_keep(self.keep)
        hint = "pass the 0-based decoder layer to prune at, an int >= 1 (layer K is pruned by "
        check_int("layer", self.layer, 1, hint + "the attention of layer K - 1)")

    def compress(self, tokens: Tokens) -> Compression:
        count = resolve_keep(self.keep, tokens.count, tokens.special)
        attention = tokens.attention[:, :, -1, :]  # the last prompt token's row
        scores = attention.to(work_dtype(attention)).mean(dim=1)
        return select_top(tokens, scores, count)
