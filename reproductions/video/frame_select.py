"""Query-guided frame selection, a baseline: keep the frames that best match the question."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..interface import Compression, Method, Tokens, check_int, check_number
from ..ops import cosine_matrix, identity, select, top_k, video_grid, with_special, work_dtype
from ..registry import register


@register("frame_select")
@dataclass
class FrameSelect(Method):
    """Keep every token of the `frames` frames most similar to the text query, in time order.

    A frame-selection baseline, not KVTP (that is `kvtp`) nor any other paper's method, so it
    links to no paper (`paper = None`). The query is the mean of the `text` rows (B, M, Dt); each
    frame's score is the cosine between it and the frame's global feature (`frames`, (B, T, Df),
    Df = Dt: e.g. SigLIP / CLIP image and text embeddings of one model). The top `frames` frames
    (ties: the earlier frame) keep all their H * W tokens, in temporal order; special tokens
    pass through.

    Parameters: `frames`, an int count of frames or a float fraction of T in (0, 1] (floor,
    at least one frame); all the frames return the input.

    It is the hard keyframe-selection extreme of query-guided video pruning: whole frames are
    kept or dropped, with no per-frame keep rates and no pruning inside frames. KVTP (`kvtp`)
    instead turns the frames' relevance into soft per-frame keep rates and prunes inside each
    frame; its released hard-selection switch has no effect (see `kvtp`).

    Differences from the official code: none to list, as a baseline it has no official code.
    """

    frames: int | float = 8

    stage = "projector"
    modality = ("video",)
    budget_knob = "frames"
    grid = True
    mechanisms = ("query",)
    needs = ("text", "frames")
    paper = None
    identity = {"frames": 1.0}
    example = {"frames": 2}
    benchmark = {"frames": 8}

    def __post_init__(self) -> None:
        if isinstance(self.frames, float):
            hint = "a float is a fraction of the frames in (0, 1]"
            check_number("frames", self.frames, 0.0, 1.0, open_low=True, hint=hint)
        else:
            hint = "pass a positive int count of frames to keep, or a float fraction in (0, 1]"
            check_int("frames", self.frames, 1, hint)

    def frame_count(self, total: int) -> int:
        """Frames kept out of `total`: an int as is, a fraction floor(frames * T), at least 1."""
        if isinstance(self.frames, float):
            return max(1, math.floor(self.frames * total))
        if self.frames > total:
            raise ValueError(
                f"frames={self.frames} but the video has {total} frames: pass at most {total}"
            )
        return self.frames

    def output_count(self, tokens: Tokens) -> int:
        t, h, w = video_grid(tokens, self.name)
        return tokens.special + self.frame_count(t) * h * w

    def compress(self, tokens: Tokens) -> Compression:
        t, h, w = video_grid(tokens, self.name)
        count = self.frame_count(t)
        if count == t:
            return identity(tokens)
        if tokens.text.shape[-1] != tokens.frames.shape[-1]:
            raise ValueError(
                f"text has dim {tokens.text.shape[-1]} but frames have {tokens.frames.shape[-1]}: "
                "pass text and frame embeddings from the same embedding space"
            )
        query = tokens.text.to(work_dtype(tokens.text)).mean(dim=1, keepdim=True)
        scores = cosine_matrix(query, tokens.frames).squeeze(1)  # (B, T)
        chosen = top_k(scores, count)  # ascending frame order
        per_frame = h * w
        offsets = torch.arange(per_frame, device=chosen.device)
        idx = (chosen.unsqueeze(-1) * per_frame + offsets).flatten(1) + tokens.special
        return select(tokens, with_special(tokens, idx))
