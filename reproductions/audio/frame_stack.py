"""Frame stacking: concatenate k adjacent frames into one wider token (LLaMA-Omni's speech adaptor)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..interface import Compression, Method, Tokens, check_int
from ..ops import identity, slot_sizes
from ..registry import register


@register("frame_stack")
@dataclass
class FrameStack(Method):
    """Concatenate every `k` consecutive frames into one token of width k * D.

    Paper: "LLaMA-Omni: Seamless Speech Interaction with Large Language Models" (Fang et al.,
    ICLR 2025, arXiv 2409.06666). Its speech adaptor reshapes the Whisper output (B, N, D) to
    (B, N / k, k * D) with k = 5 before a two-layer MLP; SLAM-LLM and other speech LLMs use the
    same downsampler. Output token j is [x_{jk}; x_{jk+1}; ...; x_{jk+k-1}] (frame order kept
    inside the token), standing at the position of its first frame, with size = the summed input
    sizes of its frames.

    Parameters: `k` (>= 1) frames per token; `tail`: what to do with the last N mod k frames:
    "drop" them (LLaMA-Omni discards them before reshaping; they get `source` -1) or "pad" them
    with zero frames into one more token (its size counts only the real frames).

    Differences from the official code: None ("pad" is an option the official code does not
    have; the default "drop" is its behaviour).
    """

    k: int = 5
    tail: Literal["drop", "pad"] = "drop"

    paper = "fang2024llama"
    stage = "projector"
    modality = ("audio",)
    budget_knob = "k"
    mechanisms = ("transformation",)
    copies = False
    special_tokens = (0,)
    identity = {"k": 1}
    example = {"k": 4}
    benchmark = {"k": 5}

    def __post_init__(self) -> None:
        check_int("k", self.k, 1, "pass a positive int number of frames per token")
        if self.tail not in ("drop", "pad"):
            raise ValueError(
                f"tail={self.tail!r}: pass 'drop' or 'pad' for the last N mod k frames"
            )

    def output_width(self, width: int) -> int:
        return self.k * width

    def output_count(self, tokens: Tokens) -> int:
        whole, rest = divmod(tokens.count, self.k)
        return whole + (1 if rest and self.tail == "pad" else 0)

    def compress(self, tokens: Tokens) -> Compression:
        if self.k == 1:
            return identity(tokens)
        x = tokens.features
        b, n, d = x.shape
        count = self.output_count(tokens)
        if count == 0:
            raise ValueError(
                f"frame_stack(k={self.k}, tail='drop') needs at least {self.k} frames, got {n}: "
                "pass a smaller k, tail='pad', or a longer clip"
            )
        used = min(n, count * self.k)
        padded = F.pad(x[:, :used], (0, 0, 0, count * self.k - used))
        features = padded.reshape(b, count, self.k * d)
        frame = torch.arange(n, device=x.device)
        source = torch.where(frame < count * self.k, frame // self.k, -1).expand(b, n).clone()
        positions = (torch.arange(count, device=x.device) * self.k).expand(b, count).clone()
        return Compression(
            features=features,
            source=source,
            positions=positions,
            sizes=slot_sizes(tokens, source, count),
        )
