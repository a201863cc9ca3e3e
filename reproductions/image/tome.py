"""ToMe: bipartite soft matching, with a functional core the encoder integration reuses."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Compression, Method, Tokens, check_int
from ..ops import cosine_matrix, identity, merge, order, slot_sizes
from ..ops import proportional_attention_bias as proportional_attention_bias  # re-exported
from ..registry import register


@dataclass(frozen=True)
class Matching:
    """The outcome of one bipartite soft matching: where each of the N tokens goes.

    `source` (B, N) is each token's output slot (a merged token points at the slot of the
    token it merged into); `positions` (B, count) the original index of each slot's kept token,
    ascending. `merge` applies the same assignment to any tensor aligned with the tokens, as
    ToMe's merge closures do, so features, keys and sizes stay consistent across layers.
    """

    source: Tensor
    positions: Tensor
    count: int

    def merge(self, x: Tensor, sizes: Tensor | None = None) -> Tensor:
        """Size-weighted average of `x` (B, N, ...) per slot -> (B, count, ...), in x's dtype."""
        b, n = x.shape[:2]
        flat = x.reshape(b, n, -1)
        tokens = Tokens(features=flat, sizes=sizes)
        out = merge(tokens, self.source, self.count, positions=self.positions).features
        return out.reshape(b, self.count, *x.shape[2:])

    def sizes(self, sizes: Tensor | None = None) -> Tensor:
        """(B, count) float32 sizes after the merge: input sizes (default ones) summed per slot."""
        return slot_sizes(sizes, self.source, self.count)


def bipartite_soft_matching(metric: Tensor, r: int, special: int = 0) -> Matching:
    """ToMe's matching on `metric` (B, N, C): merge the `r` most similar tokens of set A into B.

    A holds the even positions, B the odd ones, counted over all N tokens (special ones
    included). Similarity is cosine; the first `special` tokens never merge and nothing merges
    into them. Each A token proposes its most similar B token; the r proposals with the highest
    similarity merge (ties: lowest A index). `r` is capped at (N - special) // 2.
    Kept tokens stay in positional order (ToMe itself emits [unmerged A, B]).
    """
    b, n = metric.shape[:2]
    device = metric.device
    r = min(r, (n - special) // 2)
    index = torch.arange(n, device=device).expand(b, n)
    if r <= 0:
        return Matching(index.clone(), index.clone(), n)
    a_index, b_index = torch.arange(0, n, 2, device=device), torch.arange(1, n, 2, device=device)
    scores = cosine_matrix(metric[:, ::2], metric[:, 1::2])
    scores[:, a_index < special, :] = -math.inf  # protected tokens do not merge ...
    scores[:, :, b_index < special] = -math.inf  # ... and receive nothing
    best, match = scores.max(dim=-1)  # (B, |A|): each A token's best B partner
    merged_a = order(best)[:, :r]  # (B, r) positions within A
    merged = torch.zeros(b, n, dtype=torch.bool, device=device)
    merged.scatter_(1, a_index[merged_a], True)
    kept = ~merged
    slot = kept.long().cumsum(dim=1) - 1  # slot of every kept token, positional order
    partner = b_index[match.gather(1, merged_a)]  # (B, r) original index merged into
    source = slot.clone()
    source.scatter_(1, a_index[merged_a], slot.gather(1, partner))
    positions = index[kept].reshape(b, n - r)
    return Matching(source, positions, n - r)


@register("tome")
@dataclass
class ToMe(Method):
    """Token Merging: merge `r` tokens per call by bipartite soft matching.

    "Token Merging: Your ViT But Faster" (Bolya et al., ICLR 2023, arXiv 2210.09461). In every
    encoder block, between attention and MLP, the tokens alternate into sets A (even positions)
    and B (odd positions); each A token finds its most cosine-similar B token on the attention
    keys (averaged over heads), and the r best-matched A tokens merge into their partners by a
    size-weighted average. Sizes are carried across layers (`Tokens.sizes` in, `sizes` out)
    and enter the next attention as `proportional_attention_bias(sizes)`.

    Parameters: `r` (tokens removed per call, >= 0; capped at half the non-special tokens).
    The metric is `keys` when given (the official choice), else `features`. Special tokens
    (ToMe's class token, a distillation token) lead, never merge and receive nothing.
    `source` of a merged token is the slot of its partner; `positions` the partner's own index.

    Differences from the official code:
    - Output order: the official code returns [unmerged A tokens, B tokens]; here every kept
      token stays in positional order (merging is otherwise identical), so positional
      embeddings and RoPE ids stay meaningful.
    - Ties in the ranking of matches go to the lowest A index (the official argsort does not
      promise an order).
    - Inside `reproductions.hf` on Gemma 3, Idefics3, InternVL and the Qwen ViTs (Qwen2-VL,
      Qwen2.5-VL, Qwen2.5-Omni, Qwen3-VL), whose encoders pool fixed blocks of patches into each
      LLM token (InternVL: the pixel shuffle's 2x2; Qwen: each 2x2 merge unit), the tokens ToMe
      matches and merges are those blocks (their patches concatenated, keys averaged, each patch
      weighted by its block's size in the proportional attention; InternViT's [CLS] a special
      token), so that each merged block leaves one LLM token; the official code merges single
      patches of a classification ViT. In the Qwen ViTs the keys are those
      the attention uses (after the 2-D rotary embedding), merging stays within each image, the
      sets A / B alternate in the order the blocks see the units (Qwen2.5-VL: window order), and
      a merged unit attends in its destination's window.
    """

    r: int = 8

    paper = "bolya2022token"
    mechanisms = ("similarity",)
    stage = "encoder"
    modality = ("image",)
    uses = ("keys",)
    budget_knob = "r"
    identity = {"r": 0}
    example = {"r": 16}
    benchmark = {"r": 32}

    def __post_init__(self) -> None:
        check_int("r", self.r, 0, "pass the number of tokens to merge, an int >= 0")

    def output_count(self, tokens: Tokens) -> int:
        return tokens.count - min(self.r, (tokens.count - tokens.special) // 2)

    def compress(self, tokens: Tokens) -> Compression:
        metric = tokens.features if tokens.keys is None else tokens.keys
        if self.r == 0:
            return identity(tokens)
        matching = bipartite_soft_matching(metric, self.r, tokens.special)
        return merge(tokens, matching.source, matching.count, positions=matching.positions)
