"""Attention recomputed from a decoder or encoder attention module's own projections: the one
place the stages get attention weights when the model runs SDPA (which returns none), for the
layer and the rows they need only."""

from __future__ import annotations

import sys

from torch import Tensor, nn


def rope(attn: nn.Module, q: Tensor, k: Tensor, position_embeddings: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Apply the rotary embedding exactly as the attention module's own file does."""
    module = sys.modules[type(attn).__module__]
    cos, sin = position_embeddings
    return module.apply_rotary_pos_emb(q, k, cos, sin)


def queries(attn: nn.Module, hidden: Tensor) -> Tensor:
    """(B, heads, L, head_dim) queries of a decoder attention module, before RoPE."""
    b, n, _ = hidden.shape
    return attn.q_proj(hidden).view(b, n, -1, attn.head_dim).transpose(1, 2)


def queries_keys(attn: nn.Module, hidden: Tensor, position_embeddings: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """(B, heads, L, head_dim) queries and keys (kv heads repeated) of a decoder attention module."""
    b, n, _ = hidden.shape
    q = queries(attn, hidden)
    k = attn.k_proj(hidden).view(b, n, -1, attn.head_dim).transpose(1, 2)
    q, k = rope(attn, q, k, position_embeddings)
    return q, repeat_heads(k, q.shape[1])


def repeat_heads(k: Tensor, heads: int) -> Tensor:
    """Grouped-query keys (B, kv heads, L, d) repeated to `heads` query heads."""
    return k.repeat_interleave(heads // k.shape[1], dim=1)


def probabilities(q: Tensor, k: Tensor, scale: float, allowed: Tensor | None = None) -> Tensor:
    """softmax((q @ kᵀ) * scale) over the keys, in float32; `allowed` (bool, broadcastable to the
    scores) hides the keys a query may not see (causality, padding)."""
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(-1)
