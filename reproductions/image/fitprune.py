"""FitPrune: drop visual tokens at many decoder layers by a recipe fitted offline."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor

from ..interface import Budget, Compression, Method, Tokens, check_int, resolve_keep
from ..ops import select_top, work_dtype
from ..registry import register

#: the released LLaVA-1.5-7B recipes (`delete_scheme` in the official `modeling_llama.py`):
#: FLOPs reduction in percent -> visual tokens deleted after each of the 32 decoder layers
RECIPES: dict[int, tuple[int, ...]] = {
    0: (0,) * 32,
    10: (0, 0, 1, 2, 1, 0, 1, 4, 5, 5, 11, 4, 2, 2, 0, 0, 1, 1, 2, 4, 2, 10, 1, 1, 1, 2, 1, 1, 0, 1, 0, 0),
    20: (0, 0, 3, 3, 1, 1, 4, 16, 14, 15, 24, 4, 2, 3, 2, 0, 6, 0, 5, 13, 4, 19, 2, 1, 1, 1, 1, 1, 2, 1, 0, 0),
    30: (0, 0, 7, 6, 4, 5, 16, 40, 24, 21, 24, 4, 2, 3, 4, 0, 16, 0, 11, 26, 6, 32, 3, 1, 0, 1, 2, 2, 4, 0, 0, 0),
    40: (0, 1, 21, 13, 14, 11, 41, 53, 29, 15, 14, 5, 1, 4, 5, 1, 26, 1, 13, 28, 6, 27, 2, 1, 0, 0, 1, 1, 2, 0, 0, 0),
    50: (3, 7, 49, 24, 29, 17, 59, 41, 26, 8, 10, 6, 2, 5, 7, 2, 30, 3, 13, 27, 5, 23, 2, 1, 0, 0, 1, 1, 2, 0, 0, 0),
    55: (6, 17, 69, 31, 34, 19, 59, 30, 23, 6, 8, 7, 2, 5, 8, 2, 29, 4, 12, 25, 4, 19, 2, 1, 0, 0, 1, 0, 1, 0, 0, 0),
    60: (14, 33, 89, 36, 36, 20, 55, 21, 18, 4, 7, 5, 2, 5, 7, 4, 26, 5, 11, 24, 4, 18, 2, 1, 0, 0, 1, 0, 1, 0, 0, 0),
    70: (48, 79, 118, 41, 33, 17, 36, 9, 9, 2, 3, 2, 1, 3, 4, 8, 18, 7, 8, 20, 4, 13, 2, 1, 0, 0, 1, 0, 1, 0, 0, 0),
    80: (128, 127, 118, 35, 26, 8, 13, 3, 2, 1, 0, 0, 0, 2, 1, 8, 7, 8, 5, 11, 2, 6, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0),
    90: (262, 153, 80, 19, 13, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 1, 2, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0),
}
#: the visual tokens of LLaVA-1.5 (24 x 24), which the released recipes count
REFERENCE = 576

Recipe = tuple[tuple[int, int], ...]


def share(counts: list[int], total: int) -> list[int]:
    """`total` split in proportion to `counts` (largest remainders, ties to the earlier layer):
    equal to `counts` when `total` is their sum."""
    whole = sum(counts)
    if whole == 0:
        return [0] * len(counts)
    parts = [c * total // whole for c in counts]
    rest = sorted(range(len(counts)), key=lambda i: (-(counts[i] * total % whole), i))
    for i in rest[: total - sum(parts)]:
        parts[i] += 1
    return parts


@register("fitprune")
@dataclass
class FitPrune(Method):
    """Delete, after each decoder layer L, the recipe's count of the visual tokens that score
    lowest by that layer's attention: (attention from the text rows) x (attention from the
    visual rows).

    "Fit and Prune: Fast and Training-free Visual Token Pruning for Multi-modal Large Language
    Models" (Ye et al., AAAI 2025, arXiv 2409.10197). In layer L's attention (heads reduced by
    their max) each visual token j gets cross_j, the sum of the attention paid to it by every
    row after the visual span (the question), and self_j, the mean of the attention paid to it
    by the visual rows (causal: rows i >= j); the d_L tokens with the lowest cross_j * self_j
    are deleted after layer L's attention (layer L's KV cache keeps them; they are gone for
    layers > L). Kept tokens keep their position ids, as released.

    The recipe (d_0, d_1, ...) is fitted offline (`statistical_analysis.py`) by bisecting a
    divergence budget alpha until the pruned model meets a FLOPs reduction; it needs the model
    run layer by layer on calibration data and is not reproduced here. The released LLaVA-1.5
    recipes (`RECIPES`, for 10 ... 90 % FLOPs reduction) are data: `reduction` picks one (the
    official `--reduction_ratio`; the released scripts run 60), `recipe` gives your own as
    (L, d_L) pairs. Counts are for `reference` visual tokens (576, LLaVA-1.5's); on N tokens
    their total is scaled to floor(total * N / reference) and shared over the layers in
    proportion (exact at N = reference); `reference=None` takes the counts as they are.

    Reads `attention` (B, heads, N + M, N): the rows of the N visual tokens themselves, then the
    M rows after the visual span (`attention_rows = "media"`); inside transformers, their head
    maximum only (`attention_heads = "max"`), built head by head. There the step of
    layer L runs before layer L + 1 with layer L's attention (`decoder_layers`, `step`): the
    same outputs and caches as deleting inside layer L, since its MLP acts per token. One call
    on its own applies every layer's deletions by the one attention it is given.

    Budget (`at_budget`): the recipe's total is scaled to N - budget and shared over its layers
    in proportion, so any count is met exactly.

    Differences from the official code:
    - Prompt layout: the official hard-codes the image at rows 35 .. 35 + 576 of the LLaVA-1.5
      prompt; here the media columns come from the model's tokens and the question rows are
      every row after the last media token (the same rows on LLaVA-1.5 prompts).
    - The attention is recomputed in float32 (the official casts the softmax to float16 before
      the head max and the sums); exact ties in the score keep the lowest index (the official
      `torch.sort` leaves them unspecified).
    - Batches: the official scores batch size 1 only (`squeeze`); here each row on its own.
    - Token counts other than 576 (scaled recipes) and other models are extensions: the
      official runs LLaVA-1.5 only. A deletion after the last layer (none in the released
      recipes) cannot be placed inside transformers and is refused by `why_unsupported`.
    """

    reduction: int = 60
    recipe: Recipe | None = None
    reference: int | None = REFERENCE

    stage = "llm"
    paper = "ye2024fit"
    mechanisms = ("attention",)
    modality = ("image", "video")
    needs = ("attention",)
    attention_rows = "media"
    attention_heads = "max"
    reads_features = False
    special_tokens = (0,)
    identity = {"recipe": ()}
    example = {"recipe": ((0, 8), (1, 8), (2, 4)), "reference": 64}
    benchmark = {"reduction": 60}

    def __post_init__(self) -> None:
        if isinstance(self.reduction, bool) or self.reduction not in RECIPES:
            raise ValueError(
                f"reduction={self.reduction!r}: pass one of the released FLOPs reductions "
                f"{sorted(RECIPES)} (percent), or your own recipe=((layer, count), ...)"
            )
        if self.recipe is not None:
            pairs = self.recipe
            ok = isinstance(pairs, tuple | list) and all(
                isinstance(p, tuple | list)
                and len(p) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in p)
                for p in pairs
            )
            if not ok or [p[0] for p in pairs] != sorted({p[0] for p in pairs}):
                raise ValueError(
                    f"recipe={pairs!r}: pass (layer, count) pairs of ints >= 0 with increasing "
                    "layers, e.g. ((2, 89), (3, 36)): delete `count` visual tokens after `layer`"
                )
            self.recipe = tuple((int(k), int(d)) for k, d in pairs)
        if self.reference is not None:
            check_int("reference", self.reference, 1, "pass the visual token count the recipe's counts "
                      "are for (576 for LLaVA-1.5), or None to take them as they are")

    def pairs(self) -> Recipe:
        """The recipe as (layer, count) pairs, counts for `reference` tokens."""
        if self.recipe is not None:
            return self.recipe
        return tuple((k, d) for k, d in enumerate(RECIPES[self.reduction]) if d)

    def counts(self, n: int) -> list[int]:
        """The deletions after each layer of `pairs()` on n visual tokens."""
        counts = [d for _, d in self.pairs()]
        if self.reference is None:
            return counts
        return share(counts, sum(counts) * n // self.reference)

    def kept(self, n: int, upto: int | None = None) -> int:
        """Visual tokens of n left after the first `upto` layers of the recipe (all: None)."""
        left = n - sum(self.counts(n)[:upto])
        if left < 1:
            raise ValueError(
                f"fitprune deletes {n - left} of {n} visual tokens: pass a recipe that leaves "
                "at least one (smaller counts, or reference= the count it was fitted for)"
            )
        return left

    def output_count(self, tokens: Tokens) -> int | None:
        return self.kept(tokens.count)

    def decoder_layers(self) -> tuple[int, ...]:
        """Layer L's deletions run before layer L + 1, by layer L's attention."""
        return tuple(k + 1 for k, d in self.pairs() if d)

    def step(self, index: int, count: int) -> Method:
        """The deletions after layer `decoder_layers()[index] - 1` on a span that held `count`."""
        live = [i for i, (_, d) in enumerate(self.pairs()) if d]
        if not live:  # nothing to delete: the stage's one default layer, unchanged
            return self
        i = live[index]
        self.kept(count)  # refuse a recipe that deletes every token
        return FitPrune(recipe=((self.pairs()[i][0], self.counts(count)[i]),), reference=None)

    @classmethod
    def at_budget(cls, budget: Budget, tokens: Tokens, **params: Any) -> Method:
        """The recipe's total scaled to delete N - budget tokens, shared over its layers."""
        n = tokens.count
        target = resolve_keep(budget, n, tokens.special)
        method = cls(**params)
        pairs = method.pairs()
        counts = share([d for _, d in pairs], n - target)
        if target < n and not any(counts):
            raise ValueError(f"fitprune recipe {pairs!r} deletes nothing: pass one that deletes")
        return replace(method, recipe=tuple((k, d) for (k, _), d in zip(pairs, counts, strict=True)), reference=None)

    def compress(self, tokens: Tokens) -> Compression:
        n = tokens.count
        attention = tokens.attention
        if attention.shape[2] <= n:
            raise ValueError(
                f"fitprune reads attention from the N = {n} visual rows and the rows after them: "
                f"pass attention (B, heads, N + M, N) with M >= 1 question rows, got "
                f"{tuple(attention.shape)}"
            )
        return select_top(tokens, scores(attention, n), self.kept(n))


def scores(attention: Tensor, n: int) -> Tensor:
    """(B, N) cross x self: the head-max attention summed over the question rows, times its mean
    over the N visual rows."""
    top = attention.to(work_dtype(attention))
    top = top[:, 0] if top.shape[1] == 1 else top.amax(dim=1)  # the integration's head max: as is
    own = top[:, :n].sum(dim=1) / n
    cross = top[:, n:].sum(dim=1)
    return cross * own

