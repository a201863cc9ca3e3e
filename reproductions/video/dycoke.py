"""DyCoke's temporal token merging (TTM): drop the tokens of a frame that repeat its neighbour."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Compression, Method, Tokens, check_number
from ..ops import identity, l2_normalize, select, top_k, video_grid, with_special, work_dtype
from ..registry import register


def pruned_frames(frames: int) -> dict[int, int]:
    """{pruned frame: the frame it is compared with} for a clip of `frames` frames.

    Pass 1: in each pair (i, i + 1), i even, frame i + 1 is compared with frame i (a trailing
    odd frame has no partner and stays whole). Pass 2: for i in range(0, T - 4, 4), frame
    i + 2 is compared with frame i instead (it overrides the pass-1 choice for that frame).
    """
    against = {i + 1: i for i in range(0, frames - 1, 2)}
    against.update({i + 2: i for i in range(0, frames - 4, 4)})
    return against


@register("dycoke")
@dataclass
class DyCoke(Method):
    """DyCoke's temporal token merging: prune the tokens a frame shares with an earlier frame.

    "DyCoke: Dynamic Compression of Tokens for Fast Video Large Language Models" (Tao et al.,
    CVPR 2025, arXiv 2411.15024), stage 1 (TTM), applied to the projected video tokens. With
    P = H * W tokens per frame and P' = int((1 - prune_ratio) * P):
    - pass 1: for each pair of frames (i, i + 1), i even, frame i stays whole and frame i + 1
      keeps the P' tokens least cosine-similar to the same spatial position in frame i;
    - pass 2: for i in range(0, T - 4, 4), frame i + 2 is reduced the same way against frame i
      (replacing its pass-1 selection), so frames 0, 4, 8, ... stay whole.
    Despite the name, the released TTM drops the similar tokens (no averaging), as here.
    Kept tokens keep their positional order; special tokens pass through in front. The second
    stage of DyCoke (KV-cache pruning while decoding) is `dycoke_cache`.

    Parameters: `prune_ratio` in [0, 1), the fraction of each reduced frame's tokens dropped
    (0.7 in the released code; 0 returns the input).

    Differences from the official code:
    - Pass 1 of the released code selects frame i + 1's tokens with the similarity of the
      previous pair (`similarities[(i - 2) // 2]`, the last pair for i = 0), an off-by-one;
      here frame i + 1 is compared with frame i, as the paper describes.
    - A trailing odd frame is dropped entirely by the released code; here it stays whole.
    - Clips with T < 5 crash the released code (`torch.stack` of an empty list in pass 2) and
      T = 1 in pass 1; here pass 2 is skipped for T < 5 and a single frame stays whole.
    - The released code emits each reduced frame's tokens in ascending-similarity order (the
      order of `topk(largest=False)`); here they keep their positional order. Ties go to the
      lower index.
    - LLaVA renumbers the positions of the shortened sequence; here `positions` are the
      original indices (the integration decides how to number them).
    """

    prune_ratio: float = 0.7

    stage = "projector"
    modality = ("video",)
    budget_knob = "prune_ratio"
    grid = True
    mechanisms = ("similarity",)
    paper = "tao2024dycoke"
    identity = {"prune_ratio": 0.0}
    example = {"prune_ratio": 0.5}
    benchmark = {"prune_ratio": 0.7}

    def __post_init__(self) -> None:
        hint = "pass a fraction in [0, 1)"
        check_number("prune_ratio", self.prune_ratio, 0.0, 1.0, open_high=True, hint=hint)

    def kept_per_frame(self, per_frame: int) -> int:
        """P', the tokens a reduced frame keeps: int((1 - prune_ratio) * P), as released."""
        return int((1 - self.prune_ratio) * per_frame)

    def output_count(self, tokens: Tokens) -> int:
        t, h, w = video_grid(tokens, self.name)
        reduced = len(pruned_frames(t))
        return tokens.special + t * h * w - reduced * (h * w - self.kept_per_frame(h * w))

    def compress(self, tokens: Tokens) -> Compression:
        t, h, w = video_grid(tokens, self.name)
        per_frame = h * w
        kept = self.kept_per_frame(per_frame)
        against = pruned_frames(t)
        if kept == per_frame or not against:
            return identity(tokens)
        x = tokens.features[:, tokens.special :]
        frames = x.to(work_dtype(x)).reshape(x.shape[0], t, per_frame, -1)
        rows: list[Tensor] = []
        for frame in range(t):
            offset = tokens.special + frame * per_frame
            if frame in against:
                similarity = _cosine_rows(frames[:, frame], frames[:, against[frame]])
                rows.append(top_k(-similarity, kept) + offset)  # least similar, in order
            else:
                whole = torch.arange(per_frame, device=x.device) + offset
                rows.append(whole.expand(x.shape[0], per_frame))
        return select(tokens, with_special(tokens, torch.cat(rows, dim=1)))


def _cosine_rows(a: Tensor, b: Tensor) -> Tensor:
    """(B, P) cosine similarity of a[:, p] and b[:, p], position by position."""
    return (l2_normalize(a) * l2_normalize(b)).sum(dim=-1)
