"""The llm stage at decoding steps: which cached rows each layer's step sees.

Each segment of layers [K_i, K_i+1) caches the rows its step kept, and sees them, plus each new
token, by default ("seen"). A method may say that its official cache is cut after the prefill
(`Method.decoding_rows`): from layer 0 (PruneVid, "kept") or from the first layer a step reads
(MustDrop, "kept_from_read") on, decoding steps see only the rows the last step kept; the other
entries stay in the cache, masked (the same attention). Where the family's layers have types
(Gemma 3), a sliding layer's mask covers the keys its cache returns (`get_mask_sizes`, the
window counted over the kept rows); a cut of layers < K is refused there, as sliding layers
there do not hold every row.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ...interface import Method
from ..sequence import mask_4d, valid_columns
from .decoder import Group


def cut_layer(method: Method, first: int) -> int | None:
    """The first decoder layer whose decoding steps see only the rows the method's last step
    kept (`Method.decoding_rows`), for a method whose first step is at layer `first`."""
    rows = method.decoding_rows
    if rows not in ("seen", "kept", "kept_from_read"):
        raise ValueError(f"{method.name}.decoding_rows={rows!r}: declare 'seen', 'kept' or 'kept_from_read'")
    if rows == "seen":
        return None
    read = first - 1 if first > 0 and method.attention_from == "previous" else first
    return 0 if rows == "kept" else read


class DecodingSteps:
    """The decoding half of `LlmStage` (a mixin over its prefill state: `indices`, `groups`,
    `cut`, `types`, `ks`)."""

    def _earlier(self, j: int, module: nn.Module, args: tuple, kwargs: dict):
        return None if self.in_prefill else self.apply(self.earlier, j, args, kwargs)

    def decode(self, args: tuple, kwargs: dict, embeds: Tensor):
        """Every segment's cache gets the step's rows; its mask sees its own kept columns, or,
        in the layers `decoding_rows` cuts, only those the last step kept."""
        if self.cols is None:
            return None
        b, q = embeds.shape[:2]
        mask2d = self.mask_2d(kwargs)
        full = mask2d if mask2d is not None else torch.ones(b, self.seen + q, dtype=torch.long, device=embeds.device)
        new = torch.arange(self.seen, self.seen + q, device=embeds.device).expand(b, q)
        total = self.seen + q
        for i, index in enumerate(self.indices):
            if index is not None:
                self.indices[i] = torch.cat([index.to(new.device), new], dim=1)
        kept = None
        if self.cut is not None:  # the original indices the last step kept (and the step's rows)
            last = self.indices[-1]
            kept = torch.zeros(b, total + 1, dtype=torch.bool, device=new.device)
            kept.scatter_(1, torch.where(last >= 0, last, total), True)
            kept = kept[:, :total]
            everything = torch.arange(total, device=new.device).expand(b, total)
            mask = mask_4d(self.decoding_columns(everything, full, kept), q, self.implementation, embeds.dtype)
            self.earlier = Group({None: {"attention_mask": mask}})
        for i, index in enumerate(self.indices):
            if index is not None or kept is not None:  # every segment is past the cut (<= K_1)
                at = index if index is not None else torch.arange(total, device=new.device).expand(b, total)
                self.groups[i] = Group(self.step_masks(i, self.decoding_columns(at, full, kept), q, embeds.dtype))
        self.seen += q
        self.cols = self.indices[-1]
        return None

    @staticmethod
    def decoding_columns(at: Tensor, full: Tensor, kept: Tensor | None) -> Tensor:
        """(B, total) the columns a decoding step sees in layers whose cache holds the rows `at`
        (original indices, -1 padding): their real ones, only those in `kept` where given."""
        valid = valid_columns(at, full)
        return valid if kept is None else valid & kept.gather(1, at.clamp_min(0))

    def step_masks(self, i: int, valid: Tensor, q: int, dtype: torch.dtype) -> dict[str | None, dict[str, Any]]:
        """At a decoding step, the masks of segment i's layers over its kept columns `valid`
        (B, L + q), per layer type: a sliding layer's (the first of its type in the segment:
        its module's `sliding_window`) over the keys its cache returns, window counted over the
        kept rows."""
        end = self.ks[i + 1] if i + 1 < len(self.ks) else len(self.types)
        out: dict[str | None, dict[str, Any]] = {}
        for j in range(self.ks[i], end):
            if self.types[j] in out:
                continue
            window = getattr(self.adapter.layers[j].self_attn, "sliding_window", None)
            mask = mask_4d(valid, q, self.implementation, dtype, window if self.types[j] else None)
            layer = self.cache.layers[j] if self.types[j] is not None else None
            if layer is not None:
                mask = mask[..., -layer.get_mask_sizes(q)[0] :]
            out[self.types[j]] = {"attention_mask": mask}
        return out

