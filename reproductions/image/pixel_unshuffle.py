"""InternVL's pixel shuffle: fold each factor x factor neighbourhood of tokens into channels."""

from __future__ import annotations

from dataclasses import dataclass

from ..interface import Compression, Method, Tokens, check_int
from ..ops import frame_grid, identity, window_bookkeeping, window_source
from ..registry import register


@register("pixel_unshuffle")
@dataclass
class PixelUnshuffle(Method):
    """Concatenate each `factor` x `factor` block of tokens into one token of width factor^2 D.

    InternVL 1.5's token compression ("How Far Are We to GPT-4V? Closing the Gap to Commercial
    Multimodal Models with Open-Source Suites", arXiv 2404.16821; used by every InternVL since):
    `pixel_shuffle(x, scale_factor=0.5)` with `ps_version="v2"` turns the H x W patch grid
    into an H/2 x W/2 grid of 4D-wide tokens before the MLP projector (1024 -> 256 tokens).
    The output token at (i, j) is the concatenation, in this order, of the input tokens at
    (f i + di, f j + dj) for di, then dj, in 0..f-1: for f = 2, [top-left, top-right,
    bottom-left, bottom-right]; exactly InternVL's view / permute sequence.

    Parameters: `factor` (block side, >= 1; 1 returns the input; H and W must be multiples of
    it, as InternVL requires). Layout (H, W) for an image or (T, H, W) for a video, one frame
    at a time. No special tokens: InternVL drops the [CLS] before the shuffle, and a token of
    width D cannot sit among tokens of width f^2 D. `sizes` count the f^2 tokens of a block
    (input sizes summed), `positions` are each block's top-left token.

    Differences from the official code:
    None.
    """

    factor: int = 2

    paper = "chen2024how"
    mechanisms = ("transformation",)
    modality = ("image", "video")
    budget_knob = "factor"
    grid = True
    special_tokens = (0,)
    copies = False  # the output width is factor^2 times the input width
    identity = {"factor": 1}
    example = {"factor": 2}
    benchmark = {"factor": 2}

    def __post_init__(self) -> None:
        check_int("factor", self.factor, 1, "pass a positive int block side")

    def output_width(self, width: int) -> int:
        return self.factor * self.factor * width

    def output_count(self, tokens: Tokens) -> int:
        t, h, w = frame_grid(tokens, self.name)
        return t * (h // self.factor) * (w // self.factor)

    def compress(self, tokens: Tokens) -> Compression:
        t, h, w = frame_grid(tokens, self.name)
        f = self.factor
        if h % f or w % f:
            raise ValueError(
                f"layout {tokens.layout}: pixel_unshuffle needs H and W divisible by "
                f"factor={f}; pass a grid of multiples of {f} or another factor"
            )
        if f == 1:
            return identity(tokens)
        x = tokens.features
        b, _, d = x.shape
        blocks = x.reshape(b, t, h // f, f, w // f, f, d).permute(0, 1, 2, 4, 3, 5, 6)
        features = blocks.reshape(b, t * (h // f) * (w // f), f * f * d)
        source, count = window_source(tokens, (t, h, w), f)
        positions, sizes = window_bookkeeping(tokens, source, count)
        return Compression(features, source, positions, sizes)
