"""The encoder signals the projector stage recomputes from one call of an encoder attention
module (its own projections, eagerly, for that layer only): [CLS] attention or attention
received, keys averaged over heads, and `received` averaged over heads too."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..attention import encoder_queries_keys, probabilities, received
from .base import argument


def _queries_keys(module: nn.Module, args: tuple, kwargs: dict) -> tuple[Tensor, Tensor, Tensor, float]:
    """The call's hidden states, its queries and keys as the module makes them, and its scale."""
    hidden = argument(args, kwargs, "hidden_states")
    q, k = encoder_queries_keys(module, hidden, kwargs.get("position_embeddings"))
    return hidden, q, k, module.scale if hasattr(module, "scale") else module.scaling


def encoder_signals(module: nn.Module, args: tuple, kwargs: dict, cls: bool) -> tuple[Tensor, Tensor]:
    """(B, heads, L) attention and (B, L, d) keys averaged over heads, of one call of an encoder
    attention module: the [CLS] row's attention where the encoder has a [CLS], else the attention
    each token receives averaged over its query rows (within each image or frame of a flat Qwen
    sequence, as the module's `cu_seqlens` bound it)."""
    hidden, q, k, scale = _queries_keys(module, args, kwargs)
    keys = k.mean(1)  # ToMe / VisionZip read keys averaged over heads
    if cls:
        attention = probabilities(q[:, :, :1], k, scale)[:, :, 0]
    else:
        attention = received_within(q, k, scale, kwargs)
    return attention.to(hidden.dtype), keys


def received_within(q: Tensor, k: Tensor, scale: float, kwargs: dict) -> Tensor:
    """(B, heads, L) the attention each token receives averaged over the query rows that see it:
    within each image, frame or window of a flat Qwen sequence (its `cu_seqlens`), else under
    the call's mask."""
    if kwargs.get("cu_seqlens") is not None:
        bounds = kwargs["cu_seqlens"].tolist()
        return torch.cat(
            [received(q[:, :, a:b], k[:, :, a:b], scale) for a, b in zip(bounds, bounds[1:], strict=False)], dim=-1
        )
    mask = kwargs.get("attention_mask")
    allowed = None if mask is None else (mask if mask.dtype == torch.bool else mask == 0)
    return received(q, k, scale, allowed)


def received_signal(module: nn.Module, args: tuple, kwargs: dict) -> Tensor:
    """(B, L) `received` of one call of an encoder attention module: the attention each token
    receives, averaged over heads and every query row ([CLS] included), in float32."""
    _, q, k, scale = _queries_keys(module, args, kwargs)
    return received_within(q, k, scale, kwargs).mean(1)
