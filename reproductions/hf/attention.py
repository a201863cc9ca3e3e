"""Attention recomputed from a decoder or encoder attention module's own projections: the one
place the stages get attention weights when the model runs SDPA (which returns none), for the
layer and the rows they need only."""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import Tensor, nn


def rope(attn: nn.Module, q: Tensor, k: Tensor, position_embeddings: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Apply the rotary embedding exactly as the attention module's own file does."""
    module = sys.modules[type(attn).__module__]
    cos, sin = position_embeddings
    return module.apply_rotary_pos_emb(q, k, cos, sin)


def _heads(attn: nn.Module, proj: nn.Module, norm: str, hidden: Tensor) -> Tensor:
    """(B, heads, L, head_dim) of one projection, with the per-head RMSNorm the module applies
    before RoPE where it has one (Qwen3, Gemma 3: `q_norm` / `k_norm`)."""
    b, n, _ = hidden.shape
    x = proj(hidden).view(b, n, -1, attn.head_dim)
    if hasattr(attn, norm):
        x = getattr(attn, norm)(x)
    return x.transpose(1, 2)


def queries(attn: nn.Module, hidden: Tensor) -> Tensor:
    """(B, heads, L, head_dim) queries of a decoder attention module, before RoPE."""
    return _heads(attn, attn.q_proj, "q_norm", hidden)


def queries_keys(attn: nn.Module, hidden: Tensor, position_embeddings: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """(B, heads, L, head_dim) queries and keys (kv heads repeated) of a decoder attention module."""
    q = queries(attn, hidden)
    k = _heads(attn, attn.k_proj, "k_norm", hidden)
    q, k = rope(attn, q, k, position_embeddings)
    return q, repeat_heads(k, q.shape[1])


def key_states(attn: nn.Module, hidden: Tensor, position_embeddings: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """(B, kv heads, L, head_dim) keys of a decoder attention module after RoPE, as its KV cache
    holds them (before RoPE without `position_embeddings`)."""
    k = _heads(attn, attn.k_proj, "k_norm", hidden)
    return k if position_embeddings is None else rope(attn, k, k, position_embeddings)[1]


def repeat_heads(k: Tensor, heads: int) -> Tensor:
    """Grouped-query keys (B, kv heads, L, d) repeated to `heads` query heads."""
    return k.repeat_interleave(heads // k.shape[1], dim=1)


def logits(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """(q @ kᵀ) * scale, the attention scores before the softmax, in float32."""
    return (q.float() @ k.float().transpose(-1, -2)) * scale


def probabilities(q: Tensor, k: Tensor, scale: float, allowed: Tensor | None = None) -> Tensor:
    """softmax((q @ kᵀ) * scale) over the keys, in float32; `allowed` (bool, broadcastable to the
    scores) hides the keys a query may not see (causality, padding)."""
    scores = logits(q, k, scale)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(-1)


def encoder_queries_keys(attn: nn.Module, hidden: Tensor, position_embeddings: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """(B, heads, L, head_dim) queries and keys of a vision-encoder attention module, as its own
    forward makes them: batched (CLIP, SigLIP, InternViT with its q/k norms) or over a flat
    (L, D) sequence with 2-D rotary embeddings (the Qwen ViTs: fused `qkv` or `q`/`k`; B = 1)."""
    if hidden.dim() == 2:
        return flat_queries_keys_values(attn, hidden, position_embeddings)[:2]
    return encoder_heads(attn, "q", hidden), encoder_heads(attn, "k", hidden)


def encoder_heads(attn: nn.Module, which: str, hidden: Tensor) -> Tensor:
    """(B, heads, L, head_dim) the queries, keys or values (`which`: "q", "k", "v") of a batched
    vision-encoder attention module (CLIP, SigLIP, InternViT) on `hidden` (B, L, D), as its
    forward makes them: InternViT's `q_norm` / `k_norm` first, over all heads."""
    b, n, _ = hidden.shape
    x = getattr(attn, f"{which}_proj")(hidden)
    if hasattr(attn, f"{which}_norm"):
        x = getattr(attn, f"{which}_norm")(x)
    return x.view(b, n, attn.num_heads, -1).transpose(1, 2)


def flat_queries_keys_values(
    attn: nn.Module, hidden: Tensor, position_embeddings: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """(1, heads, L, head_dim) queries and keys (rotated) and values of a Qwen ViT attention
    module over a flat (L, D) sequence, as its forward makes them (fused `qkv` or `q`/`k`/`v`)."""
    n = hidden.shape[0]
    if hasattr(attn, "qkv"):
        q, k, v = attn.qkv(hidden).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    else:
        q, k, v = (proj(hidden).reshape(n, attn.num_heads, -1) for proj in (attn.q, attn.k, attn.v))
    cos, sin = position_embeddings
    q, k = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision(q, k, cos, sin)
    return q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None]


#: float32 scores per block of query rows in `received`: about 8 MB, which stays in cache (the
#: exp over the L x L map is the cost; blocks of this size ran it 2.2x faster than 1024 rows)
BLOCK_SCORES = 2**21


def received(q: Tensor, k: Tensor, scale: float, allowed: Tensor | None = None) -> Tensor:
    """(B, heads, L) the attention each key receives, averaged over the query rows: the
    importance an encoder without a [CLS] gives its tokens. Query rows go in blocks, so the
    L x L map is never held whole; each block's probabilities are summed over its rows as
    (1 / row sums)ᵀ @ exp(scores - max), without dividing the map."""
    b, heads, length = q.shape[0], q.shape[1], k.shape[2]
    rows = max(1, BLOCK_SCORES // (b * heads * length))
    keys = k.float().transpose(-1, -2)
    total = torch.zeros(b, heads, length, dtype=torch.float32, device=q.device)
    for start in range(0, q.shape[2], rows):
        scores = (q[:, :, start : start + rows].float() * scale) @ keys
        if allowed is not None:
            scores.masked_fill_(~allowed[..., start : start + rows, :], float("-inf"))
        scores.sub_(scores.amax(-1, keepdim=True)).exp_()
        # (1 / row sums)ᵀ @ block: the row-vector form reads the block row by row, ~18x faster
        # on CPU than blockᵀ @ (1 / row sums)
        total += (scores.sum(-1, keepdim=True).reciprocal().transpose(-1, -2) @ scores).squeeze(-2)
    return total / q.shape[2]


def cached_layer(cache: Any, k: int, previous: bool = True) -> Any:
    """Layer k - 1's entry of a decoder cache (it has run when layer k's pre-hook fires), or None:
    no cache, k = 0, or `previous` False (a method reading layer k's own attention)."""
    layers = getattr(cache, "layers", [])
    return layers[k - 1] if previous and 1 <= k <= len(layers) else None


def _cached(cached: Any, n: int, name: str = "keys") -> Tensor | None:
    states = getattr(cached, name, None)
    return states if states is not None and states.shape[2] == n else None


def flat_keys(module: nn.Module, hidden: Tensor, position_embeddings: tuple[Tensor, Tensor], cached: Any) -> Tensor:
    """(B, n, kv heads * head_dim) keys after RoPE of a decoder attention module's input `hidden`
    (B, n, D), heads concatenated: read from its `cached` layer where that holds this sequence,
    else projected."""
    n = hidden.shape[1]
    keys = _cached(cached, n)
    if keys is None:
        keys = key_states(module, hidden, position_embeddings)
    b, heads, _, d = keys.shape
    return keys.transpose(1, 2).reshape(b, n, heads * d)


def value_states(module: nn.Module, hidden: Tensor, cached: Any) -> Tensor:
    """(B, heads, n, head_dim) value states of a decoder attention module's input `hidden` (B, n,
    D), kv heads repeated to the query heads, as its attention uses them: read from its `cached`
    layer where that holds this sequence, else projected."""
    values = _cached(cached, hidden.shape[1], "values")
    if values is None:
        values = _heads(module, module.v_proj, "v_norm", hidden)
    return repeat_heads(values, values.shape[1] * module.num_key_value_groups)


def media_signals(
    needs: tuple[str, ...], module: nn.Module, hidden: Tensor, position_embeddings: tuple[Tensor, Tensor],
    cached: Any, columns: list[Tensor], rows: list[Tensor],
) -> dict[str, list[Tensor]]:
    """Per batch row b, what `needs` names of a decoder attention module's input `hidden`: `keys` /
    `text_keys` (after RoPE, kv heads concatenated) and `values` / `text_values` (heads, L,
    head_dim) of the media `columns[b]` and the query `rows[b]`."""
    out: dict[str, list[Tensor]] = {}
    if {"keys", "text_keys"} & set(needs):
        keys = flat_keys(module, hidden, position_embeddings, cached)
        out["keys"], out["text_keys"] = ([keys[b, at[b]] for b in range(len(at))] for at in (columns, rows))
    if {"values", "text_values"} & set(needs):
        values = value_states(module, hidden, cached)
        out["values"], out["text_values"] = ([values[b][:, at[b]] for b in range(len(at))] for at in (columns, rows))
    return out


def visible(mask: Any, n: int) -> Tensor | None:
    """(B or 1, n, n) bool: the columns each row of an n-row prefill sees under the 4-D attention
    mask a decoder layer was given (bool, or additive float: 0 where seen), so attention read
    from it follows the layer's own mask (Gemma 3: sliding window, image tokens bidirectional);
    None where the layer got none of that shape (SDPA's plain causal path)."""
    if not isinstance(mask, Tensor) or mask.dim() != 4 or tuple(mask.shape[-2:]) != (n, n):
        return None
    return (mask if mask.dtype == torch.bool else mask == 0)[:, 0]


def rows_attention(
    module: nn.Module, hidden: Tensor, position_embeddings: tuple[Tensor, Tensor], rows_of: list[Tensor],
    columns_of: list[Tensor], cached: Any, valid: Tensor, raw: bool = False, allowed: Tensor | None = None,
    heads: str = "each",
) -> list[Tensor]:
    """Per batch row b, the (heads, M, N) attention that rows_of[b] pay to columns_of[b] in a
    decoder attention module's input `hidden` (B, n, D), softmax over every column the row may
    see (`allowed` (B or 1, n, n), the layer's own mask, else causal; and `valid` (B, n) real
    columns), in float32. `raw`: from queries and keys before RoPE, over every real column
    (PruneVid's `attn_weights_wo_pos`). `heads` "max": their maximum (1, M, N), built one head
    at a time, so that FitPrune's (N + M) x N map is never held for every head.

    Queries are projected for the rows that need them only; keys are read from the `cached`
    layer where it holds this sequence (it has run already), else projected."""
    (cos, sin), n = position_embeddings, hidden.shape[1]
    start = min(int(rows[0]) for rows in rows_of)
    q = queries(module, hidden[:, start:])
    if not raw:
        q, _ = rope(module, q, q, (cos[:, start:], sin[:, start:]))
    keys = None if raw else _cached(cached, n)
    if keys is not None:
        keys = repeat_heads(keys, q.shape[1])
    elif raw:
        keys = repeat_heads(key_states(module, hidden), q.shape[1])
    else:
        _, keys = queries_keys(module, hidden, (cos, sin))
    out = []
    for row, (rows, cols) in enumerate(zip(rows_of, columns_of, strict=True)):
        rows = rows.to(q.device)
        if allowed is not None and not raw:
            seen = allowed[row if allowed.shape[0] > 1 else 0].to(q.device)[rows]
        else:
            seen = torch.arange(n, device=q.device)[None, :] <= (n if raw else rows[:, None])
        seen = seen & valid[row].to(q.device)[None, :]
        asked, cols = q[row][:, rows - start], cols.to(q.device)
        if heads == "each":
            out.append(probabilities(asked, keys[row], module.scaling, seen[None])[:, :, cols])
            continue
        out.append(head_max(asked, keys[row], module.scaling, ~seen)[:, :, cols])
    return out


def head_max(q: Tensor, k: Tensor, scale: float, unseen: Tensor) -> Tensor:
    """(1, M, L) the maximum over heads of softmax((q @ kᵀ) * scale) in float32, the keys
    `unseen` (bool, broadcastable to (M, L)) masked out; one head's scores at a time, in one
    reused buffer."""
    scores = top = None
    for h in range(q.shape[0]):
        scores = torch.matmul(q[h].float(), k[h].float().T, out=scores).mul_(scale).masked_fill_(unseen, float("-inf"))
        probs = scores.softmax(-1)
        top = probs if top is None else torch.maximum(top, probs, out=top)
    return top[None]
