"""MustDrop: merge similar windows in the vision encoder, filter by text attention in the LLM."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..interface import Compression, Method, Tokens, check_int, check_ints, check_number
from ..ops import (
    cosine_matrix,
    identity,
    input_sizes,
    merge,
    order,
    select,
    top_k,
    window_slots,
    with_special,
)
from ..registry import register


def window_similarity(x: Tensor, grid: tuple[int, int], window: int) -> tuple[Tensor, Tensor]:
    """The released `conditional_pooling` scores: for (B, H*W, D) tokens on a row-major `grid`
    cut into `window` x `window` cells (row-major, H and W multiples of `window`), each cell's
    mean cosine over its k (k - 1) ordered pairs of distinct tokens (B, cells), and each cell's
    token indices (cells, k), row-major inside the cell."""
    slots, _ = window_slots(grid, (window, window))
    members = order(slots.float(), descending=False).reshape(-1, window * window).to(x.device)
    cells = x[:, members]  # (B, cells, k, D)
    b, c, k, d = cells.shape
    sims = cosine_matrix(cells.reshape(b * c, k, d)).reshape(b, c, k, k)
    off = sims.sum(dim=(-1, -2)) - sims.diagonal(dim1=-2, dim2=-1).sum(-1)
    return off / (k * (k - 1)), members


@dataclass
class MustDropKeys(Method):
    """MustDrop's key set, picked in encoder layer `MustDropMerge.key_layer`: the ceil(fraction x
    n) tokens (n: the tokens after the special ones) the [CLS] attends to most, averaged over
    heads, get score 1, the others 0; the tokens pass unchanged. The scores follow the tokens
    to the LLM, where `MustDropFilter` never drops a token of score > 0. Official: the `idx ==
    23` branch of `custom_forward` (`clip_encoder.py`: `math.ceil(0.08 * (N - 1))`, `topk` of
    `attn[:, :, 0, 1:].mean(dim=1)`)."""

    key_fraction: float = 0.08

    stage = "encoder"
    paper = "liu2024multi"
    mechanisms = ("attention",)
    needs = ("cls_attention",)
    example = {"key_fraction": 0.25}

    def __post_init__(self) -> None:
        check_number("key_fraction", self.key_fraction, 0.0, 1.0, hint="pass the share of tokens in the key set, in [0, 1]")

    def compress(self, tokens: Tokens) -> Compression:
        s, b, n = tokens.special, tokens.batch, tokens.count
        attention = tokens.cls_attention[..., s:]
        mean = attention.to(torch.promote_types(attention.dtype, torch.float32)).mean(dim=1)
        count = math.ceil(self.key_fraction * (n - s))
        scores = torch.zeros(b, n, dtype=tokens.features.dtype, device=tokens.features.device)
        scores.scatter_(1, top_k(mean, count) + s, 1.0)
        return replace(identity(tokens), scores=scores)


@dataclass
class MustDropMerge(Method):
    """MustDrop's spatial merging in the vision encoder: similar windows become one token.

    Part 1 of MustDrop (see `mustdrop`), inside encoder layer `merge_layer` (the released 0).
    The patch tokens (the grid of `layout`, after the special [CLS]) are cut into `window` x
    `window` cells; a cell's score is the mean cosine similarity of its tokens over the k (k - 1)
    ordered pairs of distinct tokens (k = window^2). r = the number of cells scoring >=
    `threshold`, the smallest over the batch (the released `torch.ge(...).sum(dim=1).min()`);
    each row merges its r best cells, each into one token: the size-weighted mean of its k
    tokens (`merge_wavg`), standing at the cell's last (bottom-right) token. Output order, as
    released: the [CLS], the r merged tokens in score order, then the other tokens in index
    order. Official: `conditional_pooling` and `merge_wavg` in
    `llava/model/multimodal_encoder/local_merge.py`, called after layer 0 of `CLIPEncoder`
    (`clip_encoder.py`, `custom_forward`, `conditional_pooling(hidden_states, 0.8, (3, 3))`).
    In encoder layer `key_layer` it picks the key set instead (`MustDropKeys`, on the merged
    tokens, from that layer's `cls_attention`), which the llm part protects; a call of its own
    is the merge.

    Parameters: `threshold` 0.8 (above 1 merges nothing), `window` 3, `merge_layer` 0;
    `key_layer` 23 (CLIP-L's last, whose output LLaVA-1.5 does not read; it must exist in the
    encoder), `key_fraction` 0.08.

    Differences from the official code:
    - In a model, the encoder stage merges between layer `merge_layer`'s attention and its MLP
      (the released code merges after the MLP), and the later layers add ToMe's proportional
      attention log(size) for the merged tokens (the released code does not).
    - Ties in the cell scores go to the lowest cell (`topk` leaves them unspecified); scores are
      computed in float32 at least. Grids need not be square (the released code asserts it).
    - Any number of leading special tokens pass through (the released code assumes one [CLS]).
    - The key set's [CLS] attention is that of the stage's layer `key_layer`, so it includes
      the proportional attention term above (the released layer 23 has none); ties go to the
      lowest index.
    """

    threshold: float = 0.8
    window: int = 3
    merge_layer: int = 0
    key_layer: int = 23
    key_fraction: float = 0.08

    stage = "encoder"
    paper = "liu2024multi"
    mechanisms = ("similarity", "attention")
    #: by the key step in layer `key_layer` (the merge reads none)
    needs = ("cls_attention",)
    grid = True
    copies = False
    #: r is the smallest count over the batch
    batch_independent = False
    identity = {"threshold": 2.0}
    example = {"threshold": 0.0, "window": 2, "merge_layer": 0, "key_layer": 2, "key_fraction": 0.25}

    def __post_init__(self) -> None:
        check_number("threshold", self.threshold, hint="pass a cosine threshold (above 1 merges nothing)")
        check_int("window", self.window, 2, "pass the cell side, an int >= 2 (the released 3)")
        check_int("merge_layer", self.merge_layer, 0, "pass the encoder layer that merges, an int >= 0")
        check_int(
            "key_layer", self.key_layer, self.merge_layer + 1,
            "pass the encoder layer whose [CLS] attention picks the key set, after merge_layer (released: 23)",
        )
        MustDropKeys(self.key_fraction)

    def check_inputs(self, tokens: Tokens) -> None:
        if tokens.layout is None or len(tokens.layout) != 2:
            raise ValueError("mustdrop.encoder merges cells of the image grid: pass layout=(H, W)")
        if any(side % self.window for side in tokens.layout):
            raise ValueError(
                f"layout {tokens.layout} does not split into {self.window} x {self.window} cells: "
                "pass a grid whose sides are multiples of window"
            )

    def output_count(self, tokens: Tokens) -> int | None:
        return None  # the threshold decides

    def encoder_step(self, index: int, count: int, feature: int) -> Method | None:
        if index == self.key_layer:
            return MustDropKeys(self.key_fraction)
        return self if index == self.merge_layer else None

    def compress(self, tokens: Tokens) -> Compression:
        s, x = tokens.special, tokens.features
        scores, members = window_similarity(x[:, s:], tokens.layout, self.window)
        r = int((scores >= self.threshold).sum(dim=1).min())
        b, n = tokens.batch, tokens.count
        best = order(scores)[:, :r]  # (B, r) cells, best first
        picked = torch.zeros(scores.shape, dtype=torch.bool, device=x.device).scatter_(1, best, True)
        cell = torch.empty(n - s, dtype=torch.long, device=x.device)
        cell[members.flatten()] = torch.arange(members.shape[0], device=x.device).repeat_interleave(members.shape[1])
        rank = torch.full(scores.shape, -1, dtype=torch.long, device=x.device)
        rank.scatter_(1, best, torch.arange(r, device=x.device).expand(b, r))
        merged = picked[:, cell]  # (B, N - s): the token's cell merges
        rest = torch.cumsum(~merged, dim=1) - 1 + r  # the others keep their order after the r
        source = torch.where(merged, rank[:, cell], rest) + s
        source = torch.cat([torch.arange(s, device=x.device).expand(b, s), source], dim=1)
        count = s + r + (n - s) - r * members.shape[1]
        last = members[:, -1] + s  # each cell's bottom-right token
        positions = torch.cat([torch.arange(s, device=x.device).expand(b, s), last[best]], dim=1)
        others = (~merged).nonzero()[:, 1].reshape(b, -1) + s
        return merge(tokens, source, count, input_sizes(tokens), torch.cat([positions, others], dim=1))


@dataclass
class MustDropFilter(Method):
    """MustDrop's dual-attention filtering in the LLM: drop the media tokens the text ignores.

    Part 2 of MustDrop (see `mustdrop`), at each decoder layer K of `layers`, on the media
    tokens still present: the attention that every row after the media (the prompt) pays each
    token at layer K - 1, averaged over heads, gives per token its total over those rows and
    its largest row. A token is dropped where both are small: its total below `global_threshold`
    x the sum of all tokens' totals, and its largest row below `individual_threshold`; but never
    a token of the key set (`scores` > 0: the encoder part's `MustDropKeys`). The others stay, in
    their order. Layers >= K see the kept tokens. After the prefill the KV cache of every layer
    from K_1 - 1 on holds only the tokens kept after the last step (`decoding_rows`), so
    decoding steps there see only those; layers < K_1 - 1 keep every token. Official:
    `LlamaDynamicvitModel.forward` and `dual_attention_filter` in
    `llava/model/language_model/modelling_sparse_llama.py` (`pruning_layers = [2, 6, 10, 14]`,
    the layers whose attention is read; the tokens leave after each; the "Sparse kv cache
    (decoding stage)" block cuts layers 2-14 to the final tokens, 15-31 hold only those anyway).

    Parameters: `layers` (3, 7, 11, 15); `global_threshold` and `individual_threshold`: the
    released scripts' pairs (0.001, 0.001) for 192 tokens, (0.0012, 0.001) for 128, (0.011,
    0.01) for 64; the released defaults (1.0, 0.0) drop nothing. Reads `attention` and
    `scores` (the key set, carried from the encoder part through the projector and the earlier
    steps).

    Differences from the official code:
    - The released code reads batch row 0 and applies its decision to every row; here a token
      is dropped only where every row drops it (one count per batch), and a row's key set is
      its own.
    - Position ids: the released code numbers the shorter sequence 0, 1, ... after every step
      and gives a decoding token, at each layer, the length of that layer's cut cache as its
      position; here kept tokens keep their original ids and a decoding token its own.
    - The cut cache is masked rather than shortened (the entries stay; decoding steps see only
      the kept ones): the same attention.
    - Scores are computed in float32 at least.
    """

    layers: tuple[int, ...] = (3, 7, 11, 15)
    global_threshold: float = 0.001
    individual_threshold: float = 0.001

    stage = "llm"
    paper = "liu2024multi"
    mechanisms = ("attention",)
    needs = ("attention", "scores")
    reads_features = False
    decoding_rows = "kept_from_read"
    batch_independent = False
    identity = {"individual_threshold": 0.0}
    example = {"layers": (1, 2), "global_threshold": 0.02, "individual_threshold": 0.05}
    benchmark = {"global_threshold": 0.001, "individual_threshold": 0.001}

    def __post_init__(self) -> None:
        hint = "pass the decoder layers K the kept tokens start at, increasing ints >= 1 (released: (3, 7, 11, 15))"
        self.layers = check_ints("layers", self.layers, 1, hint, increasing=True)
        check_number("global_threshold", self.global_threshold, 0.0, hint="pass a share of the total attention >= 0")
        check_number("individual_threshold", self.individual_threshold, 0.0, hint="pass an attention value >= 0")

    def output_count(self, tokens: Tokens) -> int | None:
        return None  # the attention decides

    def decoder_layers(self) -> tuple[int, ...]:
        return self.layers

    def compress(self, tokens: Tokens) -> Compression:
        s = tokens.special
        attention = tokens.attention[..., s:].to(torch.promote_types(tokens.attention.dtype, torch.float32))
        rows = attention.mean(dim=1)  # (B, M, N - s)
        total = rows.sum(dim=1)
        dropped = (total < total.sum(dim=1, keepdim=True) * self.global_threshold) & (
            rows.amax(dim=1) < self.individual_threshold
        ) & (tokens.scores[:, s:] <= 0)
        kept = (~dropped.all(dim=0)).nonzero().squeeze(1)
        return select(tokens, with_special(tokens, kept.expand(tokens.batch, -1) + s))


@register("mustdrop")
@dataclass
class MustDrop(Method):
    """MustDrop: merge similar neighbouring patches in the vision encoder, then drop inside the
    LLM the media tokens the prompt pays little attention to, except a key set the encoder's
    [CLS] picked; decoding steps see only the tokens kept.

    "Multi-Stage Vision Token Dropping: Towards Efficient Multimodal Large Language Model" (Ting
    Liu, Liangtao Shi, Richang Hong, Yue Hu, Quanjun Yin, Linfeng Zhang; arXiv preprint, 2024,
    arXiv 2411.10803), as released for LLaVA-1.5 (`liuting20/MustDrop`). Parts, one per stage:
    `mustdrop.encoder` (`MustDropMerge`: cells of `window` x `window` patches whose mean cosine
    reaches `threshold` become one token, after encoder layer 0; in layer `key_layer` the
    ceil(`key_fraction` x n) tokens its [CLS] attends to most form the key set) and
    `mustdrop.llm` (`MustDropFilter`: at decoder layers 3, 7, 11 and 15, tokens outside the key
    set whose total and largest text attention are both below their thresholds leave; after
    the prefill the cache of layers >= 2 holds only the tokens kept at the end). Signals: the
    encoder part reads `cls_attention` (an encoder with a [CLS]: CLIP), the llm part
    `attention` and the key set as `scores`.

    Differences from the official code: those of its parts (see each).
    """

    threshold: float = 0.8
    window: int = 3
    merge_layer: int = 0
    key_layer: int = 23
    key_fraction: float = 0.08
    layers: tuple[int, ...] = (3, 7, 11, 15)
    global_threshold: float = 0.001
    individual_threshold: float = 0.001

    paper = "liu2024multi"
    parts_of = (MustDropMerge, MustDropFilter)
    benchmark = {"threshold": 0.8, "global_threshold": 0.001, "individual_threshold": 0.001}

    def __post_init__(self) -> None:
        self.parts()  # each part checks its own hyperparameters


__all__ = ["MustDrop", "MustDropFilter", "MustDropKeys", "MustDropMerge", "window_similarity"]
