"""Spatial pooling of the token grid: the plain downsampling baseline (and LLaVA-OneVision's)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..interface import Compression, Method, Tokens, check_int
from ..ops import (
    frame_grid,
    identity,
    merge,
    window_bookkeeping,
    window_source,
    work_dtype,
)
from ..registry import register

MODES = ("avg", "max", "bilinear")


@register("pool")
@dataclass
class Pool(Method):
    """Downsample the token grid by `stride` per spatial dim, frame by frame.

    The baseline every token-compression paper beats, and the projector pooling of
    LLaVA-OneVision ("LLaVA-OneVision: Easy Visual Task Transfer", TMLR 2025, arXiv 2408.03326),
    which resizes each frame's grid bilinearly to ceil(H/2) x ceil(W/2). A baseline, so it
    links to no paper (`paper = None`).

    Parameters: `stride` (window side, >= 1; 1 returns the input), `mode`:
    - "avg": the plain mean of each stride x stride window (input sizes do not weight it);
    - "max": the per-channel maximum of each window;
    - "bilinear": `F.interpolate(size=(ceil(H/stride), ceil(W/stride)), mode="bilinear",
      align_corners=False)`, LLaVA-OneVision's `mm_spatial_pool_mode="bilinear"`.
    Windows tile the grid in ceil mode: the last row / column of windows may be partial and
    pools the tokens it has, so no token is lost. Every mode reports the same bookkeeping:
    `source` maps each token to its window, `sizes` sum the input sizes in the window,
    `positions` are the window's first (top-left) token. For "bilinear" the window is the
    output cell the token lies in (the nearest output sample); the feature itself is the
    bilinear sample, which for even grids and stride 2 equals the window mean. Layout (H, W)
    for an image, (T, H, W) for a video (each frame pooled on its own); special tokens pass
    through unchanged in front.

    Differences from the official code:
    LLaVA-OneVision's "average" and "max" modes call `F.avg_pool2d` / `F.max_pool2d` with
    the default floor mode, which drops the last row and column of an odd grid (27 x 27 ->
    13 x 13); here they are kept (ceil mode, 27 x 27 -> 14 x 14, the same grid as "bilinear").
    On grids divisible by the stride both agree. "bilinear" is unchanged.
    """

    stride: int = 2
    mode: str = "avg"

    mechanisms = ("transformation",)
    modality = ("image", "video")
    budget_knob = "stride"
    grid = True
    copies = False  # a partial window's bilinear sample is not its token
    identity = {"stride": 1}
    example = {"stride": 2, "mode": "avg"}
    benchmark = {"stride": 2, "mode": "bilinear"}

    def __post_init__(self) -> None:
        check_int("stride", self.stride, 1, "pass a positive int window side")
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}: pass one of {', '.join(MODES)}")

    def output_count(self, tokens: Tokens) -> int:
        t, h, w = frame_grid(tokens, self.name)
        return tokens.special + t * math.ceil(h / self.stride) * math.ceil(w / self.stride)

    def compress(self, tokens: Tokens) -> Compression:
        grid = frame_grid(tokens, self.name)
        if self.stride == 1:
            return identity(tokens)
        source, count = window_source(tokens, grid, self.stride)
        x = tokens.features
        if self.mode == "avg":  # the plain window mean: every token weighs 1
            ones = torch.ones(x.shape[:2], dtype=work_dtype(x), device=x.device)
            return merge(tokens, source, count, weights=ones)
        if self.mode == "max":
            pooled = self._max(tokens, source, count)
        else:
            pooled = self._bilinear(tokens, grid)
        features = torch.cat([x[:, : tokens.special], pooled.to(x.dtype)], dim=1)
        return Compression(features, source, *window_bookkeeping(tokens, source, count))

    def _max(self, tokens: Tokens, source: Tensor, count: int) -> Tensor:
        x = tokens.features.to(work_dtype(tokens.features))
        b, n, d = x.shape
        fill = torch.full((b, count, d), -math.inf, dtype=x.dtype, device=x.device)
        pooled = fill.scatter_reduce(1, source.unsqueeze(-1).expand(b, n, d), x, reduce="amax")
        return pooled[:, tokens.special :]

    def _bilinear(self, tokens: Tokens, grid: tuple[int, int, int]) -> Tensor:
        t, h, w = grid
        x = tokens.features[:, tokens.special :].to(work_dtype(tokens.features))
        b, _, d = x.shape
        frames = x.reshape(b * t, h, w, d).permute(0, 3, 1, 2)
        size = (math.ceil(h / self.stride), math.ceil(w / self.stride))
        pooled = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
        return pooled.permute(0, 2, 3, 1).reshape(b, -1, d)
