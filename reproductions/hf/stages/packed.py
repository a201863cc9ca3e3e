"""The encoder stage in the Qwen ViTs (Qwen2-VL, Qwen2.5-VL, Qwen2.5-Omni's vision tower,
Qwen3-VL). They run every image of a call as one flat sequence of patches, cut into images (and,
in Qwen2.5-VL's windowed blocks, windows) by `cu_seqlens`, the spatial_merge_size² patches of each
merge unit consecutive; the merger MLP turns each unit's concatenated patches into one LLM token.

ToMe merges whole merge units, so that each merged unit leaves one LLM token: a unit's patches
concatenated, its keys (the attention's, rotated) averaged over its patches and heads, its size
on each of its patches in the proportional attention; within each image (each frame of a video:
its own attention sequence), in the order the blocks see the units (Qwen2.5-VL: window order).
The sequence shrinks, so each block gets the kept patches' rotary embeddings and `cu_seqlens`
that count each image's (window's) kept patches: a merged unit stays in its destination's
window. The merger, and Qwen3-VL's DeepStack mergers, run on the kept units only and hand the
model every unit holding the token of the unit it went into (ToMe's unmerge), so the model's own
splitting, window un-reordering and placeholder checks hold and each image's tokens identify its
compression. A DeepStack layer tapped before later merges is thereby folded with them in the
LLM input (`input.py` averages a kept token's units, which repeat each tapped unit by its size):
ToMe's size-weighted average. Videos pass untouched (ToMe is an image method).

A method may act per block (`Method.encoder_step`, asked per image with the merger as layer
`depth`: FlowCut scores in every block and prunes in some); it may read the block's per-head
`values` (a unit's patches' concatenated), the `scores` its previous step returned, and, where it
names a `cls_free_query` ("mean": FlowCut's Qwen2-VL port), `cls_attention` from the image's mean
query, each unit's patches' attention summed. A unit a method drops leaves no token.

Differences from ToMe's official code (single patches of a classification ViT, absolute position
embeddings): the tokens are merge units; the keys carry the 2-D rotary embedding (the ViT's only
position signal, as ToMe's keys carry the absolute one); A / B alternate in block order. Blocks
after a merge attend through the model's eager or SDPA attention (the additive log-size bias rules
out flash kernels). The ViT's own `last_hidden_state` and recorded hidden states are the shorter
sequences.
"""

from __future__ import annotations

import functools
import sys
from itertools import accumulate
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.vision_utils import get_vision_window_index

from ...interface import Compression, Method, Tokens
from ...ops import proportional_attention_bias
from ..attention import flat_queries_keys_values, probabilities
from ..models.base import shadow
from .merging import Merging


def _pairs(bounds: Tensor) -> list[tuple[int, int]]:
    edges = bounds.tolist()
    return list(zip(edges, edges[1:], strict=False))


class PackedMerging(Merging):
    """ToMe over the merge units of a Qwen ViT call; tracks the merges of the last image call."""

    def __init__(self, method: Method, vision: nn.Module, outer: nn.Module, schedule: list[int] | None) -> None:
        super().__init__(method, vision.blocks, schedule)
        self.vision, self.outer = vision, outer
        self.unit = vision.spatial_merge_size**2
        self.calling: str | None = None  # the modality whose features the outer model computes
        self.reset(None, active=False)

    def reset(self, grid: Tensor | None, active: bool) -> None:
        """A new ViT call over `grid` (merged in if `active`: an image call)."""
        self.grid, self.active = grid, active
        self.kept: Tensor | None = None  # (K,) block-order unit each current unit is, ascending
        self.owner: Tensor | None = None  # (U,) current unit each block-order unit went into
        self.sizes: Tensor | None = None  # (K,) float32
        self.scores: Tensor | None = None  # (K,) what the last block's step returned as `scores`

    # ------------------------------------------------------------------ install / remove
    def install(self) -> None:
        super().install()
        v = self.vision
        self.handles.append(v.register_forward_pre_hook(self._start, with_kwargs=True))
        for merger in (v.merger, *getattr(v, "deepstack_merger_list", ())):
            self.handles.append(merger.register_forward_hook(self._unmerge))
        for name, modality in (("get_image_features", "image"), ("get_video_features", "video")):
            self.handles.append(shadow(self.outer, name, self._marking(getattr(self.outer, name), modality)))

    def _marking(self, features: Any, modality: str) -> Any:
        """`features` (the outer model's get_*_features, which generate() also calls before the
        forward) noting the modality it encodes; the first wins (Qwen3-VL's video features call
        its image features)."""

        @functools.wraps(features)
        def marked(*args: Any, **kwargs: Any) -> Any:
            outer, self.calling = self.calling, self.calling or modality
            try:
                return features(*args, **kwargs)
            finally:
                self.calling = outer

        return marked

    def _start(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        self.reset(grid, active=self.calling == "image" and grid is not None)

    # ------------------------------------------------------------------ the blocks
    def _forward_for(self, index: int):
        merging = self

        def forward(block: nn.Module, hidden_states: Tensor, cu_seqlens: Tensor,
                    position_embeddings: tuple[Tensor, Tensor] | None = None, **kwargs: Any) -> Tensor:
            if not merging.active:
                return type(block).forward(block, hidden_states, cu_seqlens, position_embeddings, **kwargs)
            x = block.norm1(hidden_states)
            if merging.kept is None:  # nothing merged yet: the block's own attention, bit for bit
                out = block.attn(x, cu_seqlens=cu_seqlens, position_embeddings=position_embeddings, **kwargs)
                qkv = flat_queries_keys_values(block.attn, x, position_embeddings)
            else:
                out, qkv = merging.attention(block.attn, x, cu_seqlens, position_embeddings)
            hidden = merging.merge(index, hidden_states + out, qkv, block.attn.scaling)
            return hidden + block.mlp(block.norm2(hidden))

        return forward

    def patches(self) -> Tensor:
        """The block-order index of every current patch."""
        offsets = torch.arange(self.unit, device=self.kept.device)
        return (self.kept[:, None] * self.unit + offsets).flatten()

    def attention(self, attn: nn.Module, x: Tensor, cu_seqlens: Tensor,
                  position_embeddings: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """The attention module's output on the kept patches, with ToMe's proportional attention,
        within the kept part of each of the call's images or windows; and its queries, keys and
        values."""
        patches = self.patches()
        rotary = tuple(p[patches.to(p.device)] for p in position_embeddings)
        q, k, v = flat_queries_keys_values(attn, x, rotary)
        bounds = torch.searchsorted(patches, cu_seqlens.to(patches.device, torch.long))
        bias = proportional_attention_bias(self.sizes.repeat_interleave(self.unit)[None]).to(q.device, q.dtype)
        if attn.config._attn_implementation == "eager":
            function = sys.modules[type(attn).__module__].eager_attention_forward
        else:  # the additive bias rules out flash kernels: SDPA
            function = ALL_ATTENTION_FUNCTIONS["sdpa"]
        outs = [
            function(attn, q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], attention_mask=bias[..., a:b],
                     scaling=attn.scaling, dropout=0.0, is_causal=False)[0]
            for a, b in _pairs(bounds) if b > a
        ]
        return attn.proj(torch.cat(outs, dim=1).reshape(x.shape[0], -1)), (q, k, v)

    # ------------------------------------------------------------------ the merges
    def frames(self, device: torch.device) -> tuple[Tensor, list[int]]:
        """Where each image or frame (one attention sequence) starts among the current units, and
        the units each held before the first block."""
        t, h, w = self.grid.to(device).unbind(-1)
        per_frame = torch.repeat_interleave(h * w // self.unit, t)
        bounds = F.pad(per_frame.cumsum(0), (1, 0))
        return (bounds if self.kept is None else torch.searchsorted(self.kept, bounds)), per_frame.tolist()

    def signals(self, method: Method, a: int, b: int, qkv: tuple[Tensor, Tensor, Tensor], scale: float) -> dict:
        """The signals `method` reads of units [a, b) (one image or frame): keys averaged over
        heads and the unit's patches; per-head values, a unit's patches' concatenated; the
        running `scores`; and `cls_attention` from the image's mean query (`cls_free_query`),
        its softmax over the image's patches summed over each unit's."""
        q, k, v = (x[:, :, a * self.unit : b * self.unit] for x in qkv)
        heads, wanted = k.shape[1], {*method.needs, *method.uses, "keys"}
        out = {"keys": k.mean(1).view(1, b - a, self.unit, -1).mean(2)}
        if "values" in wanted:
            out["values"] = v.reshape(1, heads, b - a, -1)
        if "scores" in wanted and self.scores is not None:
            out["scores"] = self.scores[None, a:b]
        if "cls_attention" in wanted and method.cls_free_query == "mean":
            attention = probabilities(q.mean(2, keepdim=True), k, scale)[:, :, 0]
            out["cls_attention"] = attention.view(1, heads, b - a, self.unit).sum(-1).to(q.dtype)
        return out

    def merge(self, index: int, hidden: Tensor, qkv: tuple[Tensor, Tensor, Tensor], scale: float) -> Tensor:
        """The method's step of this block between attention and MLP, on the units of each image
        or frame; the merger counts as layer `depth` (`encoder_step`'s `feature`)."""
        d = hidden.shape[-1]
        features = hidden.reshape(1, -1, self.unit * d)
        bounds, counts = self.frames(hidden.device)
        bounds, depth = _pairs(bounds), len(self.layers)
        steps = [self._method_for(index).encoder_step(index, count, depth) for count in counts]
        if any(step is None for step in steps):
            return hidden  # the block runs unchanged
        comps = [
            step(Tokens(features=features[:, a:b], sizes=None if self.sizes is None else self.sizes[None, a:b],
                        **self.signals(step, a, b, qkv, scale)))
            for step, (a, b) in zip(steps, bounds, strict=True)
        ]
        if any(c.scores is not None for c in comps):  # an image at its target is read no more: 0
            self.scores = torch.cat([hidden.new_zeros(c.count, dtype=torch.float32) if c.scores is None
                                     else c.scores[0] for c in comps])
        if all(comp.count == b - a for comp, (a, b) in zip(comps, bounds, strict=True)):
            return hidden  # nothing merged in this layer: the states as they are
        kept = self.kept if self.kept is not None else torch.arange(features.shape[1], device=hidden.device)
        starts = accumulate((c.count for c in comps), initial=0)
        slots = torch.cat([torch.where(c.source[0] >= 0, c.source[0] + s, -1) for c, s in zip(comps, starts, strict=False)])
        self.kept = torch.cat([kept[a:b][c.positions[0]] for c, (a, b) in zip(comps, bounds, strict=True)])
        self.owner = slots if self.owner is None else torch.where(self.owner >= 0, slots[self.owner.clamp_min(0)], -1)
        self.sizes = torch.cat([c.sizes[0] for c in comps])
        return torch.cat([c.features for c in comps], dim=1).reshape(-1, d)

    def _unmerge(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
        """A merger's tokens of the kept units, one per unit of the call (the one it went into)."""
        if not self.active or self.kept is None:
            return None
        return output[self.owner.clamp_min(0).to(output.device)]  # a dropped unit: any token will do

    # ------------------------------------------------------------------ the images
    def items(self, placed: Tensor) -> list[tuple[Tensor, Compression]]:
        """Each image of the last call: its tokens as the model places them (`placed`, the
        merger's unmerged output in grid order) and its compression, in grid order."""
        counts = (self.grid.prod(-1) // self.unit).tolist()
        total, device = sum(counts), placed.device
        order = torch.arange(total, device=device)  # block order -> grid order
        if hasattr(self.vision, "window_size"):
            order = get_vision_window_index(
                self.grid, spatial_merge_size=self.vision.spatial_merge_size,
                window_size=self.vision.window_size, patch_size=self.vision.patch_size,
            )[0].to(device)
        kept = order if self.kept is None else order[self.kept.to(device)]
        owner = torch.arange(total, device=device) if self.owner is None else self.owner.to(device)
        sizes = torch.ones(total, device=device) if self.sizes is None else self.sizes.to(device)
        rank = torch.argsort(kept)
        kept, sizes = kept[rank], sizes[rank]
        slot = torch.empty_like(rank)
        slot[rank] = torch.arange(len(rank), device=device)
        source = torch.empty_like(owner)
        source[order] = torch.where(owner >= 0, slot[owner.clamp_min(0)], -1)  # each grid unit's slot, -1 dropped
        out, start = [], 0
        for count in counts:
            a, b = (int(torch.searchsorted(kept, torch.tensor(x, device=device))) for x in (start, start + count))
            positions, tokens = kept[a:b] - start, placed[start : start + count]
            own = source[start : start + count]
            comp = Compression(tokens[positions][None], torch.where(own >= 0, own - a, -1)[None],
                               positions[None], sizes[a:b][None])
            out.append((tokens, comp))
            start += count
        return out
