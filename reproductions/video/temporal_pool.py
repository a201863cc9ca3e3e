"""PLLaVA's adaptive spatio-temporal average pooling of the (T, H, W) video token grid."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Compression, Method, Tokens, check_ints
from ..ops import identity, merge, slot_sizes, video_grid, window_slots, work_dtype
from ..registry import register


def adaptive_windows(length: int, out: int) -> list[tuple[int, int]]:
    """[start, end) of each of `out` adaptive-pooling windows over `length` cells.

    The rule of `torch.nn.AdaptiveAvgPool*d`: start = floor(k * L / K), end = ceil((k+1) * L / K),
    so windows overlap by one cell when K does not divide L.
    """
    return [((k * length) // out, -(-((k + 1) * length) // out)) for k in range(out)]


def averaging_matrix(windows: list[tuple[int, int]], length: int, dtype: torch.dtype) -> Tensor:
    """(K, L) matrix whose row k averages the cells of window k."""
    matrix = torch.zeros(len(windows), length, dtype=dtype)
    for k, (start, end) in enumerate(windows):
        matrix[k, start:end] = 1.0 / (end - start)
    return matrix


def partition_slots(windows: list[tuple[int, int]], length: int) -> Tensor:
    """(L,) the window each cell is booked to: the last window that starts at or before it.

    Overlapping adaptive windows share a cell; `source` must name one slot per token, so the
    cell goes to the later window (every window then owns at least its own first cell).
    """
    starts = torch.tensor([start for start, _ in windows])
    return torch.searchsorted(starts, torch.arange(length), right=True) - 1


#: the pooled grid of PLLaVA's released models (`pooling_shape` 16 x 12 x 12)
PLLAVA_SIZE = (16, 12, 12)


@register("temporal_pool")
@dataclass
class TemporalPool(Method):
    """Average-pool the (T, H, W) video token grid to `size` = (T', H', W') (or by `stride`).

    PLLaVA ("PLLaVA: Parameter-free LLaVA Extension from Images to Videos for Video Dense
    Captioning", Xu et al., arXiv 2404.16994) pools the projected frame features of an image
    LLaVA (inside its projector, after the MLP) with `nn.AdaptiveAvgPool3d(pooling_shape)`, 16 x 12
    x 12 in its released models, so a video costs a fixed number of LLM tokens.

    Parameters (exactly one of the two; neither means PLLaVA's size (16, 12, 12)):
    - `size`: the output grid (T', H', W'), each at most the input grid; adaptive windows
      [floor(k L / K), ceil((k + 1) L / K)) per dim, exactly as `AdaptiveAvgPool3d`;
    - `stride`: (st, sh, sw) non-overlapping windows; the last window along a dim may be
      partial and averages the tokens it has (ceil mode, like the `pool` baseline).
    `size` equal to the layout or a stride of ones returns the input unchanged. Special tokens
    pass through in front. Features are plain window means (input sizes do not weight them).

    Bookkeeping: with overlapping adaptive windows (K not dividing L) a token lies in two
    windows; `source` books it to the later one, so `sizes` count booked tokens (they sum to
    N) while the feature averages the whole window. `positions` are each slot's first token.

    Differences from the official code:
    - PLLaVA repeats frames (`repeat_interleave`) when a clip has fewer frames than T'; here
      `size` may not exceed the layout (a ValueError says so): pooling never invents tokens.
    - The `stride` form is an addition (fixed windows instead of a fixed output grid).
    """

    size: tuple[int, int, int] | None = None
    stride: tuple[int, int, int] | None = None

    stage = "projector"
    modality = ("video",)
    grid = True
    mechanisms = ("transformation",)
    paper = "xu2024pllava"
    copies = False  # a window mean is not one of its tokens
    identity = {"size": None, "stride": (1, 1, 1)}  # one window per token, on any grid
    example = {"size": (2, 2, 2)}
    benchmark = {"size": (16, 12, 12)}

    def __post_init__(self) -> None:
        if self.size is not None and self.stride is not None:
            raise ValueError(
                "temporal_pool takes exactly one of size=(T', H', W') and stride=(st, sh, sw); "
                f"got size={self.size!r}, stride={self.stride!r}"
            )
        if self.size is None and self.stride is None:
            self.size = PLLAVA_SIZE
        name, value = ("size", self.size) if self.size is not None else ("stride", self.stride)
        hint = "pass three positive ints (T, H, W)"
        setattr(self, name, check_ints(name, value, 1, hint, length=3))

    def output_count(self, tokens: Tokens) -> int:
        grid = video_grid(tokens, self.name)
        return tokens.special + math.prod(self._out_grid(grid))

    def _out_grid(self, grid: tuple[int, int, int]) -> tuple[int, int, int]:
        if self.size is not None:
            if any(s > g for s, g in zip(self.size, grid, strict=True)):
                raise ValueError(
                    f"size={self.size} is larger than the token grid {grid} along some dim: "
                    "pass a size at most the layout"
                )
            return self.size
        return tuple(-(-g // s) for g, s in zip(grid, self.stride, strict=True))

    def compress(self, tokens: Tokens) -> Compression:
        grid = video_grid(tokens, self.name)
        out_grid = self._out_grid(grid)
        if out_grid == grid:
            return identity(tokens)
        if self.stride is not None:
            return self._stride_pool(tokens, grid)
        return self._adaptive_pool(tokens, grid, out_grid)

    def _stride_pool(self, tokens: Tokens, grid: tuple[int, int, int]) -> Compression:
        slots, out_grid = window_slots(grid, self.stride)
        lead = torch.arange(tokens.special)
        row = torch.cat([lead, slots + tokens.special]).to(tokens.features.device)
        source = row.expand(tokens.batch, -1).clone()
        ones = torch.ones(source.shape, dtype=work_dtype(tokens.features), device=source.device)
        return merge(tokens, source, tokens.special + math.prod(out_grid), weights=ones)

    def _adaptive_pool(
        self, tokens: Tokens, grid: tuple[int, int, int], out_grid: tuple[int, int, int]
    ) -> Compression:
        x = tokens.features
        b, n, d = x.shape
        dtype = work_dtype(x)
        windows = [adaptive_windows(g, o) for g, o in zip(grid, out_grid, strict=True)]
        (t, h, w), (ot, oh, ow) = grid, out_grid
        at, ah, aw = (
            averaging_matrix(win, g, dtype).to(x.device)
            for win, g in zip(windows, grid, strict=True)
        )
        # separable window means, one axis at a time (the windows are boxes): fast matmuls
        video = x[:, tokens.special :].to(dtype).reshape(b, t, h, w, d)
        video = aw @ video  # (b, t, h, ow, d)
        video = (ah @ video.reshape(b, t, h, ow * d)).reshape(b, t, oh * ow * d)
        pooled = (at @ video).reshape(b, ot * oh * ow, d)
        features = torch.cat([x[:, : tokens.special], pooled.to(x.dtype)], dim=1)

        st, sh, sw = (partition_slots(w, g) for w, g in zip(windows, grid, strict=True))
        slots = (st[:, None, None] * oh + sh[None, :, None]) * ow + sw[None, None, :]
        row = torch.cat([torch.arange(tokens.special), slots.reshape(-1) + tokens.special])
        source = row.to(x.device).expand(b, n).clone()
        count = features.shape[1]
        sizes = slot_sizes(tokens, source, count)
        first = torch.full((count,), n, dtype=torch.long).scatter_reduce(
            0, row, torch.arange(n), reduce="amin"
        )
        positions = first.to(x.device).expand(b, count).clone()
        return Compression(features=features, source=source, positions=positions, sizes=sizes)
