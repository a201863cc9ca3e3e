"""STTM: quadtree spatial merging within each frame, then temporal merging of nested nodes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Compression, Method, Tokens, check_int, check_number
from ..ops import identity, l2_norms, slot_sizes, video_grid, work_dtype
from ..registry import register


def coarser(h: int, w: int) -> tuple[int, int]:
    """The next coarser grid: both sides halved, rounding up."""
    return (h + 1) // 2, (w + 1) // 2


def pyramid_sizes(h: int, w: int) -> list[tuple[int, int]]:
    """The (h, w) of every pyramid level, coarsest first, ending with the input grid.

    The released rule: halve both sides (ceil) while neither side equals 2. The released loop
    never ends on a 1 x 1 grid; here halving also stops once it no longer shrinks the grid.
    """
    sizes = [(h, w)]
    while h != 2 and w != 2:
        smaller = coarser(h, w)
        if smaller == (h, w):
            break
        h, w = smaller
        sizes.insert(0, smaller)
    return sizes


def halving_map(length: int, device: torch.device) -> Tensor:
    """(length,) the coarser cell of each cell along one side: an odd side pairs 1-2, 3-4, ...
    and leaves cell 0 alone (the released odd-size pooling keeps the first row / column as a
    1-wide strip); an even side pairs 0-1, 2-3, ..."""
    return (torch.arange(length, device=device) + length % 2) // 2


def side_parts(length: int) -> list[tuple[slice, slice, int]]:
    """The runs of one side that halve regularly: (cells, their coarser cells, cells per
    coarser cell). An odd side is its first cell alone, then pairs."""
    half = (length + 1) // 2
    if length % 2 == 0:
        return [(slice(0, length), slice(0, half), 2)]
    if length == 1:
        return [(slice(0, 1), slice(0, 1), 1)]
    return [(slice(0, 1), slice(0, 1), 1), (slice(1, length), slice(1, half), 2)]


def blocks(x: Tensor) -> list[tuple[Tensor, tuple[slice, slice], tuple[slice, slice]]]:
    """(F, h, w, ...) `x` cut into regular parts, each viewed (F, a, rows, b, cols, ...) with
    rows x cols cells per coarser node, with the cells' and the nodes' (row, col) slices."""
    f, h, w = x.shape[:3]
    parts = []
    for rs, prs, rf in side_parts(h):
        for cs, pcs, cf in side_parts(w):
            part = x[:, rs, cs]
            a, b = part.shape[1] // rf, part.shape[2] // cf
            parts.append((part.reshape(f, a, rf, b, cf, *x.shape[3:]), (rs, cs), (prs, pcs)))
    return parts


def pool(x: Tensor) -> Tensor:
    """(F, h', w', D) mean of each coarser node's children in (F, h, w, D) `x` (the released
    `avgpool_to_even_side_feature`: 2 x 2 blocks, 1-wide strips along the first row and column
    of an odd side, the top-left cell alone where both sides are odd)."""
    f, h, w, d = x.shape
    out = x.new_empty(f, *coarser(h, w), d)
    for part, _, (prs, pcs) in blocks(x):
        rf, cf = part.shape[2], part.shape[4]
        total = sum(part[:, :, r, :, c] for r in range(rf) for c in range(cf))
        out[:, prs, pcs] = total / (rf * cf)
    return out


def lowest_child_cosine(x: Tensor, inverse_norm: Tensor, parent: Tensor) -> Tensor:
    """(F, h', w') the lowest cosine similarity between a node of (F, h', w', D) unit `parent`
    and its children in (F, h, w, D) `x`, whose inverse norms are (F, h, w) `inverse_norm`."""
    out = parent.new_empty(parent.shape[:3])
    for (part, _, (prs, pcs)), (scale, _, _) in zip(blocks(x), blocks(inverse_norm), strict=True):
        node = parent[:, prs, pcs]
        cosines = [
            (part[:, :, r, :, c] * node).sum(dim=-1) * scale[:, :, r, :, c]
            for r in range(part.shape[2])
            for c in range(part.shape[4])
        ]
        out[:, prs, pcs] = torch.stack(cosines).amin(dim=0)
    return out


def inverse_norm(x: Tensor) -> Tensor:
    """1 / the norm of `x` along the last dim (norms clamped at 1e-12)."""
    return l2_norms(x).reciprocal()


@dataclass(frozen=True)
class _Level:
    """One pyramid level's geometry, relative to the input grid of H x W cells."""

    size: tuple[int, int]
    ancestor: Tensor  # (H * W,) each input cell's node at this level, flat in this level
    anchor: Tensor  # (H * W,) the flat input index of that node's top-left cell
    parent: Tensor | None  # (h * w,) each node's parent one level coarser (None at the root)


def build_levels(h: int, w: int, root_level: int, device: torch.device) -> list[_Level]:
    """Levels finest first, up to the root: `root_level` indexes `pyramid_sizes` (clamped)."""
    sizes = pyramid_sizes(h, w)
    chain = sizes[min(root_level, len(sizes) - 1) :][::-1]  # finest first
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    levels: list[_Level] = []
    for k, (lh, lw) in enumerate(chain):  # rows / cols: each input row's (col's) node row (col)
        first_row = torch.full((lh,), h, device=device).scatter_reduce(
            0, rows, torch.arange(h, device=device), "amin"
        )
        first_col = torch.full((lw,), w, device=device).scatter_reduce(
            0, cols, torch.arange(w, device=device), "amin"
        )
        parent = None
        if k + 1 < len(chain):
            row_map, col_map = halving_map(lh, device), halving_map(lw, device)
            parent = (row_map[:, None] * chain[k + 1][1] + col_map[None, :]).flatten()
        levels.append(
            _Level(
                size=(lh, lw),
                ancestor=(rows[:, None] * lw + cols[None, :]).flatten(),
                anchor=(first_row[rows][:, None] * w + first_col[cols][None, :]).flatten(),
                parent=parent,
            )
        )
        if parent is not None:
            rows, cols = row_map[rows], col_map[cols]
    return levels


def official_union(dst: Tensor, src: Tensor, nodes: int) -> Tensor:
    """(nodes,) the representative of each node: the released `get_merge_dst_idx_safe`.

    Min-label propagation over the pairs (dst, src) with pointer jumping, stopped as soon as
    every label points at itself. That is not always a full union-find: when two nodes of a frame
    both pair with one node of the next frame, the second of them can keep its own label.
    """
    rep = torch.arange(nodes, device=dst.device)
    while True:
        low = torch.minimum(rep[dst], rep[src])
        rep = rep.scatter_reduce(0, dst, low, "amin").scatter_reduce(0, src, low, "amin")
        rep = rep[rep]
        if torch.equal(rep, rep[rep]):
            return rep


@register("sttm")
@dataclass
class STTM(Method):
    """STTM: multi-granular spatial merging by a quadtree per frame, then temporal merging.

    "Multi-Granular Spatio-Temporal Token Merging for Training-Free Acceleration of Video LLMs"
    (Jeongseok Hyun, Sukjun Hwang, Su Ho Han, Taeoh Kim, Inwoong Lee, Dongyoon Wee, Joon-Young
    Lee, Seon Joo Kim, Minho Shim; ICCV 2025, arXiv 2507.07990), on the video tokens laid out
    (T, H, W), as the released `quadtree_build_video` (fast temporal variant) computes them:

    - Pyramid: each frame is pooled to coarser grids by halving both sides (ceil; an odd side
      keeps its first row / column as 1-wide strips and pairs the rest) while neither side is 2;
      `root_level` picks the coarsest level used (0 = the 2-sided one, 1 = the next finer: the
      released configs' 1, e.g. 4 x 4 for a 14 x 14 frame). A node's feature is the plain mean of
      its children's features (recursively, so not area-weighted where children differ in size).
    - Spatial quadtree: from the root down, a node stops (becomes one output token) when every
      one of its children has cosine similarity at least `threshold` with it; otherwise its
      children are examined in turn; cells of the input grid that are reached are output.
    - Temporal merging: every output node of frame t is paired with each spatially nested
      (containing or contained) node of frame t + 1; pairs with cosine similarity of the node
      features at least `temporal_threshold` are joined by the released min-label propagation
      (`official_union`, kept as released although it is not a complete union-find), each
      group merging into its earliest node (lowest top-left index).
    - A merged token's feature is the plain mean of its nodes' features; it stands at the
      top-left input token of its earliest node (`positions`), and outputs come in that order.

    There is no `keep` budget: the number of output tokens depends on the data (the released
    "50%" / "30%" settings are averages reached by tuning the thresholds per model and
    benchmark), so `output_count` is None and the rows of a batch must compress to the same
    count (else a ValueError asks for one video at a time; the released code takes one video).

    Parameters: `threshold` (0.8; None: no spatial merging), `temporal_threshold` (0.6; None:
    no temporal merging, the released code's values <= 0), `root_level` (1). The released
    configs use 0.75-0.95 and 0.5-0.9 (0.8 / 0.6 is LLaVA-Video-7B's "30%" setting on VNBench).
    Both None returns the input. Special tokens pass through in front, never merged. Reads no
    signal.

    Differences from the official code:
    - The released configs of the 7B models merge the hidden states entering LLM layer 2
      (`sa_start_layer_idx 2`); the 72B config merges the LLM input (layer 0). This projector
      stage is the latter: it merges the tokens entering the LLM.
    - The released stop test also compares a node of a 1-wide strip (odd side) with two padding
      children that index the frame's top-left cell (the valid-child mask it builds is only
      used for splitting); here only a node's real children count. This changes results on
      grids with an odd level, e.g. LLaVA-Video's 14 x 14 (14 -> 7 -> 4). With that test
      patched, the released functions and this class agreed exactly (nodes, positions, sizes;
      features to 1e-10) on 729 float64 cases: 9 grids (odd, even, non-square), root levels
      0-2, spatial thresholds 0.5 / 0.8 / 0.9, temporal off / 0.5 / 0.8.
    - Computed in float32 (float64 kept), where the released code pools and averages in the
      model's dtype (bfloat16); cosines use a 1e-12 norm clamp (released: F.cosine_similarity
      spatially, norm + 1e-8 temporally).
    - A `root_level` beyond the pyramid (a frame with a side of 2) crashes the released code
      (IndexError); here the root is then the input grid (no spatial merging). Grids with a side
      of 1 crash (or never terminate) there and are handled by the same halving rule here.
    - Input `sizes` do not weight the means (the released default `weighted_avg=False` is
      unweighted); output `sizes` count the input sizes. The options left at their released
      defaults are not offered: `weighted_avg`, per-head similarity (`sim_per_head`) and the
      slow temporal variant (`sttm_slow_ver`, one most-similar predecessor per node).
    - On LLaVA-Video with `mm_newline_position grid` the released code reshapes the newline
      tokens into an extra grid column; here the integration's `layout` decides the grid.
    """

    threshold: float | None = 0.8
    temporal_threshold: float | None = 0.6
    root_level: int = 1

    stage = "projector"
    modality = ("video",)
    grid = True
    mechanisms = ("similarity",)
    paper = "hyun2025multi"
    copies = True
    identity = {"threshold": None, "temporal_threshold": None}
    example = {"threshold": -1.0, "temporal_threshold": 0.9, "root_level": 0}
    benchmark = {"threshold": 0.8, "temporal_threshold": 0.6, "root_level": 1}

    def __post_init__(self) -> None:
        if self.threshold is not None:
            hint = (
                "pass a cosine similarity in [-1, 1] (a node merges when all its children are "
                "at least this similar to it), or None for no spatial merging"
            )
            check_number("threshold", self.threshold, -1.0, 1.0, hint=hint)
        if self.temporal_threshold is not None:
            hint = (
                "pass a cosine similarity in (0, 1], or None for no temporal merging (the "
                "released code disables it for values <= 0)"
            )
            check_number(
                "temporal_threshold", self.temporal_threshold, 0.0, 1.0, open_low=True, hint=hint
            )
        hint = (
            "pass a pyramid level >= 0 (0 = the coarsest, 2-sided grid; the released configs use 1)"
        )
        check_int("root_level", self.root_level, 0, hint)

    def output_count(self, tokens: Tokens) -> int | None:
        if self.threshold is None and self.temporal_threshold is None:
            return tokens.count
        return None  # depends on how many nodes merge

    def compress(self, tokens: Tokens) -> Compression:
        t, h, w = video_grid(tokens, self.name)
        if self.threshold is None and self.temporal_threshold is None:
            return identity(tokens)
        b, special, device = tokens.batch, tokens.special, tokens.features.device
        x = tokens.features[:, special:].to(work_dtype(tokens.features))
        root = self.root_level if self.threshold is not None else h + w  # past the pyramid: none
        levels = build_levels(h, w, root, device)
        owner, pyramid, scales = self._quadtree(x.reshape(b * t, h, w, -1), levels)
        rows = [
            self._row(owner[r * t : (r + 1) * t], pyramid, scales, levels, r, t) for r in range(b)
        ]
        counts = sorted({row[0].shape[0] for row in rows})
        if len(counts) > 1:
            raise ValueError(
                f"the videos of this batch merge to different token counts "
                f"{[special + c for c in counts]} (sttm's count depends on the data): "
                "pass one video at a time"
            )
        count = special + counts[0]
        if count == tokens.count:
            return identity(tokens)
        features = tokens.features.new_empty(b, count, tokens.features.shape[-1])
        features[:, :special] = tokens.features[:, :special]
        for r, (_, merged, _) in enumerate(rows):
            features[r, special:] = merged
        lead = torch.arange(special, device=device)
        source = torch.stack([torch.cat([lead, slot + special]) for _, _, slot in rows])
        return Compression(
            features=features,
            source=source,
            positions=torch.stack([torch.cat([lead, at + special]) for at, _, _ in rows]),
            sizes=slot_sizes(tokens, source, count),
        )

    def _quadtree(
        self, x: Tensor, levels: list[_Level]
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Each input cell's output level (F, H * W), and the pyramid's (F, h, w, D) features
        and (F, h, w) inverse norms, finest first.

        From the root down: an active node stops when every child is at least `threshold`
        similar to it (its cells then belong to it); the children of the others become active.
        """
        frames, device = x.shape[0], x.device
        feats = [x]
        for _ in levels[1:]:
            feats.append(pool(feats[-1]))
        scales = [inverse_norm(f) for f in feats]
        top = len(levels) - 1
        active = torch.ones(frames, math.prod(levels[top].size), dtype=torch.bool, device=device)
        owner = torch.zeros(frames, x.shape[1] * x.shape[2], dtype=torch.long, device=device)
        for k in range(top, 0, -1):
            parent = feats[k] * scales[k].unsqueeze(-1)
            lowest = lowest_child_cosine(feats[k - 1], scales[k - 1], parent)
            stop = active & (lowest.flatten(1) >= self.threshold)
            owner[stop[:, levels[k].ancestor]] = k
            active = (active & ~stop)[:, levels[k - 1].parent]
        return owner, feats, scales

    def _row(
        self,
        owner: Tensor,
        pyramid: list[Tensor],
        scales: list[Tensor],
        levels: list[_Level],
        row: int,
        t: int,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One video: (positions, features, source) of its merged tokens, without specials."""
        cells, device = owner.shape[1], owner.device
        anchors = torch.stack([lv.anchor for lv in levels]).gather(0, owner)  # (T, H * W)
        anchors = anchors + torch.arange(t, device=device)[:, None] * cells
        nodes, node_of = torch.unique(anchors.flatten(), return_inverse=True)  # sequence order
        count = nodes.shape[0]
        # every node's feature (and inverse norm), read from its level at its top-left cell
        frame, cell = nodes // cells, nodes % cells
        level = owner[frame, cell]
        dim = pyramid[0].shape[-1]
        leaf = (row * t + frame) * cells + cell  # the input cell, right for level-0 nodes
        features = pyramid[0].reshape(-1, dim).index_select(0, leaf)
        scale = scales[0].reshape(-1).index_select(0, leaf)
        for k in range(1, len(levels)):
            at = (level == k).nonzero().squeeze(1)
            index = (row * t + frame[at]) * math.prod(levels[k].size) + levels[k].ancestor[cell[at]]
            features.index_copy_(0, at, pyramid[k].reshape(-1, dim).index_select(0, index))
            scale.index_copy_(0, at, scales[k].reshape(-1).index_select(0, index))
        if self.temporal_threshold is None or t == 1:
            return nodes, features, node_of
        grid = node_of.reshape(t, cells)
        pairs = torch.unique(grid[:-1].flatten() * count + grid[1:].flatten())
        dst, src = pairs // count, pairs % count
        dot = (features.index_select(0, dst) * features.index_select(0, src)).sum(dim=-1)
        similar = dot * scale[dst] * scale[src] >= self.temporal_threshold
        if not similar.any():
            return nodes, features, node_of
        rep = official_union(dst[similar], src[similar], count)
        groups, slot_of = torch.unique(rep, return_inverse=True)
        merged = features.new_zeros(groups.shape[0], dim).index_add_(0, slot_of, features)
        members = torch.bincount(slot_of, minlength=groups.shape[0]).to(features.dtype)
        return nodes[groups], merged / members[:, None], slot_of[node_of]
