"""The encoder stage inside a Whisper-style audio encoder (Qwen2-Audio). After its last layer the
encoder average-pools every two frames (a unit) into one LLM token, and the model places the
first floor(L / 2) tokens of a clip with L real frames; the rest is padding (the processor pads
every clip to 30 s: 1500 frames). So a method compresses whole units, each row's real ones only:

- a unit is one token to the method: its two frames concatenated (width 2D), its keys the mean
  of its frames' keys (heads averaged, as ToMe reads them), its attention the mean over its
  frames of the attention each receives (heads kept), averaged over the row's real frames as
  queries (so M != N: one row, (1, heads, 1, units));
- padded frames, which the model's own mask hides from every real frame, are never candidates,
  queries nor counted in a budget; the last real frame of an odd L, whose unit is half padding
  and never placed, is carried unchanged (a key every real frame sees);
- the method acts in the layers it names (`Method.encoder_layers`: audio_attention_prune's
  `layers`), else in every layer (A-ToMe; `schedule=` sets r per layer), between attention and
  MLP; a merged unit adds log(size) to the attention logits of later layers (ToMe's
  proportional attention; the attention signal leaves it out: it serves pruning, where every
  size is 1).

Once a layer drops or merges a unit, each row runs as its kept units' frames, then its odd
frame, right-padded to the longest row with filler that no frame sees (padded frames are
dropped there: no real frame saw them). After the last layer every unit goes back to its place
on the grid, holding its kept unit's frames (dropped units and padding: zeros), so the model's
own pooling, norm and projector run unchanged; each clip hands the LLM its kept units' tokens,
each at its kept unit's position. A run that compresses nothing stays in the model's own layout
and computes bit for bit what the model computes.

Differences from the official code (A-ToMe: none released; audio attention pruning: AST /
Audio-MAE, whose tokens are single patches): a token is a pooling pair, scored or merged as one
(above); each clip is compressed on its own, so rows may keep different counts; the attention
signal is recomputed in float32 from the layer's own projections; A-ToMe gets ToMe's
proportional attention and runs in every layer unless `schedule=` says otherwise.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...interface import Compression, Method, Tokens
from ..attention import encoder_queries_keys, received
from ..models.base import AudioTower
from .schedule import check_schedule, method_at

#: the signals the encoder stage supplies inside a Whisper encoder
SIGNALS = ("keys", "attention")


def refusal(tower: AudioTower, method: Method) -> str | None:
    """Why `method` cannot run in this Whisper encoder (layers it lacks, an attention that takes
    no additive mask), or None."""
    depth = len(tower.layers)
    try:
        method.encoder_layers(depth, depth - 1)
    except ValueError as error:
        return str(error)
    implementation = tower.layers[0].self_attn.config._attn_implementation
    if implementation not in ("eager", "sdpa"):
        return (
            f"attn_implementation={implementation!r}: the encoder stage masks the audio encoder's "
            "shortened rows; load the model with attn_implementation='sdpa' or 'eager'"
        )
    return None


def real_frames(mask: Tensor | None, batch: int, frames: int) -> list[int]:
    """Each row's real frames, from the encoder's padding mask (bool: allowed; float: additive,
    0 where allowed; None: nothing padded), which must hide a suffix of every row."""
    if mask is None:
        return [frames] * batch
    allowed = (mask if mask.dtype == torch.bool else mask == 0).reshape(batch, -1, frames)[:, 0].cpu()
    real = allowed.sum(-1).tolist()
    if any(not bool(row[:n].all()) for row, n in zip(allowed, real, strict=True)):
        raise ValueError(
            "the encoder stage reads each clip's real frames first and its padding after: pass "
            "feature_attention_mask with the ones of each clip before its zeros"
        )
    return real


def _keeps_all(comp: Compression, count: int) -> bool:
    units = torch.arange(count, device=comp.source.device)
    return comp.count == count and bool((comp.source[0] == units).all())


class AudioUnits:
    """Installs the compressing forward on every Whisper encoder layer and tracks, per clip,
    the compression of one encoder call."""

    def __init__(self, method: Method, tower: AudioTower, schedule: list[int] | None) -> None:
        check_schedule(method, tower.layers, schedule)
        depth = len(tower.layers)
        self.method, self.tower, self.schedule = method, tower, schedule
        self.acting = set(method.encoder_layers(depth, depth - 1) or range(depth))
        self.start(None, None)

    def start(self, hidden: Tensor | None, mask: Tensor | None) -> None:
        """Forget the previous call; read this one's frames and each row's real ones."""
        self.frames = 0 if hidden is None else hidden.shape[1]
        self.real = [] if hidden is None else real_frames(mask, hidden.shape[0], self.frames)
        #: per row, the composed compression of its real units; None while nothing dropped
        self.rows: list[Compression | None] = [None] * len(self.real)
        self.compact = False  # rows hold kept units, odd frame, filler (not the model's grid)

    def install(self) -> None:
        for index, layer in enumerate(self.tower.layers):
            layer.forward = types.MethodType(self._forward_for(index), layer)

    def remove(self) -> None:
        for layer in self.tower.layers:
            if "forward" in vars(layer):
                del layer.forward

    def units(self, row: int) -> int:
        comp = self.rows[row]
        return self.real[row] // 2 if comp is None else comp.count

    def length(self, row: int) -> int:
        """The frames of `row` that attend: all its real ones, or its kept units' and odd one."""
        return 2 * self.units(row) + self.real[row] % 2 if self.compact else self.real[row]

    def _forward_for(self, index: int):
        units, last = self, len(self.tower.layers) - 1

        def forward(layer: nn.Module, hidden_states: Tensor, attention_mask: Tensor | None = None,
                    **kwargs: Any) -> Tensor:
            """Qwen2-Audio's (Whisper's) encoder layer, op for op, compressing after attention."""
            if index == 0:
                units.start(hidden_states, attention_mask)
            if units.compact:
                attention_mask = units.mask(hidden_states)
            residual = hidden_states
            x = layer.self_attn_layer_norm(hidden_states)
            out, _ = layer.self_attn(hidden_states=x, attention_mask=attention_mask, **kwargs)
            hidden = residual + F.dropout(out, p=layer.dropout, training=layer.training)
            if index in units.acting:
                hidden = units.compress(index, layer.self_attn, x, hidden)
            residual = hidden
            h = layer.activation_fn(layer.fc1(layer.final_layer_norm(hidden)))
            h = F.dropout(h, p=layer.activation_dropout, training=layer.training)
            h = F.dropout(layer.fc2(h), p=layer.dropout, training=layer.training)
            hidden = residual + h
            if hidden.dtype == torch.float16:
                limit = torch.finfo(hidden.dtype).max - 1000
                hidden = torch.clamp(hidden, min=-limit, max=limit)
            return units.on_grid(hidden) if index == last else hidden

        return forward

    def mask(self, hidden: Tensor) -> Tensor:
        """(B, 1, 1, T) additive mask of the compact rows: log(size) on each kept unit's frames,
        0 on the odd frame, the dtype's minimum on filler."""
        b, width = hidden.shape[:2]
        bias = torch.full((b, width), torch.finfo(hidden.dtype).min, dtype=hidden.dtype, device=hidden.device)
        for r, comp in enumerate(self.rows):
            bias[r, : 2 * comp.count] = comp.sizes[0].log().repeat_interleave(2).to(bias)
            bias[r, 2 * comp.count : self.length(r)] = 0
        return bias[:, None, None]

    def tokens(self, row: int, attn: nn.Module, normed: Tensor, hidden: Tensor, method: Method) -> Tokens:
        """The real units of `row` as the method's tokens, with the signals it reads."""
        k, d = self.units(row), hidden.shape[-1]
        wanted = set(method.needs) | set(method.uses)
        signals: dict[str, Tensor] = {}
        if "keys" in wanted:
            keys = attn.k_proj(normed[row, : 2 * k]).view(2 * k, attn.num_heads, -1).mean(1)
            signals["keys"] = keys.view(1, k, 2, -1).mean(2)
        if "attention" in wanted:
            q, key = encoder_queries_keys(attn, normed[row : row + 1, : self.length(row)])
            frames = received(q, key, attn.scaling)[:, :, : 2 * k]  # (1, heads, 2k)
            signals["attention"] = frames.view(1, -1, k, 2).mean(-1)[:, :, None].to(hidden.dtype)
        sizes = None if self.rows[row] is None else self.rows[row].sizes
        features = hidden[row : row + 1, : 2 * k].reshape(1, k, 2 * d)
        return Tokens(features=features, layout=(k,), sizes=sizes, **signals)

    def compress(self, index: int, attn: nn.Module, normed: Tensor, hidden: Tensor) -> Tensor:
        """Run the method on every row's real units; the rows as they go on (compact), or
        `hidden` itself while nothing was dropped or merged."""
        method = method_at(self.method, self.schedule, index)
        comps = [method(self.tokens(r, attn, normed, hidden, method)) for r in range(hidden.shape[0])]
        if not self.compact and all(_keeps_all(c, self.units(r)) for r, c in enumerate(comps)):
            return hidden  # nothing dropped yet: stay in the model's layout, bit for bit
        b, _, d = hidden.shape
        odd = [hidden[r, 2 * self.units(r)] if self.real[r] % 2 else None for r in range(b)]
        self.rows = [c if prev is None else prev.then(c) for prev, c in zip(self.rows, comps, strict=True)]
        self.compact = True
        out = hidden.new_zeros(b, max(self.length(r) for r in range(b)), d)
        for r, comp in enumerate(comps):
            out[r, : 2 * comp.count] = comp.features[0].reshape(-1, d)
            if odd[r] is not None:
                out[r, 2 * comp.count] = odd[r]
        return out

    def on_grid(self, hidden: Tensor) -> Tensor:
        """The frames back on the model's grid for its pooling: each real unit holding its kept
        unit's frames, the odd frame in its place, dropped units and padding zeros."""
        if not self.compact:
            return hidden
        b, _, d = hidden.shape
        grid = hidden.new_zeros(b, self.frames, d)
        for r, comp in enumerate(self.rows):
            v, source = self.real[r] // 2, comp.source[0]
            kept = (source >= 0).nonzero().squeeze(1)
            units = hidden[r, : 2 * comp.count].view(-1, 2, d)
            grid[r, : 2 * v].view(v, 2, d)[kept] = units[source[kept]]
            if self.real[r] % 2:
                grid[r, 2 * v] = hidden[r, 2 * comp.count]
        return grid

    def encoded(self, output: Tensor) -> list[tuple[Tensor, Compression, int]]:
        """Each clip's placed tokens (the first floor(L / 2) rows of the output module's) and
        its compression, the kept units' tokens as features; [] for an output this encoder call
        did not make."""
        if output.shape[0] != len(self.real):
            return []
        found = []
        for r, comp in enumerate(self.rows):
            placed = output[r, : self.real[r] // 2]
            if comp is None:
                units = torch.arange(placed.shape[0], device=placed.device)[None]
                comp = Compression(placed, units, units, torch.ones(units.shape, device=placed.device))
            kept = comp.positions[0].to(placed.device)
            found.append((placed, Compression(placed[kept][None], comp.source, comp.positions, comp.sizes), 0))
        return found
