"""Attention-based token pruning inside audio transformers (AST / Audio-MAE)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from ..interface import Compression, Method, Tokens, check_ints, check_number
from ..ops import select, top_k, with_special, work_dtype
from ..registry import register


@register("audio_attention_prune")
@dataclass
class AudioAttentionPrune(Method):
    """Keep the spectrogram patches that receive the most attention in an encoder layer.

    Paper: "Token Pruning in Audio Transformers: Optimizing Performance and Decoding Patch
    Importance" (Lee & Lee, ECAI 2025, arXiv 2504.01690), applying EViT-style top-k pruning to
    AST and Audio-MAE. After the self-attention of a pruning layer, the special tokens ([CLS],
    and AST's distillation token) are kept and ceil(keep_ratio * (N - special)) of the other
    tokens survive, ranked by an attention score over the ordinary tokens j:

    - `query="tokens"` (default): the attention token j receives, averaged over the heads and
      over the non-special query rows, score_j = mean_h mean_{m >= special} A[h, m, j]. With the
      encoder's self-attention (M = N) the rows of the special tokens are dropped; if the M
      query rows are not the tokens themselves (M != N) all of them are averaged.
    - `query="cls"`: the attention from query row 0 (the [CLS] token), averaged over heads,
      score_j = mean_h A[h, 0, j]: the rule of the released AST pruning layer (`attn[:, :, 0,
      2:].mean(dim=1)`). The default row mean is the patch-importance score the same code
      extracts (`attn[:, :, 2:, 2:].mean(dim=(1, 2))`) and the rule the issue specifies.

    Kept tokens come back special tokens first, then in positional order; ties go to the
    earlier token.

    Parameters: `keep_ratio` in (0, 1]: the fraction of the ordinary tokens kept at each pruning
    layer, rounded up as the official code does (this is not the project's floor(keep * N)
    `keep`); `query`; `layers`: the 0-based encoder layers that prune, each after its attention
    and before its MLP (the official `drop_loc`, default (3, 6, 9) of the 12-layer AST /
    Audio-MAE; `encoder_step` names them to the integration, which refuses layers the encoder
    does not have).
    Signal: `attention` (B, heads, M, N), the self-attention of the pruning layer (M = N).

    Differences from the official code: the official layer returns the kept tokens in score
    order (torch.topk, sorted=True); here they keep their positional order, which does not
    change what a transformer without positional re-embedding computes, and gives the LLM /
    position ids a monotone sequence. Inside the audio encoders of Qwen2-Audio and Qwen2.5-Omni
    (`reproductions.hf`, encoder stage) a token is a pooling pair of frames, scored by the mean
    over its two frames of the attention they receive, averaged over the real frames of its
    attention window (a clip; a Qwen2.5-Omni chunk) as queries (M != N); each window keeps its
    own ceil(keep_ratio * units), and padded frames are never candidates nor queries.
    """

    keep_ratio: float = 0.7
    query: Literal["tokens", "cls"] = "tokens"
    layers: tuple[int, ...] = (3, 6, 9)

    paper = "lee2025token"
    stage = "encoder"
    modality = ("audio",)
    budget_knob = "keep_ratio"
    mechanisms = ("attention",)
    needs = ("attention",)
    identity = {"keep_ratio": 1.0}
    example = {"keep_ratio": 0.5, "layers": (0, 1)}
    benchmark = {"keep_ratio": 0.7}

    def __post_init__(self) -> None:
        hint = "pass the fraction of ordinary tokens to keep, in (0, 1]"
        check_number("keep_ratio", self.keep_ratio, 0.0, 1.0, open_low=True, hint=hint)
        if self.query not in ("tokens", "cls"):
            raise ValueError(
                f"query={self.query!r}: pass 'tokens' (mean over token rows) or 'cls' (row 0)"
            )
        hint = "pass the 0-based encoder layers that prune, increasing (official: (3, 6, 9))"
        self.layers = check_ints("layers", self.layers, 0, hint, increasing=True)

    def encoder_step(self, index: int, count: int, feature: int) -> Method | None:
        """This method in the layers that prune (`layers`), which the encoder (whose layer
        `feature` is its last that counts) must have; None in the others."""
        if self.layers[-1] > feature:
            raise ValueError(
                f"audio_attention_prune.layers={self.layers}, but the encoder has {feature + 1} layers: "
                f"pass layers between 0 and {feature}"
            )
        return self if index in self.layers else None

    def output_count(self, tokens: Tokens) -> int:
        return tokens.special + math.ceil(self.keep_ratio * (tokens.count - tokens.special))

    def compress(self, tokens: Tokens) -> Compression:
        if self.query == "cls" and tokens.special == 0:
            raise ValueError(
                "audio_attention_prune(query='cls') ranks by the [CLS] row: pass special >= 1 "
                "leading tokens, or query='tokens'"
            )
        scores = self.scores(tokens.attention, tokens.special)
        kept = top_k(scores, self.output_count(tokens) - tokens.special) + tokens.special
        return select(tokens, with_special(tokens, kept))

    def scores(self, attention: Tensor, special: int) -> Tensor:
        """(B, N - special) importance of the ordinary tokens."""
        a = attention.to(work_dtype(attention)).mean(dim=1)  # (B, M, N): mean over heads
        if self.query == "cls":
            return a[:, 0, special:]
        rows = a[:, special:] if a.shape[1] == a.shape[2] else a
        return rows.mean(dim=1)[:, special:]
