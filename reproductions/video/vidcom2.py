"""VidCom2: per-frame budgets from frame uniqueness, then each frame's most distinctive tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Compression, Method, Tokens, check_number, validate_tokens
from ..ops import identity, order, stack_rows, video_grid, with_special, work_dtype
from ..registry import register

#: the bandwidths a of the released multi-scale Gaussian kernel, 2^-3 ... 2^1
BANDWIDTHS = (0.125, 0.25, 0.5, 1.0, 2.0)


def gaussian_similarity(squared: Tensor) -> Tensor:
    """The multi-scale Gaussian kernel sum_a exp(-d^2 / (2 a)) over `BANDWIDTHS`, of squared
    distances d^2."""
    return sum(torch.exp(-squared / (2 * a)) for a in BANDWIDTHS)


def frame_budgets(
    uniqueness: Tensor, retention: float, temperature: float, per_frame: int
) -> Tensor:
    """(B, T) long: the tokens each frame keeps, from (B, T) frame uniqueness scores.

    With w = softmax((u - max u) / temperature) over the frames of a video, frame t keeps
    round(min(1, retention * (1 + w_t - mean w)) * P) tokens, at least one (`torch.round`:
    halves to even, as released). An infinite temperature gives every frame retention * P.
    """
    if math.isinf(temperature):
        scales = torch.full_like(uniqueness, retention)
    else:
        shifted = (uniqueness - uniqueness.max(dim=-1, keepdim=True).values) / temperature
        weights = shifted.softmax(dim=-1)
        scales = retention * (1 + weights - weights.mean(dim=-1, keepdim=True))
    scales = scales.clamp(max=1.0)
    return (scales * per_frame).round().long().clamp(min=1)


@register("vidcom2")
@dataclass
class VidCom2(Method):
    """VidCom2: give unique frames more tokens, keep the most distinctive tokens of each frame.

    "Video Compression Commander: Plug-and-Play Inference Acceleration for Video Large Language
    Models" (Xuyang Liu, Yiyu Wang, Junpeng Ma, Linfeng Zhang; EMNLP 2025, arXiv 2505.14454),
    applied to the projected video tokens (after LLaVA-OneVision / LLaVA-Video's 2D pooling, or
    Qwen2-VL's merger), one video of T frames x P = H * W tokens at a time:

    1. Channels: keep the D // 2 channels of lowest variance (population variance over the
       video's T * P tokens); normalise each token to unit length over those channels.
    2. Scores: with the video centre c_v (the mean of all unit tokens) and the frame centre c_f
       (the mean of the frame's unit tokens), s_v = K(x, c_v) and s_f = K(x, c_f) with the
       multi-scale Gaussian K(x, c) = sum_a exp(-|x - c|^2 / (2a)), a in {1/8, 1/4, 1/2, 1, 2}.
    3. Frame budgets: a frame's uniqueness is u_t = -mean_p s_v (far from the video centre on
       average); w = softmax((u - max u) / temperature) over the frames; frame t keeps
       k_t = max(1, round(min(1, r * (1 + w_t - mean w)) * P)) tokens, r = `retention`
       (`torch.round`, halves to even). The k_t sum to about r * T * P, not exactly.
    4. Tokens: each frame keeps its k_t tokens of lowest s_v + s_f (unlike both the video and
       its own frame), in positional order; frames stay in order.
    Special tokens pass through in front and take no part in the statistics.

    Parameters: `retention` r in (0, 1] (the released `R_RATIO` / `base_scale`, 0.25 by
    default); `temperature` (0.01, hard-coded in the released code; `math.inf` gives every
    frame round(r * P) tokens, the first release's `frame_score_mode="equal"` ablation, and
    with r = 1 returns the input). The method reads no signal beyond the features.

    The output count depends on the data (per-frame rounding and the clamp at 1), so rows of a
    batch that compress to different counts raise a ValueError asking for one video at a time
    (the released code compresses one video at a time).

    Differences from the official code (`token_compressor/vidcom2/vidcom2.py`,
    `vidcom2_compression`):
    - Scores and budgets are computed in float32 (float64 for float64 input); the released code
      computes them in the model's dtype (bfloat16 in its evaluations), where the rounded
      scales, hence the per-frame counts, can differ by a token. The variance is taken in two
      passes and |u - c|^2 as |u|^2 + |c|^2 - 2 u.c (matrix products, for speed): the same
      quantities, rounded differently.
    - Ties (channels of equal variance, tokens of equal score) go to the lower index, where the
      released `torch.topk` leaves them unspecified. A video with fewer than 2 channels scores
      every token alike (no channel is kept), as released.
    - LLaVA-Video's newline tokens (one per row of the 13 x 13 grid) are not scored by the
      released code and are all kept; here the tokens are the (T, H, W) grid alone, so keeping
      such tokens is the integration's business.
    - `temperature` is exposed (fixed at 0.01 when released). The first release divided by
      (sum of exponentials + 1e-8) in the softmax; the current code uses `softmax`, as here.
    - `positions` are the original indices (the integration decides how to renumber them).
    """

    retention: float = 0.25
    temperature: float = 0.01

    stage = "projector"
    modality = ("video",)
    budget_knob = "retention"
    grid = True
    mechanisms = ("similarity",)
    paper = "liu2025videob"
    identity = {"retention": 1.0, "temperature": math.inf}
    # a sharp temperature: the example's random frames differ little in uniqueness, so at 0.01
    # the budgets of its videos round to different totals; at 1e-4 one frame per video takes
    # the extra budget and every video keeps the same total
    example = {"retention": 0.5, "temperature": 0.0001}
    benchmark = {"retention": 0.25}

    def __post_init__(self) -> None:
        r = self.retention
        hint = "pass the fraction of each video's tokens to keep, in (0, 1]"
        check_number("retention", r, 0.0, 1.0, open_low=True, hint=hint)
        tau = self.temperature
        hint = "pass a positive softmax temperature (0.01 as released; math.inf: equal frames)"
        check_number("temperature", tau, 0, open_low=True, hint=hint)

    def output_count(self, tokens: Tokens) -> int | None:
        return None  # the per-frame budgets depend on the frames' uniqueness

    def budgets(self, tokens: Tokens) -> Tensor:
        """(B, T) long: how many tokens each frame keeps."""
        validate_tokens(tokens, self)
        return self._scores(tokens)[1]

    def compress(self, tokens: Tokens) -> Compression:
        t, h, w = video_grid(tokens, self.name)
        per_frame = h * w
        if self.retention == 1.0 and math.isinf(self.temperature):
            return identity(tokens)
        scores, budgets = self._scores(tokens)
        b = tokens.batch
        ranks = order(scores, descending=False)  # ascending: most distinctive first
        chosen = torch.arange(per_frame, device=scores.device) < budgets.unsqueeze(-1)
        kept = torch.zeros_like(chosen).scatter_(2, ranks, chosen).reshape(b, t * per_frame)
        rows = []
        for row in range(b):
            idx = kept[row].nonzero().squeeze(1) + tokens.special
            positions = with_special(tokens, idx.unsqueeze(0))[0]
            source = torch.full((tokens.count,), -1, dtype=torch.long, device=idx.device)
            source[positions] = torch.arange(positions.shape[0], device=idx.device)
            rows.append((positions, tokens.features[row, positions], source))
        return stack_rows(tokens, rows, " (their frame budgets round differently)")

    def _scores(self, tokens: Tokens) -> tuple[Tensor, Tensor]:
        """(B, T, P) token scores s_v + s_f (lower is kept first) and (B, T) frame budgets."""
        t, h, w = video_grid(tokens, self.name)
        per_frame = h * w
        x = tokens.features[:, tokens.special :]
        x = x.to(work_dtype(x))
        b, n, d = x.shape
        # (B, D) population variance over the video's tokens, in two passes (mean, then the
        # squares of a temporary of ours): ~4x faster on CPU than `var` over the token dim
        variance = (x - x.mean(dim=1, keepdim=True)).square_().mean(dim=1)
        channels = order(variance, descending=False)[:, : d // 2]
        picked = x.gather(2, channels.unsqueeze(1).expand(b, n, channels.shape[1]))
        frames = picked.reshape(b, t, per_frame, -1)
        # unit tokens u = x / max(|x|, 1e-12); |u - c|^2 = |u|^2 + |c|^2 - 2 u.c, with the
        # centres and the dot products as matrix products (no (T, P, D) differences)
        norm = torch.linalg.vector_norm(frames, dim=-1)
        inverse = 1 / norm.clamp_min(1e-12)
        unit_sq = (norm * inverse).square()
        frame_center = (inverse.unsqueeze(-2) @ frames) / per_frame  # (B, T, 1, D')
        video_center = frame_center.mean(dim=1, keepdim=True)  # (B, 1, 1, D')
        scores = []
        for center in (video_center, frame_center):
            dot = (frames @ center.transpose(-1, -2)).squeeze(-1) * inverse
            squared = unit_sq + center.square().sum(dim=-1) - 2 * dot
            scores.append(gaussian_similarity(squared.clamp_min(0)))
        video_score, frame_score = scores
        uniqueness = -video_score.mean(dim=-1)
        budgets = frame_budgets(uniqueness, self.retention, self.temperature, per_frame)
        return video_score + frame_score, budgets
