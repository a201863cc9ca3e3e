"""A-ToMe: adjacent token merging for speech encoders (transducers)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Compression, Method, Tokens, check_int, check_number
from ..ops import gather, identity, input_sizes, l2_normalize, order, work_dtype
from ..registry import register


@register("atome")
@dataclass
class AdjacentTokenMerging(Method):
    """Merge the most similar adjacent frame pairs, keeping the temporal order.

    Paper: "Accelerating Transducers through Adjacent Token Merging" (Li, Wu, Li, Liu,
    Interspeech 2023, arXiv 2306.16009). Inside an encoder layer, the cosine similarity of the
    attention keys of each frame and the next is computed; similar neighbours are merged by a
    size-weighted average (ToMe's merge), so an utterance gets an adaptive frame rate.

    Candidate pairs are the non-overlapping pairs (0, 1), (2, 3), ... of the ordinary tokens (the
    scores of the odd-start pairs (1, 2), (3, 4), ... are masked, so no frame joins two pairs in
    one module and a merged token never spans more than two frames per module). Then either
    - `r` (fixed merge ratio): the `r` highest-scoring pairs merge (an int count of pairs, or a
      float fraction of the ordinary tokens in (0, 0.5], floor(r * (N - special)) pairs), or
    - `threshold` (fixed merge threshold): every candidate pair with similarity > threshold merges
      (a data-dependent count: rows of a batch must then agree on it).
    Pass exactly one. A merged token is the size-weighted mean of its two frames, stands at the
    position of the first, and has size = their summed sizes. Special tokens are never merged.
    Ties between equal scores go to the earlier pair.

    Signal: `keys` (B, N, Dk), the keys of the encoder layer the module sits in.

    Differences from the official code: none known, but unverified: no released A-ToMe code was
    found to check against, so the pairing rule (only the pairs (2j, 2j + 1) are candidates, the
    scores of odd-start pairs being masked) is our reading of the paper and should be checked
    against the authors' code when it can be read.
    """

    r: int | float | None = None
    threshold: float | None = None

    paper = "li2023accelerating"
    stage = "encoder"
    modality = ("audio",)
    budget_knob = "r"
    mechanisms = ("similarity",)
    needs = ("keys",)
    identity = {"r": 0}
    example = {"r": 8}
    benchmark = {"r": 0.2}

    def __post_init__(self) -> None:
        if (self.r is None) == (self.threshold is None):
            raise ValueError(
                "atome needs exactly one of r (how many adjacent pairs merge) or threshold "
                f"(merge every pair more similar than it); got r={self.r!r}, threshold={self.threshold!r}"
            )
        if isinstance(self.r, float):
            hint = "a float r is a fraction of the tokens in (0, 0.5]"
            check_number("r", self.r, 0.0, 0.5, open_low=True, hint=hint)
        elif self.r is not None:
            hint = "pass a non-negative int number of pairs to merge, or a float in (0, 0.5]"
            check_int("r", self.r, 0, hint)
        if self.threshold is not None:
            hint = "pass a cosine similarity in [-1, 1]"
            check_number("threshold", self.threshold, -1.0, 1.0, hint=hint)

    def pairs(self, tokens: Tokens) -> int | None:
        """How many pairs merge with the fixed ratio (None with a threshold)."""
        if self.r is None:
            return None
        ordinary = tokens.count - tokens.special
        count = self.r if isinstance(self.r, int) else math.floor(self.r * ordinary)
        if count > ordinary // 2:
            raise ValueError(
                f"r={self.r!r} asks for {count} merges, but {ordinary} tokens hold only "
                f"{ordinary // 2} non-overlapping adjacent pairs: pass r <= {ordinary // 2}"
            )
        return count

    def output_count(self, tokens: Tokens) -> int | None:
        count = self.pairs(tokens)
        return None if count is None else tokens.count - count

    def compress(self, tokens: Tokens) -> Compression:
        special, n = tokens.special, tokens.count
        count = self.pairs(tokens)
        if count == 0:
            return identity(tokens)
        scores = adjacent_pair_scores(tokens.keys[:, special:])  # (B, pairs)
        if count is not None:
            chosen = order(scores)[:, :count]
            merged = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, chosen, True)
        else:
            merged = scores > self.threshold
        # the second frame of a merged pair joins the first one's slot
        joins = torch.zeros(tokens.batch, n, dtype=torch.bool, device=scores.device)
        joins[:, special + 1 : special + 1 + 2 * scores.shape[1] : 2] = merged
        outputs = (~joins).sum(dim=1)
        if not (outputs == outputs[0]).all():
            raise ValueError(
                f"atome(threshold={self.threshold}) keeps {outputs.tolist()} tokens in the rows of "
                "this batch; outputs must be rectangular: pass one row at a time or a fixed r"
            )
        return merge_pairs(tokens, joins, int(outputs[0]))


def merge_pairs(tokens: Tokens, joins: Tensor, count: int) -> Compression:
    """Size-weighted merge where each output is a token plus, where `joins`, the next one.

    The same result as `ops.merge` with slots = cumsum(~joins) - 1, without its (B, N, D) scatter:
    every slot holds one token or two neighbours, so only the merged rows are computed and the
    others are copied unchanged.
    """
    x = tokens.features
    b, n = joins.shape
    dtype = work_dtype(x)
    sizes = input_sizes(tokens)
    first = (~joins).nonzero()[:, 1].reshape(b, count)
    second = (first + 1).clamp(max=n - 1)
    paired = joins.gather(1, second) & (first + 1 < n)
    features = gather(x, first)  # unmerged tokens are copied as they are
    pick = paired.reshape(-1).nonzero().squeeze(1)  # flat (b * count + k) of the merged slots
    if pick.numel():
        flat_first = (first + torch.arange(b, device=x.device).unsqueeze(1) * n).reshape(-1)[pick]
        flat_x, flat_w = x.reshape(b * n, -1), sizes.reshape(-1).to(dtype)
        w1, w2 = flat_w[flat_first].unsqueeze(1), flat_w[flat_first + 1].unsqueeze(1)
        a = flat_x.index_select(0, flat_first).to(dtype)
        c = flat_x.index_select(0, flat_first + 1).to(dtype)
        features = features.reshape(b * count, -1).index_copy(
            0, pick, ((a * w1 + c * w2) / (w1 + w2)).to(x.dtype)
        )
    return Compression(
        features=features.reshape(b, count, -1),
        source=(~joins).long().cumsum(dim=1) - 1,
        positions=first,
        sizes=sizes.gather(1, first) + sizes.gather(1, second) * paired,
    )


def adjacent_pair_scores(keys: Tensor) -> Tensor:
    """(B, N // 2) cosine similarity of the keys of the pairs (0, 1), (2, 3), ... of (B, N, Dk)."""
    k = l2_normalize(keys.to(work_dtype(keys)))
    pairs = k.shape[1] // 2
    return (k[:, 0 : 2 * pairs : 2] * k[:, 1 : 2 * pairs : 2]).sum(dim=-1)
