"""The encoder stage inside a Whisper-style audio encoder: Qwen2-Audio's (a batch of clips, each
padded to 30 s: 1500 frames) and Qwen2.5-Omni's (the clips' real frames packed in one sequence,
attending within chunks of `n_window` frames, `cu_seqlens`). After the last layer the encoder
average-pools every two frames of a clip (a unit) into one LLM token and places a clip of L real
frames as floor(L / 2) tokens. So a method compresses whole units, each attention window's own
(a Qwen2-Audio clip, a Qwen2.5-Omni chunk) on its own:

- a unit is one token to the method: its two frames concatenated (width 2D), its keys the mean
  of its frames' keys (heads averaged, as ToMe reads them), its attention the mean over its
  frames of the attention each receives (heads kept), averaged over the window's real frames
  as queries (so M != N: one row, (1, heads, 1, units));
- padding is never a candidate, a query nor counted in a budget; a clip's last real frame when
  L is odd, whose unit is half padding and never placed, is carried unchanged (a key its window
  sees);
- the method acts in the layers it names (`Method.encoder_step`: audio_attention_prune's
  `layers`), else in every layer (A-ToMe; `schedule=` sets r per layer), between attention and
  MLP; a merged unit adds log(size) to later attention logits (ToMe's proportional attention;
  the attention signal leaves it out: it serves pruning, where every size is 1).

Once a layer drops or merges a unit, each window runs as its kept units' frames, then its odd
frame (Qwen2-Audio's rows right-padded with filler; padded frames, which no real frame saw, are
dropped), its attention computed here with the log(size) term. After the last layer every unit
goes back to its place on the model's grid, holding its kept unit's frames (dropped units and
padding: zeros), so the model's own pooling, norm and projection run unchanged; each clip hands
the LLM its kept units' tokens, each at its kept unit's position. A run that compresses nothing
stays in the model's own layout: bit for bit the model.

Differences from the official code (A-ToMe: none released; audio attention pruning: AST /
Audio-MAE, whose tokens are single patches): a token is a pooling pair, scored or merged as one
(above); each window is compressed on its own (a budget per window, so clips may keep different
counts; an int `r` is capped at a window's pairs, as ToMe caps it, where A-ToMe refuses); the
attention signal is recomputed in float32; A-ToMe gets ToMe's proportional attention and runs
in every layer unless `schedule=` says otherwise.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...interface import Compression, Method, Tokens
from ..models.base import AudioTower
from .base import argument
from .merging import Merging
from .windows import (
    Window,
    chunk_windows,
    clip_windows,
    clips_of,
    joined,
    placed_clips,
    window_received,
)

#: the signals the encoder stage supplies inside a Whisper encoder
SIGNALS = ("keys", "attention")


def refusal(tower: AudioTower, method: Method) -> str | None:
    """Why `method` cannot run in this audio encoder, or None."""
    depth = len(tower.layers)
    try:
        method.encoder_step(0, 0, depth - 1)
    except ValueError as error:
        return str(error)
    if tower.chunk % 4:
        return (
            f"its audio encoder attends within chunks of {tower.chunk // 2} frames, an odd count, so "
            "a pooling pair may span two chunks: the encoder stage needs an even n_window"
        )
    return None


def _capped(method: Method, units: int) -> Method:
    """The method with an int r capped at the window's pairs, as ToMe's official code caps it:
    a short clip or chunk merges all its pairs."""
    r = getattr(method, "r", None)
    return dataclasses.replace(method, r=units // 2) if isinstance(r, int) and r > units // 2 else method


def _keeps_all(comp: Compression, count: int) -> bool:
    return comp.count == count and bool((comp.source[0] == torch.arange(count, device=comp.source.device)).all())


class AudioUnits(Merging):
    """Installs the compressing forward on every encoder layer and tracks one encoder call's
    windows and their compressions."""

    def __init__(self, method: Method, tower: AudioTower, schedule: list[int] | None) -> None:
        super().__init__(method, tower.layers, schedule)
        depth = len(tower.layers)
        self.tower = tower
        self.acting = {i for i in range(depth) if method.encoder_step(i, 0, depth - 1) is not None}
        self.lengths: list[int] = []  # Qwen2.5-Omni: the mel frames of each clip of the call
        self.begin([], 0)

    def begin(self, windows: list[Window], frames: int) -> None:
        """Forget the previous call: this one's windows, on a grid of `frames` frames a row."""
        self.windows, self.frames, self.compact = windows, frames, False
        for w in windows:
            w.at = w.start

    def read_lengths(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """A pre-hook on Qwen2.5-Omni's audio encoder: each clip's mel frames."""
        self.lengths = argument(args, kwargs, "feature_lens", 1).tolist()

    def _forward_for(self, index: int):
        return (self._packed if self.tower.chunk else self._batched)(index)

    def _batched(self, index: int):
        units, last = self, len(self.tower.layers) - 1

        def forward(layer: nn.Module, hidden_states: Tensor, attention_mask: Tensor | None = None,
                    **kwargs: Any) -> Tensor:
            """Qwen2-Audio's (Whisper's) encoder layer, op for op, compressing after attention."""
            if index == 0:
                units.begin(clip_windows(attention_mask, *hidden_states.shape[:2]), hidden_states.shape[1])
            x = layer.self_attn_layer_norm(hidden_states)
            if units.compact:
                out = units.attend(layer.self_attn, x)
            else:
                out = layer.self_attn(hidden_states=x, attention_mask=attention_mask, **kwargs)[0]
            hidden = hidden_states + F.dropout(out, p=layer.dropout, training=layer.training)
            if index in units.acting:
                hidden = units.compress(index, layer.self_attn, x, hidden)
            h = layer.activation_fn(layer.fc1(layer.final_layer_norm(hidden)))
            h = F.dropout(h, p=layer.activation_dropout, training=layer.training)
            hidden = hidden + F.dropout(layer.fc2(h), p=layer.dropout, training=layer.training)
            return units.finish(index == last, hidden)

        return forward

    def _packed(self, index: int):
        units, last = self, len(self.tower.layers) - 1

        def forward(layer: nn.Module, hidden_states: Tensor, cu_seqlens: Tensor, **kwargs: Any) -> tuple[Tensor]:
            """Qwen2.5-Omni's audio encoder layer on its packed (frames, D) sequence, op for op,
            compressing after attention."""
            if index == 0:
                units.begin(chunk_windows(cu_seqlens, units.lengths, units.tower.chunk), hidden_states.shape[0])
            x = layer.self_attn_layer_norm(hidden_states)
            if units.compact:
                out = units.attend(layer.self_attn, x[None])[0]
            else:
                out = layer.self_attn(hidden_states=x, cu_seqlens=cu_seqlens, **kwargs)
            hidden = hidden_states + out
            if index in units.acting:
                hidden = units.compress(index, layer.self_attn, x[None], hidden[None])[0]
            hidden = hidden + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(hidden))))
            return (units.finish(index == last, hidden[None])[0],)

        return forward

    def finish(self, last: bool, hidden: Tensor) -> Tensor:
        """The layer's output: clamped in float16 as the model does; after the last layer, on
        the model's grid."""
        if hidden.dtype == torch.float16:
            limit = torch.finfo(hidden.dtype).max - 1000
            hidden = torch.clamp(hidden, min=-limit, max=limit)
        return self.on_grid(hidden) if last else hidden

    def attend(self, attn: nn.Module, x: Tensor) -> Tensor:
        """The attention of the compact rows `x` (R, T, D), within each window, with log(size)
        on each kept unit's frames (0 on an odd frame); filler gets none."""
        out = torch.zeros_like(x)
        for w in self.windows:
            q, k, v = (p(x[w.row, w.at : w.at + w.length]).view(1, -1, attn.num_heads, attn.head_dim).transpose(1, 2)
                       for p in (attn.q_proj, attn.k_proj, attn.v_proj))
            bias = F.pad(w.compression().sizes[0].log().repeat_interleave(2), (0, w.frames % 2)).to(x)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None, None, None], scale=attn.scaling)
            out[w.row, w.at : w.at + w.length] = o.transpose(1, 2).reshape(w.length, -1)
        return attn.out_proj(out)

    def tokens(self, w: Window, attn: nn.Module, normed: Tensor, hidden: Tensor, method: Method) -> Tokens:
        """The units of window `w` as the method's tokens, with the signals it reads."""
        k, d = w.units, hidden.shape[-1]
        x = normed[w.row : w.row + 1, w.at : w.at + w.length]
        wanted = set(method.needs) | set(method.uses)
        signals: dict[str, Tensor] = {}
        if "keys" in wanted:
            keys = attn.k_proj(x[0, : 2 * k]).view(2 * k, attn.num_heads, -1).mean(1)
            signals["keys"] = keys.view(1, k, 2, -1).mean(2)
        if "attention" in wanted:
            frames = window_received(attn, x)[:, : 2 * k]  # (heads, 2k)
            signals["attention"] = frames.view(1, -1, k, 2).mean(-1)[:, :, None].to(hidden.dtype)
        sizes = None if w.comp is None else w.comp.sizes
        features = hidden[w.row : w.row + 1, w.at : w.at + 2 * k].reshape(1, k, 2 * d)
        return Tokens(features=features, layout=(k,), sizes=sizes, **signals)

    def compress(self, index: int, attn: nn.Module, normed: Tensor, hidden: Tensor) -> Tensor:
        """Run the method on every window's units; the compact rows, or `hidden` itself while
        nothing was dropped or merged."""
        method = self._method_for(index)
        comps = [_capped(method, w.units)(self.tokens(w, attn, normed, hidden, method)) if w.units else w.compression()
                 for w in self.windows]
        if not self.compact and all(_keeps_all(c, w.units) for c, w in zip(comps, self.windows, strict=True)):
            return hidden  # nothing dropped yet: stay in the model's layout, bit for bit
        d = hidden.shape[-1]
        odd = [hidden[w.row, w.at + 2 * w.units] if w.frames % 2 else None for w in self.windows]
        ends = [0] * hidden.shape[0]
        for w, c in zip(self.windows, comps, strict=True):
            w.comp = c if w.comp is None else w.comp.then(c)
            w.at, ends[w.row] = ends[w.row], ends[w.row] + w.length
        out = hidden.new_zeros(hidden.shape[0], max(ends), d)
        for w, c, frame in zip(self.windows, comps, odd, strict=True):
            out[w.row, w.at : w.at + 2 * c.count] = c.features[0].reshape(-1, d)
            if frame is not None:
                out[w.row, w.at + 2 * c.count] = frame
        self.compact = True
        return out

    def on_grid(self, hidden: Tensor) -> Tensor:
        """The frames back on the model's grid for its pooling: each unit holding its kept unit's
        frames, the odd frame in its place, dropped units and padding zeros."""
        if not self.compact:
            return hidden
        d = hidden.shape[-1]
        grid = hidden.new_zeros(hidden.shape[0], self.frames, d)
        for w in self.windows:
            v, source = w.frames // 2, w.comp.source[0]
            kept = (source >= 0).nonzero().squeeze(1)
            units = hidden[w.row, w.at : w.at + 2 * w.units].view(-1, 2, d)
            grid[w.row, w.start : w.start + 2 * v].view(v, 2, d)[kept] = units[source[kept]]
            if w.frames % 2:
                grid[w.row, w.start + 2 * v] = hidden[w.row, w.at + 2 * w.units]
        return grid

    def encoded(self, output: Any) -> list[tuple[Tensor, Compression, int]]:
        """Each clip's placed tokens (`placed_clips`) and its compression, the kept units'
        tokens as features; [] for an output this call did not make."""
        placed, found = placed_clips(self.windows, output), []
        for items, own in zip(placed, clips_of(self.windows) if placed else [], strict=True):
            source, positions, sizes = joined(own, items.device)
            found.append((items, Compression(items[positions[0]][None], source, positions, sizes), 0))
        return found
