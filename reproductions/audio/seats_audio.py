"""SEATS' pre-LLM audio selection (winDivPrune): attention-weighted DivPrune in 2-second windows."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..interface import Compression, Method, Tokens, check_int, check_number
from ..ops import identity, max_min_diverse, select, work_dtype
from ..registry import register


@register("seats_audio")
@dataclass
class SeatsAudio(Method):
    """Keep the most diverse, most attended audio tokens of each short window.

    Paper: "Stage-adaptive Token Selection for Efficient Omni-modal LLMs" (Xin et al., arXiv
    2605.20035), training-free, on Qwen2.5-Omni and Qwen3-Omni. This is its
    Stage I for audio ("winDivPrune", `audio_windivprune`), which drops audio tokens from the LLM
    input before the first decoder layer; its video counterpart and its inner-LLM stages
    (progressive query-guided pruning, late-layer removal) are not part of this method.

    The audio tokens are cut into consecutive windows of `window` tokens (SEATS: 2 s at 25
    tokens/s = 50; the last window may be shorter). In a window of w tokens,
    max(1, min(w, round(ratio * w))) tokens are kept (Python's round: halves to even), all of
    them where that is w. The kept tokens are picked by DivPrune's greedy max-min rule on the
    distance d(i, j) = (1 - cos(x_i, x_j)) * a_j, where a_j is the attention token j receives in
    the audio encoder's last layer, averaged over heads (`ops.max_min_diverse` with column
    weights): first the token whose nearest other token is farthest, then repeatedly the token
    farthest from the kept set. Kept tokens keep their positional order.

    Parameters: `ratio` in [0, 1], the fraction kept per window (SEATS' `audio_encoder_ratio`:
    the target audio ratio times its `encoder_ratio_scale` 1.4, 0.65 * 1.4 = 0.91 by default);
    `window` (tokens per window).
    Signal: `cls_attention` (B, heads, N): for the audio encoder, which has no [CLS], the
    attention each audio frame receives in the last encoder layer, averaged over the query rows
    and pooled onto the LLM's audio tokens as the encoder's 2:1 average pooling pools its frames
    (SEATS averages each pair of frames' scores, as here). `reproductions.hf` supplies it inside
    Qwen2-Audio and Qwen2.5-Omni (`stages/signals.py`, `AudioTap`).

    Differences from the official code:
    - The official scores (`audio_windivprune`, read from the last layer of Qwen2.5-Omni's
      audio encoder) are each frame's attention received, heads averaged, summed over the query
      rows of a 2-second window (100 frames) laid over all of a prompt's audio frames packed, in
      the model's dtype, scaled by 1e6, then averaged over each pair of packed frames.
      `reproductions.hf` takes the softmax within the encoder's own attention window: a
      Qwen2.5-Omni chunk (n_window frames: 100 in the released model, so the same windows for
      a prompt of one clip), or a whole Qwen2-Audio clip (which its encoder attends over; the
      official code has no Qwen2-Audio port), its real frames only, padding never a query nor a
      key. It averages over the window's query rows in float32 and pairs frames within each
      clip, as the model pools them (the official pairs and windows run on across clips). The
      sum is the mean times the window's frame count: one positive factor per attention window,
      which changes no comparison inside a selection window that lies in one attention window
      (always at the default `window`, 50 tokens = one 100-frame chunk, and on Qwen2-Audio). A
      `window` that spans a clip's shorter last chunk (f frames after chunks of c) weighs that
      chunk's tokens c / f times more, relative to the others, than the official sum would.
    - Cosine similarity normalises rows with norms clamped at 1e-12 (`ops.cosine_matrix`); the
      official code adds 1e-8 to the norms (different only for rows of near-zero norm).
    - Windows start at each clip's first token; the official code windows all audio tokens of
      a prompt as one sequence (the same for a prompt with one clip).
    """

    ratio: float = 0.91
    window: int = 50

    paper = "xin2026stage"
    stage = "projector"
    modality = ("audio",)
    mechanisms = ("similarity", "attention")
    needs = ("cls_attention",)
    special_tokens = (0,)
    budget_knob = "ratio"
    identity = {"ratio": 1.0}
    example = {"ratio": 0.5, "window": 16}
    benchmark = {"ratio": 0.91, "window": 50}

    def __post_init__(self) -> None:
        hint = "pass the fraction kept per window, in [0, 1]"
        check_number("ratio", self.ratio, 0.0, 1.0, hint=hint)
        check_int("window", self.window, 1, "pass a positive int number of tokens per window")

    def windows(self, n: int) -> list[tuple[int, int, int, int]]:
        """(start, count, length, kept) of the runs of equal windows over `n` tokens: the whole
        windows, then the shorter last one."""
        whole, rest = divmod(n, self.window)
        runs = [(0, whole, self.window), (whole * self.window, 1, rest)]
        kept = [max(1, min(length, round(self.ratio * length))) for _, _, length in runs]
        return [(*run, k) for run, k in zip(runs, kept, strict=True) if run[1] and run[2]]

    def output_count(self, tokens: Tokens) -> int:
        return sum(count * kept for _, count, _, kept in self.windows(tokens.count))

    def compress(self, tokens: Tokens) -> Compression:
        if self.ratio == 1.0:
            return identity(tokens)
        x, b = tokens.features, tokens.batch
        weights = tokens.cls_attention.to(work_dtype(x)).mean(dim=1)  # (B, N): mean over heads
        picks = []
        for start, count, length, kept in self.windows(tokens.count):
            # the windows of one run are one batch of (B * count) greedy selections
            span = slice(start, start + count * length)
            if kept == length:
                local = torch.arange(length, device=x.device).expand(b * count, length)
            else:
                rows = x[:, span].reshape(b * count, length, -1)
                local = max_min_diverse(rows, kept, weights[:, span].reshape(b * count, length))
            offsets = torch.arange(count, device=x.device)[:, None] * length + start
            picks.append((local.reshape(b, count, kept) + offsets).reshape(b, -1))
        return select(tokens, torch.cat(picks, dim=1).sort(dim=1).values)
