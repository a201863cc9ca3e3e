"""The grid half of the encoder stage's merging (`encoder.py`): the patch grid a `grid` method
reads (MustDrop's cells) where the tokens still lie on it, and, in the grid families (Gemma 3,
Idefics3, InternVL), merging whole pooling units (a token's 2x2 or 4x4 patches) and putting them
back on the grid before the model's own pooling."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ...interface import Method, Tokens
from .merging import Merging


class GridMerging(Merging):
    """What `EncoderMerging` does on the grid; it sets `special`, `units`, `sizes`, `source`,
    `regrouped` and `_compose`."""

    special: int
    units: Tensor | None
    sizes: Tensor | None
    source: Tensor | None
    regrouped: bool

    def refuse_padding(self, mask: Tensor | None) -> None:
        """Unit merging reorders and shortens the sequence, which a padding mask cannot follow:
        refuse a mask that hides patches (one that hides nothing the caller drops)."""
        if mask is not None and not bool((mask if mask.dtype == torch.bool else mask == 0).all()):
            raise ValueError(
                "the encoder stage merges whole pooling units of full tiles; this call pads some "
                "tiles (a patch attention mask): pass full-size tiles, or use a projector-stage method"
            )

    def patch_sizes(self) -> Tensor | None:
        """The size of every current encoder token (a unit's size on each of its patches; a
        leading [CLS] its own)."""
        if self.sizes is None or self.units is None or not self.regrouped:
            return self.sizes if self.units is None else None
        s = self.special
        return torch.cat([self.sizes[:, :s], self.sizes[:, s:].repeat_interleave(self.units.shape[1], dim=1)], 1)

    def on_grid(self, hidden: Tensor) -> Tensor:
        """The units back on the grid: each original unit's patches hold its merged unit's (a
        leading [CLS] stays ahead)."""
        if not self.regrouped:  # nothing merged: the patches never left the grid
            return hidden
        s, (b, _, d), k = self.special, hidden.shape, self.units.shape[1]
        merged = hidden[:, s:].reshape(b, -1, k, d)
        slots = (self.source[:, s:] - s).clamp_min(0)
        placed = merged.gather(1, slots[:, :, None, None].expand(-1, -1, k, d).to(hidden.device))
        grid = torch.empty(b, self.units.numel(), d, dtype=hidden.dtype, device=hidden.device)
        grid[:, self.units.flatten().to(hidden.device)] = placed.reshape(b, -1, d)
        return torch.cat([hidden[:, :s], grid], 1)

    def square_grid(self, hidden: Tensor) -> tuple[int, int] | None:
        """The (H, W) grid of the patch tokens for a method that needs it (`grid`: MustDrop's
        cells), where they still lie on it (no earlier layer merged or reordered them) and form
        a square, as a CLIP or SigLIP encoder's patches do; else None (the method says why)."""
        n = hidden.shape[1] - self.special
        side = math.isqrt(n)
        start = torch.arange(hidden.shape[1], device=hidden.device)
        on_grid = self.source is None or (self.source.shape[1] == hidden.shape[1] and bool((self.source == start).all()))
        return (side, side) if on_grid and side * side == n else None

    def _merge_units(self, index: int, method: Method, keys: Tensor, hidden: Tensor) -> Tensor:
        """Grid families: the method on one token per pooling unit (its patches concatenated, its
        keys averaged); a leading [CLS] never merges."""
        (b, _, d), grid, s, k = hidden.shape, hidden, self.special, self.units.shape[1]
        lead, hidden, lead_keys, keys = hidden[:, :s], hidden[:, s:], keys[:, :s], keys[:, s:]
        if not self.regrouped:  # still in grid order: put each unit's patches side by side
            order = self.units.flatten().to(hidden.device)
            hidden, keys = hidden[:, order], keys[:, order]
        hidden = torch.cat([lead.repeat(1, 1, k), hidden.reshape(b, -1, k * d)], 1)  # [CLS]: as wide
        keys = torch.cat([lead_keys, keys.reshape(b, -1, k, keys.shape[-1]).mean(2)], 1)
        comp = method(Tokens(features=hidden, keys=keys, sizes=self.sizes, special=s))
        if not self.regrouped:
            units = torch.arange(hidden.shape[1], device=hidden.device)
            if comp.count == hidden.shape[1] and bool((comp.source == units).all()):
                self._compose(index, comp)
                return grid  # nothing merged yet: stay on the grid, bit for bit
            self.regrouped = True
        self._compose(index, comp)
        return torch.cat([lead, comp.features[:, s:].reshape(b, -1, d)], 1)  # special tokens never merge
