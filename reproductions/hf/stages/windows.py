"""The attention windows of one call of a Whisper-style audio encoder, over which the encoder
stage compresses (`audio.py`): a Qwen2-Audio clip (a row of the batch, its real frames first),
or a Qwen2.5-Omni chunk of a clip (a span of the packed sequence, `cu_seqlens`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ...interface import Compression
from ..attention import encoder_queries_keys, probabilities, received


@dataclass
class Window:
    """One attention window of real frames (a Qwen2-Audio clip, a Qwen2.5-Omni chunk): its units
    are its frame pairs; an odd last frame (its clip's last) is carried as it is."""

    row: int  # of the (rows, frames, D) hidden states
    start: int  # its first frame on the model's grid
    frames: int
    clip: int
    comp: Compression | None = None  # of its units, composed over layers; None: untouched
    at: int = 0  # its first frame in the current layout

    @property
    def units(self) -> int:
        return self.frames // 2 if self.comp is None else self.comp.count

    @property
    def length(self) -> int:
        return 2 * self.units + self.frames % 2

    def compression(self) -> Compression:
        """Its units' compression: `comp`, or keeping every unit (features unused)."""
        if self.comp is not None:
            return self.comp
        units = torch.arange(self.frames // 2)[None]
        return Compression(units[..., None], units, units, torch.ones(units.shape))


def window_received(attention: nn.Module, hidden: Tensor) -> Tensor:
    """(heads, L) the attention each of the L frames of one attention window (1, L, D) of a
    Whisper-style encoder receives, averaged over them as queries."""
    return received(*encoder_queries_keys(attention, hidden), attention.scaling)[0]


def window_attention(attention: nn.Module, hidden: Tensor) -> Tensor:
    """(heads, L, L) the attention among the L frames of one attention window (1, L, D) of a
    Whisper-style encoder, each row the softmax over the window's frames, in float32."""
    q, k = encoder_queries_keys(attention, hidden)
    return probabilities(q, k, attention.scaling)[0]


def clip_windows(mask: Tensor | None, batch: int, frames: int) -> list[Window]:
    """Qwen2-Audio: one window per clip (row), its real frames read from the encoder's padding
    mask (bool: allowed; float: 0 where allowed; None: nothing padded), padding last."""
    if mask is None:
        return [Window(b, 0, frames, b) for b in range(batch)]
    allowed = (mask if mask.dtype == torch.bool else mask == 0).reshape(batch, -1, frames)[:, 0].cpu()
    real = allowed.sum(-1).tolist()
    if any(not bool(row[:n].all()) for row, n in zip(allowed, real, strict=True)):
        raise ValueError(
            "the encoder stage reads each clip's real frames first and its padding after: pass "
            "feature_attention_mask with the ones of each clip before its zeros"
        )
    return [Window(b, 0, n, b) for b, n in enumerate(real)]


def chunk_windows(cu_seqlens: Tensor, lengths: list[int], chunk: int) -> list[Window]:
    """Qwen2.5-Omni: one window per chunk of the packed sequence, each clip of `lengths` mel
    frames cut into ceil(length / chunk) chunks, as the encoder cuts them."""
    bounds = cu_seqlens.tolist()
    clips = [c for c, length in enumerate(lengths) for _ in range(math.ceil(length / chunk))]
    if len(clips) != len(bounds) - 1:
        raise ValueError(
            f"the audio encoder attends within {len(bounds) - 1} chunks, but clips of {lengths} mel "
            f"frames make {len(clips)} of {chunk}: let it cut the clips itself (no precomputed "
            "cu_seqlens or chunk_lengths)"
        )
    return [Window(0, a, b - a, c) for a, b, c in zip(bounds[:-1], bounds[1:], clips, strict=True)]


def joined(windows: list[Window], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """One clip's (source, positions, sizes) from its windows' compressions, in order (slots and
    units offset)."""
    parts, slots, units = [], 0, 0
    for w in windows:
        c = w.compression()
        source = torch.where(c.source >= 0, c.source + slots, c.source)
        parts.append([source, c.positions + units, c.sizes])
        slots, units = slots + c.count, units + w.frames // 2
    return tuple(torch.cat([p[i].to(device) for p in parts], 1) for i in range(3))


def clips_of(windows: list[Window]) -> list[list[Window]]:
    """The windows of each clip, clips and windows in order."""
    clips: dict[int, list[Window]] = {}
    for w in windows:
        clips.setdefault(w.clip, []).append(w)
    return list(clips.values())


def placed_clips(windows: list[Window], output: Any) -> list[Tensor]:
    """Each clip's tokens as the model places them, floor(real frames / 2) each (Qwen2-Audio:
    the first of its row of the projector's output; Qwen2.5-Omni: its share of the encoder's
    flat output); [] for an output this call of the encoder did not make."""
    out = output if isinstance(output, Tensor) else output.last_hidden_state
    counts = [sum(w.frames for w in own) // 2 for own in clips_of(windows)]
    if out.shape[0] != (len(counts) if out.dim() == 3 else sum(counts)):
        return []
    return [out[c, :n] for c, n in enumerate(counts)] if out.dim() == 3 else list(out.split(counts))
