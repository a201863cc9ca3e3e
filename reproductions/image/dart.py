"""DART: keep the visual tokens least duplicated with a few pivot tokens, inside the LLM."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Budget, Compression, Method, Tokens, check_int, resolve_keep, validate_keep
from ..ops import cosine_matrix, select, top_k, work_dtype
from ..registry import register


@register("dart")
@dataclass
class DART(Method):
    """Pick pivot tokens by the L1 norm of their keys, then keep, for each pivot in turn, the
    visual tokens least similar (cosine) to it: the tokens that duplicate others go.

    "Stop Looking for "Important Tokens" in Multimodal Language Models: Duplication Matters
    More" (Wen et al., EMNLP 2025, arXiv 2502.11494). Before decoder layer `layer` (K) runs,
    during prefill:
    1. pivots: the `pivot_image` visual tokens and the `pivot_text` text rows after the visual
       span (`text`) whose layer K - 1 keys (`keys`, `text_keys`: post-RoPE, heads concatenated)
       have the largest L1 norm;
    2. per pivot, `c = floor(T / (pivot_image + pivot_text))` tokens are taken from the
       visual tokens not yet taken (image pivots excluded from the start): those with the
       lowest cosine similarity to the pivot, over the hidden states entering layer K passed
       through the decoder's final norm (`hidden_from = "final_norm"`);
    3. kept: the image pivots and every token taken (text pivots only guide), positional order.
    T is `keep` (an int count, or a fraction of N: floor(keep * N)), the official
    `max_num_trunction`; so `pivot_image + (pivot_image + pivot_text) * c` tokens are kept
    (`output_count`), e.g. 4 + 8 * 16 = 132 of 576 at T = 128.
    Defaults, from the released LLaVA-1.5 scripts: K = 2, T = 128, 4 image and 4 text pivots.

    Source: no snapshot of ZichenWen1/DART could be fetched here. Written from the paper, its
    README and scripts (`--pruned_layer 2 --max_num_trunction 128 --pivot_image_token 4
    --pivot_text_token 4`), LightCompress' port (`llmc/.../token_reduction/dart.py`) and a
    published copy of the official `get_retained_image_token`; the rounding `int(T // pivots)`
    is the official one (LightCompress rounds `int(N * (1 - ratio) / pivots)`, one token
    fewer per pivot at 0.778).

    Differences from the official code:
    - Pivot order: the official visits the pivots in the iteration order of a Python set of
      their sequence indices (hash order); here image pivots come first, then text pivots,
      each in sequence order. Tokens taken by one pivot are unavailable to the next, so the
      kept set can differ where two pivots' least similar tokens overlap: on random inputs of
      LLaVA-1.5's shape (576 tokens, D = 4096, T = 128) the official loop visiting the pivots
      in sequence order keeps exactly these 132 tokens; in its set order, 125 to 131 of them.
    - Where the tokens not yet taken are fewer than c (T near N), the pivot takes what is left;
      the official `topk` raises. Fewer text rows than `pivot_text` use every text row; fewer
      visual tokens than `pivot_image` make every one a pivot (official: `topk` raises).
    - Batches: the official scores batch row 0 and applies it to every row; rows are scored
      on their own here.
    - Norms and similarities in float32 (the official computes them in the model dtype), the
      cosine as normalised rows' dot products (`F.cosine_similarity` up to its eps); ties in
      the similarity ranking go to the lowest index (`torch.topk` promises no order).
    """

    keep: Budget = 128
    layer: int = 2
    pivot_image: int = 4
    pivot_text: int = 4

    stage = "llm"
    paper = "wen2025stop"
    mechanisms = ("similarity",)
    modality = ("image", "video")
    needs = ("keys", "text", "text_keys")
    hidden_from = "final_norm"
    special_tokens = (0,)
    #: with no text pivot, 4 image pivots take 4 * floor(N / 4) >= N - 4 tokens: all of them
    identity = {"keep": 1.0, "pivot_text": 0}
    example = {"keep": 16, "layer": 2}

    def __post_init__(self) -> None:
        validate_keep(self.keep)
        check_int("layer", self.layer, 1, "pass K, the 0-based decoder layer to prune before, an int "
                  ">= 1 (the pivots' keys come from layer K - 1; released: 2)")
        for name in ("pivot_image", "pivot_text"):
            check_int(name, getattr(self, name), 0, "pass a count of pivots, an int >= 0 (released: 4)")
        if self.pivot_image + self.pivot_text == 0:
            raise ValueError("pivot_image + pivot_text is 0: pass at least one pivot (released: 4 and 4)")

    def per_pivot(self, tokens: Tokens) -> int:
        """c = floor(T / pivots), the official `TOKEN_TOPK`."""
        total = resolve_keep(self.keep, tokens.count, tokens.special)
        return total // (self.pivot_image + self.pivot_text)

    def pivots(self, tokens: Tokens) -> tuple[int, int]:
        """The image and text pivot counts these tokens allow."""
        return min(self.pivot_image, tokens.count), min(self.pivot_text, tokens.text.shape[1])

    def output_count(self, tokens: Tokens) -> int | None:
        image, text = self.pivots(tokens)
        return min(tokens.count, image + (image + text) * self.per_pivot(tokens))

    def compress(self, tokens: Tokens) -> Compression:
        if tokens.text_keys.shape[1] != tokens.text.shape[1]:
            raise ValueError(
                f"text_keys has {tokens.text_keys.shape[1]} rows but text has "
                f"{tokens.text.shape[1]}: pass the keys of the same text rows"
            )
        x, keys = tokens.features, tokens.keys
        b, n, _ = x.shape
        image, text = self.pivots(tokens)
        per = self.per_pivot(tokens)
        image_pivots = _largest_l1(keys, image)
        text_pivots = _largest_l1(tokens.text_keys, text)
        rows = torch.arange(b, device=x.device)[:, None]
        states = torch.cat([x[rows, image_pivots], tokens.text[rows, text_pivots]], dim=1)
        similarity = cosine_matrix(states, x)  # (B, pivots, N)
        taken = torch.zeros(b, n, dtype=torch.bool, device=x.device)
        taken[rows, image_pivots] = True
        kept = [image_pivots]
        for p in range(image + text):
            left = n - image - p * per
            count = min(per, max(left, 0))
            if count == 0:
                break
            scores = similarity[:, p].masked_fill(taken, float("inf"))
            picked = torch.sort(scores, dim=-1, stable=True).indices[:, :count]
            taken[rows, picked] = True
            kept.append(picked)
        idx = torch.cat(kept, dim=1).sort(dim=-1).values
        return select(tokens, idx)


def _largest_l1(keys: Tensor, count: int) -> Tensor:
    """(B, count) indices of the rows of `keys` (B, L, Dk) with the largest L1 norm (ties:
    lowest index), in positional order."""
    norms = keys.to(work_dtype(keys)).abs().sum(-1)
    return top_k(norms, count)
