"""PyramidDrop: drop visual tokens in stages, by the last instruction token's attention."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..interface import Compression, Method, Tokens, check_ints, check_number
from ..ops import select_top, work_dtype
from ..registry import register
from .fastv import FastV


@register("pdrop")
@dataclass
class PyramidDrop(Method):
    """Rank and drop the visual tokens at several decoder layers, keeping a pyramid of counts.

    "PyramidDrop: Accelerating Your Large Vision-Language Models via Pyramid Visual Redundancy
    Reduction" (Xing et al., CVPR 2025, arXiv 2410.17247). The forward pass is cut into stages
    at `layers` (K_1 < K_2 < ...). Before layer K_i runs, the visual tokens still present are
    ranked by the attention that layer K_i pays from the last instruction token (the last
    prompt token) to them, averaged over heads, and the top int(N * ratio^i) of the original N
    stay (positional order); the rest are gone for layers >= K_i. The released LLaVA-1.5 /
    LLaVA-NeXT settings: `layers` (8, 16, 24), `ratio` (lambda) 0.5, so 50%, 25% and 12.5% of
    the image tokens remain after layers 8, 16 and 24.

    Inside transformers (`reproductions.hf`) the llm stage runs one FastV-like rank & drop per
    layer (`decoder_layers`, `step`), with each layer's own attention over its input (`attention_from = "own"`),
    as the released `pdrop_rank_drop` computes it. One call on its own sees one attention: the
    drops of all stages, ranked by the same scores, leave the top int(N * ratio^S) (S stages).

    Differences from the official code:
    - Position ids: the released code numbers the shorter sequence 0, 1, ... after every drop
      (and shifts the decoding positions to match); here kept tokens keep their original ids,
      as the llm stage does for every method.
    - The attention is recomputed in float32 (the released code casts the softmax back to the
      model dtype before averaging).
    - Batches: rows are ranked on their own, as released; rows are left-padded here (the
      released code requires right padding).
    - Ties in the ranking go to the lowest index (`torch.topk` leaves them unspecified).
    - A stage that would keep no token (int(N * ratio^i) = 0) raises a ValueError; the released
      code drops every image token there.
    """

    layers: tuple[int, ...] = field(default=(8, 16, 24))
    ratio: float = 0.5

    stage = "llm"
    paper = "xing2024pyramiddrop"
    mechanisms = ("attention",)
    modality = ("image", "video")
    needs = ("attention",)
    reads_features = False
    attention_from = "own"
    budget_knob = "ratio"
    identity = {"ratio": 1.0}
    example = {"layers": (1, 2, 3), "ratio": 0.5}

    def __post_init__(self) -> None:
        hint = (
            "pass the decoder layers to drop before, increasing ints >= 1 "
            "(the released setting: (8, 16, 24))"
        )
        self.layers = check_ints("layers", self.layers, 1, hint, increasing=True)
        ratio = self.ratio
        hint = "pass lambda, the kept fraction per stage, in (0, 1]"
        check_number("ratio", ratio, 0, 1, open_low=True, hint=hint)

    def kept(self, n: int, stage: int) -> int:
        """Visual tokens left after stage `stage` (0-based) of N: int(N * ratio^(stage + 1))."""
        count = int(n * self.ratio ** (stage + 1))
        if count < 1:
            raise ValueError(
                f"pdrop keeps int({n} * {self.ratio}^{stage + 1}) = 0 tokens after layer "
                f"{self.layers[stage]}: pass a larger ratio or fewer layers"
            )
        return count

    def output_count(self, tokens: Tokens) -> int | None:
        return tokens.special + self.kept(tokens.count - tokens.special, len(self.layers) - 1)

    def decoder_layers(self) -> tuple[int, ...]:
        return self.layers

    def step(self, index: int, count: int) -> Method:
        """Stage `index`'s rank & drop: FastV's rule, keeping its count of the original tokens."""
        return FastV(keep=self.kept(count, index), layer=self.layers[index])

    def compress(self, tokens: Tokens) -> Compression:
        count = self.output_count(tokens)
        attention = tokens.attention[:, :, -1, :]  # the last instruction token's row
        scores = attention.to(work_dtype(attention)).mean(dim=1)
        return select_top(tokens, scores, count)
