"""FastLongSpeech's iterative fusion: merge the most similar neighbours, weighted by a CTC head's
non-blank probability, until the clip fits a target length."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from ..interface import Compression, Method, Tokens, check_int, check_ints
from ..ops import identity, l2_norms, merge, order, work_dtype
from ..registry import register

#: the official short-speech schedule: the counts a clip passes through on its way down
POOL = (400, 200, 100, 50, 25, 12)


@register("fastlongspeech")
@dataclass
class FastLongSpeech(Method):
    """Shorten the audio encoder's output step by step, fusing similar neighbouring frames.

    Paper: "FastLongSpeech: Enhancing Large Speech-Language Models for Efficient Long-Speech
    Processing" (Guo et al., arXiv 2507.14815), on Qwen2-Audio. It acts at the end of the audio
    encoder: on the pooled hidden states (25 per second) before the encoder's final LayerNorm,
    which, with the projector, runs on the fused frames afterwards. (The paper also fine-tunes
    the LLM on fused speech, its dynamic compression training; that is training, not part of
    this method.)

    One fusion step from n to m frames: the cosine similarity of every frame and the next is
    computed, and the n - m most similar neighbour pairs are joined (runs of joined pairs fuse
    into one group, so every group is consecutive frames). Frame i has weight
    w_i = 1 - p_blank(i), the non-blank probability of a trained CTC head, softmax(head(x_i)),
    whose last class is the blank. A group becomes sum_i w_i x_i / (sum_i w_i + 1e-7), stands at
    the position of its first frame, and has size = the summed input sizes. Steps repeat, the
    weights recomputed by the head on the fused frames each time, through the counts of
    `schedule`:
    - "pool" (the official path for clips up to 30 s): the counts of `pool` below N, down to
      `length`, which must be one of them (Qwen2-Audio's 750 frames: 400, then 200, ...);
    - "halve" (the official long-speech path): halve the count while half is still above
      `length`, then go to `length` in one step (750 -> 400; 3000 -> 1500 -> 750 -> 400).
    `length` >= N returns the input unchanged, as the official code skips the fusion.

    Parameters: `length` (the official `predefined_length`), `schedule`, `pool` (decreasing
    counts), and the CTC head's shape: `dim` (encoder width, 1280), `hidden` (the LLM width its
    projector maps to, 4096), `classes` (its vocabulary plus the blank, README: 10000 + 1),
    `seed` (initialisation). The head, `self.head`, is LayerNorm(dim) (the encoder's final
    LayerNorm) -> Linear(dim, hidden) (the CTC projector, or the model's own projector where the
    CTC head has none) -> Linear(hidden, classes, no bias): load FastLongSpeech's trained weights
    into it (`audio_tower.layer_norm`, `ctc_decoder.projector`, `ctc_decoder.linear`); built
    here it holds random weights.

    Differences from the official code:
    - Where `length` is not a count of the "pool" schedule, the official code fuses to the next
      count above it and then passes only the first `length` fused frames to the LLM (the end of
      the clip is lost; with N <= 12 it fuses nothing and truncates), or crashes where no count
      lies between `length` and N; here all of these raise
      `ValueError`, naming the counts to pass (or schedule="halve", which reaches any length).
    - Ties between equal similarities go to the earlier pair (`torch.topk` leaves them open);
      cosine similarity clamps norms at 1e-12 (the official code divides by the plain norms).
    - The head runs in its own dtype (float32 as built) and the fusion in float32 or wider; the
      official head runs in the model's half precision.
    - Batched: the rows of a batch (one length N) fuse in parallel; the official code fuses
      one clip.
    """

    length: int = 400
    schedule: Literal["pool", "halve"] = "pool"
    pool: tuple[int, ...] = POOL
    dim: int = 1280
    hidden: int = 4096
    classes: int = 10001
    seed: int = 0
    head: nn.Sequential = field(init=False, repr=False, compare=False)

    paper = "guo2025fastlongspeech"
    stage = "encoder"
    modality = ("audio",)
    mechanisms = ("similarity",)
    copies = False
    trainable = True
    special_tokens = (0,)
    budget_knob = "length"
    example = {"length": 25, "dim": 32, "hidden": 16, "classes": 8}
    benchmark = {"length": 400, "dim": 1280, "hidden": 4096, "classes": 10001}

    def __post_init__(self) -> None:
        check_int("length", self.length, 1, "pass the positive int number of frames to keep")
        if self.schedule not in ("pool", "halve"):
            raise ValueError(f"schedule={self.schedule!r}: pass 'pool' or 'halve'")
        self.pool = check_ints("pool", self.pool, 1)
        if any(a <= b for a, b in zip(self.pool, self.pool[1:], strict=False)):
            raise ValueError(f"pool={self.pool!r}: pass decreasing counts, e.g. {POOL}")
        check_int("dim", self.dim, 1, "pass the encoder width, a positive int")
        check_int("hidden", self.hidden, 1, "pass the CTC projector's width, a positive int")
        check_int("classes", self.classes, 2, "pass the CTC vocabulary size plus the blank, >= 2")
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(self.seed)
            self.head = nn.Sequential(
                nn.LayerNorm(self.dim),
                nn.Linear(self.dim, self.hidden),
                nn.Linear(self.hidden, self.classes, bias=False),
            ).eval()
        finally:
            torch.random.set_rng_state(state)

    def steps(self, n: int) -> list[int]:
        """The frame counts after each fusion step from `n` frames (none where length >= n)."""
        if self.length >= n:
            return []
        if self.schedule == "halve":
            counts = [n]
            while counts[-1] > self.length:
                half = counts[-1] // 2
                counts.append(half if counts[-1] / 2 > self.length else self.length)
            return counts[1:]
        counts = [p for p in self.pool if self.length <= p < n]
        if not counts or counts[-1] != self.length:
            below = [p for p in self.pool if p < n]
            raise ValueError(
                f"fastlongspeech(schedule='pool', length={self.length}) on {n} frames: the pool "
                f"schedule fuses through the counts {below}; pass one of them as length, or "
                "schedule='halve' for any length"
            )
        return counts

    def output_count(self, tokens: Tokens) -> int:
        counts = self.steps(tokens.count)
        return counts[-1] if counts else tokens.count

    def nonblank(self, x: Tensor) -> Tensor:
        """(B, N) 1 - the CTC head's blank probability of each frame of `x` (B, N, dim)."""
        with torch.no_grad():  # weights, not a path for gradients (the official `.detach()`)
            logits = self.head(x.to(self.head[1].weight.dtype))
        return 1 - logits.to(work_dtype(logits)).softmax(dim=-1)[..., -1]

    def compress(self, tokens: Tokens) -> Compression:
        x = tokens.features
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"fastlongspeech's CTC head was built for dim={self.dim} features, got D="
                f"{x.shape[-1]}: pass dim={x.shape[-1]} (and load the head's weights)"
            )
        counts = self.steps(tokens.count)
        if not counts:
            return identity(tokens)
        current = dataclasses.replace(tokens, features=x.to(work_dtype(x)))
        total: Compression | None = None
        for count in counts:
            step = self.fuse(current, count)
            total = step if total is None else total.then(step)
            current = Tokens(features=step.features, layout=(count,), sizes=step.sizes)
        return dataclasses.replace(total, features=total.features.to(x.dtype))

    def fuse(self, tokens: Tokens, count: int) -> Compression:
        """One step: join the N - count most similar neighbour pairs, merge by non-blank weight."""
        x = tokens.features
        norms = l2_norms(x)  # (B, N - 1) cosine of frame i and i + 1:
        similarity = (x[:, :-1] * x[:, 1:]).sum(dim=-1) / (norms[:, :-1] * norms[:, 1:])
        joined = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        joined.scatter_(1, order(similarity)[:, : tokens.count - count] + 1, True)
        source = (~joined).long().cumsum(dim=1) - 1
        weights = self.nonblank(x).to(x.dtype)
        fused = merge(tokens, source, count, weights=weights)
        mass = weights.new_zeros(source.shape[0], count).scatter_add_(1, source, weights)
        scale = (mass / (mass + 1e-7)).unsqueeze(-1)  # the official divisor sum_i w_i + 1e-7
        return dataclasses.replace(fused, features=fused.features * scale)
