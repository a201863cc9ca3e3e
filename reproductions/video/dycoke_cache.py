"""DyCoke's dynamic KV-cache pruning: per decoding step, attend to the most attended visual entries."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import (
    Compression,
    Method,
    Tokens,
    all_finite,
    check_int,
    check_number,
    validate_tokens,
)
from ..ops import identity, select, top_k, work_dtype
from ..registry import register


@register("dycoke_cache")
@dataclass
class DyCokeCache(Method):
    """DyCoke's stage 2: per decoding step, prune the visual KV-cache entries least attended.

    "DyCoke: Dynamic Compression of Tokens for Fast Video Large Language Models" (Tao et al.,
    CVPR 2025, arXiv 2411.15024). At every decoding step the integration calls the method with
    `Tokens(features=<(B, N, D) keys of the N visual cache entries at decoder layer `layer`>,
    attention=<(B, heads, M, N) attention of the current query over the visual span at layer
    `layer` - 1>)`; the last query row is used (M = 1 while decoding). The score of an entry is
    that row's attention averaged over heads. When the cosine similarity between this step's
    scores and the previous step's is below `threshold` (always on the first step, which has no
    previous scores), the step keeps the top int(N * (1 - prune_ratio)) entries; otherwise it
    prunes nothing and returns the input unchanged. The scores of every step become the
    "previous" ones of the next (state on the instance; call `reset()` at the start of every
    generate / prefill).

    What "keep" means, from the released code: the pruning is temporary, for this step only.
    The cache keeps every entry; the kept indices gather the keys and values that layers
    >= `layer` attend to at this step (non-visual entries and the new token are always kept);
    at the next step all layers start from the full cache again, and a step whose scores are
    similar to the previous step's attends to the whole cache. The integration must therefore
    use `source >= 0` as this step's attention mask over the visual span, never drop entries.

    Parameters: `layer` (>= 1, the first decoder layer that attends to the pruned cache; its
    attention input comes from layer - 1), `prune_ratio` in [0, 1) (0.8 in the released code;
    0 returns the input), `threshold` (0.9).

    Differences from the official code:
    - The released code never resets the previous step's scores, so the first step of a new
      generate call is compared with the last step of the previous call (and crashes if the
      visual spans differ in length); here `reset()` clears them, and a call whose span differs
      from the stored scores raises a ValueError asking for `reset()`.
    - The released code handles batch size 1 (row 0 decides for everyone). Here each row keeps
      its own scores and top-k; since one Compression has one token count, the batch prunes at
      a step when any row's similarity is below the threshold (see `batch_independent`).
    - A step that prunes nothing returns the input keys themselves as its features (no copy);
      treat them as read-only.
    - Inputs are checked for NaN and inf on the first step after `reset()`; later steps check
      the attention row they read (the released code checks nothing).
    - Kept entries come back in positional order (the released code gathers them in
      `topk(sorted=False)` order; attention does not depend on the order of the keys).
    """

    layer: int = 3
    prune_ratio: float = 0.8
    threshold: float = 0.9

    stage = "cache"
    modality = ("video",)
    budget_knob = "prune_ratio"
    mechanisms = ("attention",)
    needs = ("attention",)
    paper = "tao2024dycoke"
    special_tokens = (0,)  # the visual span of the cache has no [CLS]
    #: one decision per step for the whole batch (one Compression has one token count): a row
    #: whose scores did not change is pruned too when another row's did
    batch_independent = False
    identity = {"prune_ratio": 0.0}
    example = {"layer": 3, "prune_ratio": 0.8, "threshold": 0.9}
    benchmark = {"layer": 3, "prune_ratio": 0.8, "threshold": 0.9}

    def __post_init__(self) -> None:
        self._previous: Tensor | None = None  # state, not a hyperparameter: no dataclass field
        hint = "pass a decoder layer >= 1 (its scores come from layer - 1)"
        check_int("layer", self.layer, 1, hint)
        hint = "pass a fraction in [0, 1)"
        check_number("prune_ratio", self.prune_ratio, 0.0, 1.0, open_high=True, hint=hint)
        hint = "pass a cosine similarity in [-1, 1]"
        check_number("threshold", self.threshold, -1.0, 1.0, hint=hint)

    def reset(self) -> None:
        """Forget the previous step's scores: call at the start of every generate / prefill."""
        self._previous = None

    def kept(self, n: int) -> int:
        """Entries a pruning step keeps: int(N * (1 - prune_ratio)), as released."""
        return int(n * (1 - self.prune_ratio))

    def output_count(self, tokens: Tokens) -> int | None:
        """The pruned count on a first step; later steps depend on the scores."""
        return self.kept(tokens.count) if self._previous is None else None

    def scores(self, tokens: Tokens) -> Tensor:
        """(B, N) attention of the last query row, averaged over heads."""
        attention = tokens.attention
        return attention[:, :, -1, :].to(work_dtype(attention)).mean(dim=1)

    def __call__(self, tokens: Tokens) -> Compression:
        """Validate in full on the first step after `reset()`; later steps check the shapes and
        the scores they read, not every key and attention value again (that scan cost more
        than the step's decision)."""
        first = self._previous is None
        validate_tokens(tokens, self, values=first)
        return self.compress(tokens, checked=first)

    def compress(self, tokens: Tokens, checked: bool = True) -> Compression:
        scores = self.scores(tokens)
        if not checked and not all_finite(scores):
            raise ValueError("attention contains NaN or inf in its last row: pass finite values")
        previous = self._previous
        if previous is not None and previous.shape != scores.shape:
            raise ValueError(
                f"dycoke_cache holds scores of shape {tuple(previous.shape)} from the previous "
                f"step but got {tuple(scores.shape)}: call reset() at the start of every "
                "generate / prefill"
            )
        if previous is None:
            prune = True  # the released code sets the similarity to 0 on its first step
        else:
            similarity = torch.nn.functional.cosine_similarity(scores, previous.to(scores), dim=-1)
            prune = bool((similarity < self.threshold).any())
        self._previous = scores.detach().clone()
        keep = self.kept(tokens.count)
        if not prune or keep == tokens.count:
            return identity(tokens, copy=False)  # the stage reads `source` only: no key copy
        return select(tokens, top_k(scores, keep))
