"""Average pooling over time: the 2:1 downsampling Qwen2-Audio applies after its Whisper encoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..interface import Compression, Method, Tokens, check_int
from ..ops import identity, input_sizes, work_dtype
from ..registry import register


@register("audio_pool")
@dataclass
class AudioPool(Method):
    """Average every `stride` consecutive audio frames into one token.

    Paper: "Qwen2-Audio Technical Report" (Chu et al., arXiv 2407.10759). Its audio encoder ends
    in `nn.AvgPool1d(2, stride=2)` over the Whisper frames (1500 frames of 30 s -> 750 tokens,
    one per 40 ms); Qwen2.5-Omni keeps the same pooler.

    Output token k is the plain (unweighted) mean of frames special + k*stride ... + stride - 1,
    standing at the position of the first of them, with size = the summed input sizes. A trailing
    group shorter than `stride` is dropped (`source` -1), as `AvgPool1d` (no padding,
    `ceil_mode=False`) drops it; so there are special + floor((N - special) / stride) outputs.
    Leading special tokens pass through unchanged.

    Parameters: `stride` (>= 1): frames per output token (kernel = stride, as in Qwen2-Audio).

    Differences from the official code: None. (Input sizes are carried into `sizes` but do not
    weight the mean, exactly like `AvgPool1d`.)
    """

    stride: int = 2

    paper = "chu2024qwen2"
    stage = "projector"
    modality = ("audio",)
    budget_knob = "stride"
    mechanisms = ("transformation",)
    copies = False
    identity = {"stride": 1}
    example = {"stride": 2}
    benchmark = {"stride": 2}

    def __post_init__(self) -> None:
        check_int("stride", self.stride, 1, "pass a positive int number of frames per token")

    def output_count(self, tokens: Tokens) -> int:
        return tokens.special + (tokens.count - tokens.special) // self.stride

    def compress(self, tokens: Tokens) -> Compression:
        if self.stride == 1:
            return identity(tokens)
        special, n = tokens.special, tokens.count
        groups = (n - special) // self.stride
        if groups == 0:
            raise ValueError(
                f"audio_pool(stride={self.stride}) needs at least {self.stride} frames, got "
                f"{n - special}: pass a smaller stride or a longer clip"
            )
        x = tokens.features
        device = x.device
        frame = torch.arange(n - special, device=device)
        slot = torch.where(frame < groups * self.stride, frame // self.stride + special, -1)
        source = torch.cat([torch.arange(special, device=device), slot]).expand(tokens.batch, n)
        span = slice(special, special + groups * self.stride)
        shape = (tokens.batch, groups, self.stride)
        pooled = x[:, span].to(work_dtype(x)).reshape(*shape, -1).mean(dim=2).to(x.dtype)
        sizes = input_sizes(tokens)
        starts = torch.arange(groups, device=device) * self.stride + special
        return Compression(
            features=torch.cat([x[:, :special], pooled], dim=1),
            source=source.clone(),
            positions=torch.cat([torch.arange(special, device=device), starts])
            .expand(tokens.batch, -1)
            .clone(),
            sizes=torch.cat([sizes[:, :special], sizes[:, span].reshape(shape).sum(dim=2)], dim=1),
        )
