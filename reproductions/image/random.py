"""The uniform random baseline every compression paper compares against."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..interface import Budget, Compression, Method, Tokens, resolve_keep, validate_keep
from ..ops import select, with_special
from ..registry import register


@register("random")
@dataclass
class RandomKeep(Method):
    """Keep a uniform random subset of `keep` tokens (special tokens always), in original order.

    Every batch row draws from a fresh generator seeded with `seed`, so a row's choice does not
    depend on the rest of the batch (rows of the same length keep the same positions).
    """

    keep: Budget = 0.25
    seed: int = 0

    mechanisms = ()
    modality = ("image", "video", "audio")
    reads_features = False
    example = {"keep": 16}

    def __post_init__(self) -> None:
        validate_keep(self.keep)

    def compress(self, tokens: Tokens) -> Compression:
        k = resolve_keep(self.keep, tokens.count, tokens.special) - tokens.special
        ordinary = tokens.count - tokens.special
        generator = torch.Generator().manual_seed(self.seed)
        row = torch.randperm(ordinary, generator=generator)[:k].sort().values + tokens.special
        idx = row.to(tokens.features.device).expand(tokens.batch, k)
        return select(tokens, with_special(tokens, idx))
