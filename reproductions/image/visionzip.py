"""VisionZip: dominant tokens by [CLS] attention, contextual tokens by merging the rest."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..interface import Compression, Method, Tokens, check_int, resolve_keep
from ..ops import add_rows, gather, input_sizes, l2_normalize, top_k, work_dtype
from ..registry import register


@register("visionzip")
@dataclass
class VisionZip(Method):
    """Keep `dominant` tokens ([CLS] + most [CLS]-attended) and merge the rest into `contextual`.

    "VisionZip: Longer is Better but Not Necessary in Vision Language Models" (Yang et al.,
    CVPR 2025, arXiv 2412.04467). On the vision encoder's feature layer (LLaVA: the penultimate
    CLIP layer, whose output are the features, whose attention gives `cls_attention` and whose
    keys averaged over heads give `keys`):

    1. Dominant: the [CLS] token plus the `dominant - 1` tokens with the highest [CLS]
       attention summed over heads (the [CLS] column itself is not ranked), in original order.
    2. Contextual: the R remaining tokens, in original order, L2-normalised on `keys`; targets
       are the remaining tokens at `arange(0, R, max(1, R // contextual))[:contextual]`; every
       other remaining token is assigned to the target with the largest dot product; each
       contextual token = target feature + mean of its assigned features (count clamped at 1).
    Output = [dominant, contextual], `dominant + contextual` tokens.

    Parameters: `dominant` (>= 1, the [CLS] included; official LLaVA-1.5 settings 54 / 10,
    108 / 20, 191 / 30), `contextual` (>= 0). Takes the [CLS] at index 0 (special=1), or no
    [CLS] (special=0: an encoder without one, SigLIP or a Qwen ViT, whose `cls_attention` is the
    attention each token receives): then all `dominant` tokens are ranked, as LightCompress'
    Qwen2.5-VL port does.
    A contextual token's `source` slot holds its target and every token assigned to it,
    `sizes` count them and `positions` is the target's index. Its feature is not an average:
    target + mean(assigned), as officially; a target with nothing assigned is itself, unchanged.
    With contextual = 0 the remaining tokens are dropped; `VisionZip(dominant=N, contextual=0)`
    returns its input unchanged.

    Differences from the official code:
    - The official code has no [CLS]-less path; special=0 follows LightCompress' Qwen2.5-VL port.
    - `contextual = 0` is allowed (pure dominant selection); the official step
      `R // contextual` divides by zero.
    - Ties in the [CLS] attention ranking and in the target assignment go to the lowest index.
    - An all-zero key is normalised to zero (the official division gives NaN).
    """

    dominant: int = 54
    contextual: int = 10

    paper = "yang2024visionzip"
    mechanisms = ("attention", "similarity")
    needs = ("cls_attention", "keys")
    special_tokens = (0, 1)
    example = {"dominant": 10, "contextual": 4}
    benchmark = {"dominant": 54, "contextual": 10}

    @classmethod
    def at_budget(cls, budget, tokens, **params):
        """`budget` tokens split as the official settings split them: contextual = round(budget
        * 10 / 64), dominant the rest (64 -> 54 + 10, 128 -> 108 + 20, 192 -> 162 + 30)."""
        count = resolve_keep(budget, tokens.count, tokens.special)
        contextual = round(count * 10 / 64)
        return cls(**{**params, "dominant": count - contextual, "contextual": contextual})

    def __post_init__(self) -> None:
        for name, lowest in (("dominant", 1), ("contextual", 0)):
            value = getattr(self, name)
            check_int(name, value, lowest)

    def output_count(self, tokens: Tokens) -> int:
        return self.dominant + self.contextual

    def compress(self, tokens: Tokens) -> Compression:
        n = tokens.count
        if self.dominant + self.contextual > n:
            raise ValueError(
                f"dominant={self.dominant} + contextual={self.contextual} exceeds the N={n} "
                "tokens: pass a smaller dominant or contextual"
            )
        x, b = tokens.features, tokens.batch
        device = x.device
        # 1. dominant: [CLS] (if any) + the rest by [CLS] attention summed over heads
        s = tokens.special
        attention = tokens.cls_attention.to(work_dtype(tokens.cls_attention)).sum(dim=1)
        dominant = top_k(attention[:, s:], self.dominant - s) + s
        if s:
            dominant = torch.cat([torch.zeros(b, 1, dtype=torch.long, device=device), dominant], dim=1)
        is_dominant = torch.zeros(b, n, dtype=torch.bool, device=device)
        is_dominant.scatter_(1, dominant, True)
        remaining = torch.arange(n, device=device).expand(b, n)[~is_dominant].view(b, -1)
        source = torch.full((b, n), -1, dtype=torch.long, device=device)
        source.scatter_(1, dominant, torch.arange(self.dominant, device=device).expand(b, -1))
        sizes = input_sizes(tokens)
        dominant_sizes = sizes.gather(1, dominant)
        if self.contextual == 0:
            return Compression(gather(x, dominant), source, dominant, dominant_sizes)
        # 2. contextual: targets spread over the remaining tokens, the rest assigned to them
        r = remaining.shape[1]
        step = max(1, r // self.contextual)
        targets = torch.arange(0, r, step, device=device)[: self.contextual]
        is_target = torch.zeros(r, dtype=torch.bool, device=device)
        is_target[targets] = True
        others = torch.arange(r, device=device)[~is_target]
        dtype = work_dtype(x)
        metric = l2_normalize(gather(tokens.keys, remaining).to(work_dtype(tokens.keys)))
        similarity = metric[:, others] @ metric[:, targets].transpose(1, 2)  # (B, R-C, C)
        assigned = similarity.argmax(dim=-1)  # first max: the lowest target
        hidden = gather(x, remaining).to(dtype)
        total = add_rows(hidden[:, others], assigned, self.contextual)
        counts = torch.zeros(b, self.contextual, dtype=dtype, device=device)
        counts.scatter_add_(1, assigned, torch.ones_like(assigned, dtype=dtype))
        contextual = hidden[:, targets] + total / counts.clamp(min=1).unsqueeze(-1)
        slot_of_remaining = torch.empty(b, r, dtype=torch.long, device=device)
        slot_of_remaining[:, targets] = torch.arange(self.contextual, device=device)
        slot_of_remaining[:, others] = assigned
        source.scatter_(1, remaining, slot_of_remaining + self.dominant)
        context_sizes = torch.zeros(b, self.contextual, device=device)
        context_sizes.scatter_add_(1, slot_of_remaining, sizes.gather(1, remaining))
        return Compression(
            features=torch.cat([gather(x, dominant), contextual.to(x.dtype)], dim=1),
            source=source,
            positions=torch.cat([dominant, remaining[:, targets]], dim=1),
            sizes=torch.cat([dominant_sizes, context_sizes], dim=1),
        )
