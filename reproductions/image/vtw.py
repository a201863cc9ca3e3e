"""VTW: withdraw every visual token from the LLM after decoder layer K."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Compression, Method, Tokens, check_int
from ..ops import input_sizes
from ..registry import register

#: the official KL threshold eta per model of its `--findk` search (`lmms_eval/__main__.py`);
#: any other model gets the LLaVA-1.5-7B value, as released
ETA: dict[str, float] = {
    "llava-v1.5-13b": 0.0005,
    "llava-v1.5-7b": 0.003,
    "llava-v1.6-vicuna-7b": 0.0001,
}
#: the first layer the official search tries
FIRST_LAYER = 5


@register("vtw")
@dataclass
class VTW(Method):
    """Withdraw (remove) all visual tokens from decoder layer `layer` (K) on, during prefill.

    "Boosting Multimodal Large Language Models with Visual Tokens Withdrawal for Rapid
    Inference" (Lin et al., AAAI 2025, arXiv 2405.05803). Layers 0 .. K-1 see the whole
    sequence; before layer K runs, the visual rows are cut from the hidden states (the text
    rows keep their position ids, the official `pe_type = "keep"`), so layers >= K and their
    KV cache hold text only. The output is empty: no visual token is kept.

    K: the released LLaVA-1.5-7B run (README, `--k=15`, also `temp_cache.k`) withdraws at
    K = 15, the default here; the lmms-eval flag's default and the chat CLI use 16 (7B) and
    20 (13B). The official picks K by `--findk` on a few samples: for every K in 5 .. L-1 it
    reruns the prompt with the visual tokens withdrawn at K, takes KL(withdrawn || full) of the
    last token's next-token distribution (`KLDivLoss(log_softmax(full), softmax(withdrawn))`,
    batch mean), averages over samples, and K is the first layer whose mean is <= eta (`ETA`).
    `divergence` and `search_layer` reproduce that arithmetic on given logits; the forward
    passes that produce them are not run here (they need the model and calibration data).

    Differences from the official code:
    - The official cuts the span [system_token_nums, + image_token_nums): the tokens before the
      first image, then as many as the last image has, which is the image only for a single
      image. Here every media token of a row is withdrawn, however many spans it has.
    - Batches: the official cuts the same column span in every row (it supports batch 1 with
      right padding); here each row's own media columns go, rows left-padded.
    - `search_layer` raises a ValueError where no layer meets eta (the official indexes an
      empty tensor and crashes).
    """

    layer: int = 15

    stage = "llm"
    paper = "lin2024boosting"
    mechanisms = ("attention",)
    modality = ("image", "video")
    reads_features = False
    special_tokens = (0,)
    example = {"layer": 2}
    benchmark = {"layer": 15}

    def __post_init__(self) -> None:
        check_int("layer", self.layer, 1, "pass K, the 0-based decoder layer from which the visual "
                  "tokens are withdrawn, an int >= 1 (the released LLaVA-1.5-7B run: 15)")

    def output_count(self, tokens: Tokens) -> int | None:
        return 0

    def compress(self, tokens: Tokens) -> Compression:
        x = tokens.features
        b, n, d = x.shape
        empty = torch.empty(b, 0, dtype=torch.long, device=x.device)
        return Compression(
            features=x.new_empty(b, 0, d),
            source=torch.full((b, n), -1, dtype=torch.long, device=x.device),
            positions=empty,
            sizes=input_sizes(tokens)[:, :0],
        )

    @staticmethod
    def divergence(full: Tensor, withdrawn: Tensor) -> Tensor:
        """The official search's statistic: KL(softmax(withdrawn) || softmax(full)) of the
        last token's logits (B, V) each, summed over the vocabulary and averaged over the batch
        (`KLDivLoss(reduction="batchmean")`), in float32 at least."""
        if full.shape != withdrawn.shape or full.dim() != 2:
            raise ValueError(
                f"pass the last token's logits (B, V) of the full and the withdrawn run, got "
                f"{tuple(full.shape)} and {tuple(withdrawn.shape)}"
            )
        dtype = torch.promote_types(full.dtype, torch.float32)
        log_full = full.to(dtype).log_softmax(-1)
        log_withdrawn = withdrawn.to(dtype).log_softmax(-1)
        kl = (log_withdrawn.exp() * (log_withdrawn - log_full)).sum(-1)
        return kl.mean()

    @staticmethod
    def search_layer(divergences: Tensor, eta: float = ETA["llava-v1.5-7b"], first: int = FIRST_LAYER) -> int:
        """K from `divergences` (S, L - first): per sample, the divergence with the visual tokens
        withdrawn at layers first, first + 1, ...; the first layer whose mean over the samples
        is <= eta."""
        if divergences.dim() != 2 or divergences.shape[1] == 0:
            raise ValueError(
                f"divergences has shape {tuple(divergences.shape)}: pass (samples, layers) "
                f"divergences, one column per withdrawal layer from {first} on"
            )
        if not math.isfinite(eta) or eta < 0:
            raise ValueError(f"eta={eta!r}: pass a finite threshold >= 0")
        below = (divergences.mean(0) <= eta).nonzero()
        if len(below) == 0:
            raise ValueError(
                f"no withdrawal layer has a mean divergence <= eta={eta}: pass a larger eta"
            )
        return int(below[0]) + first
