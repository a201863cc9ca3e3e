"""The encoder signals the projector stage recomputes from one call of an encoder attention
module (its own projections, eagerly, for that layer only): [CLS] attention (or its logits) or
attention received, keys averaged over heads, and `received` averaged over heads too; `Repack`,
which packs them onto an anyres image's tokens as the model packs its crops, with each token's
`anyres` place; and `AudioTap`, `cls_attention` from a Whisper-style audio encoder.
`layer_signals` gives the encoder stage the same for the layer it runs: keys, per-head values and
the [CLS] row of its attention."""

from __future__ import annotations

import inspect
import sys
from typing import Any

import torch
from torch import Tensor, nn

from ..attention import encoder_heads, encoder_queries_keys, logits, probabilities, received
from ..models.base import AudioTower
from .base import argument
from .windows import (
    Window,
    chunk_windows,
    clip_windows,
    clips_of,
    placed_clips,
    window_attention,
    window_received,
)


def _scale(module: nn.Module) -> float:
    return module.scale if hasattr(module, "scale") else module.scaling


def layer_signals(module: nn.Module, hidden: Tensor, bias: Tensor | None, names: set[str]) -> dict[str, Tensor]:
    """The signals `names` (of `keys`, `values`, `cls_attention`) of one call of a batched encoder
    attention module on its normed input `hidden` (B, N, D) with the additive `bias` it ran with
    (None: none), from the module's own projections: (B, N, d) keys averaged over heads, (B,
    heads, N, d) values, and (B, heads, N) the attention of token 0 (the [CLS]), in `hidden`'s
    dtype like the module's own attention weights."""
    out: dict[str, Tensor] = {}
    if names & {"keys", "cls_attention"}:
        k = encoder_heads(module, "k", hidden)
        if "keys" in names:
            out["keys"] = k.mean(1)
    if "values" in names:
        out["values"] = encoder_heads(module, "v", hidden)
    if "cls_attention" in names:
        scores = logits(encoder_heads(module, "q", hidden[:, :1]), k, _scale(module))
        if bias is not None:
            scores = scores + bias[..., :1, :].float()
        out["cls_attention"] = scores.softmax(-1)[:, :, 0].to(hidden.dtype)
    return out


def _queries_keys(module: nn.Module, args: tuple, kwargs: dict) -> tuple[Tensor, Tensor, Tensor, float]:
    """The call's hidden states, its queries and keys as the module makes them, and its scale."""
    hidden = argument(args, kwargs, "hidden_states")
    q, k = encoder_queries_keys(module, hidden, kwargs.get("position_embeddings"))
    return hidden, q, k, _scale(module)


def encoder_signals(
    module: nn.Module, args: tuple, kwargs: dict, cls: bool, scores: bool = False
) -> tuple[Tensor, Tensor]:
    """(B, heads, L) attention and (B, L, d) keys averaged over heads, of one call of an encoder
    attention module: the [CLS] row's attention (`scores`: its logits before the softmax) where
    the encoder has a [CLS], else the attention each token receives averaged over its query rows
    (within each image or frame of a flat Qwen sequence, as the module's `cu_seqlens` bound it)."""
    hidden, q, k, scale = _queries_keys(module, args, kwargs)
    keys = k.mean(1)  # ToMe / VisionZip read keys averaged over heads
    if cls:
        attention = (logits if scores else probabilities)(q[:, :, :1], k, scale)[:, :, 0]
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


def anyres_places(module: nn.Module, sizes: Tensor, views: list[int], patches: int) -> Tensor:
    """(3, tokens) float: the `anyres` place (view, row, column) + 1 of every encoder token of an
    anyres packer's call (`views`: thumbnail and crops per image), each crop placed on its image's
    crop grid by the family's own `get_anyres_image_grid_shape`, as its packer places it."""
    config = module.config
    side = config.vision_config.image_size // config.vision_config.patch_size
    if side * side != patches:
        raise RuntimeError(f"{patches} tokens per crop do not fill the {side} x {side} patch grid: "
                           "the packer keeps a [CLS] (vision_feature_select_strategy='full')")
    grid_shape = sys.modules[type(module).__module__].get_anyres_image_grid_shape
    r, c = torch.arange(patches) // side, torch.arange(patches) % side
    out = []
    for size, count in zip(sizes, views, strict=True):
        out.append(torch.stack([torch.zeros_like(r), r, c]))
        if count > 1:
            _, columns = grid_shape(size, config.image_grid_pinpoints, config.vision_config.image_size)
            for k in range(count - 1):
                i, j = divmod(k, columns)
                out.append(torch.stack([torch.ones_like(r), i * side + r, j * side + c]))
    return torch.cat(out, -1).float() + 1


class Repack:
    """For the compress context, the family's packing method (`pack_image_features`) also packs
    the last encoder call's signals, as it packs the crops' features: unpadding, resizing and
    newlines (zeros) alike; each packed image is recorded with its signals in `stage.tapped`,
    with `anyres` places where the method reads them (exact where the packer does not resize the
    crops: OneVision's anyres_max). `remove()` restores the method."""

    def __init__(self, module: nn.Module, name: str, stage: Any) -> None:
        self.module, self.name = module, name
        original = getattr(module, name)
        signature = inspect.signature(original)
        places = "anyres" in stage.method.needs

        def pack(*args: Any, **kwargs: Any) -> Any:
            packed, lengths = original(*args, **kwargs)
            patch = dict(stage.encoder_patch() or {})
            bound = signature.bind(*args, **kwargs)
            crops = [len(f) for f in bound.arguments["image_features"]]
            patches = bound.arguments["image_features"][0].shape[1]
            if places:
                patch["anyres"] = anyres_places(module, bound.arguments["image_sizes"], crops, patches)
            if not patch:
                return packed, lengths

            def signal(x: Tensor) -> list[Tensor]:  # (C, crops * patches) -> per image (tokens, C)
                bound.arguments["image_features"] = list(x.T.reshape(-1, patches, x.shape[0]).split(crops))
                bound.arguments["image_newline"] = x.new_zeros(x.shape[0])
                return original(*bound.args, **bound.kwargs)[0]

            names = list(patch)
            for placed, *values in zip(packed, *(signal(patch[name]) for name in names), strict=True):
                found = {name: v.T for name, v in zip(names, values, strict=True)}
                if places:
                    found["anyres"] = found["anyres"] - 1  # a newline (zeros) stands for no patch
                stage.tapped.append((placed, found))
            return packed, lengths

        setattr(module, name, pack)

    def remove(self) -> None:
        if self.name in vars(self.module):
            delattr(self.module, self.name)


def _block_diagonal(blocks: list[Tensor]) -> Tensor:
    """(heads, sum L, sum L) from per-window (heads, L, L) maps, 0 between windows."""
    total = sum(b.shape[-1] for b in blocks)
    out = blocks[0].new_zeros(blocks[0].shape[0], total, total)
    at = 0
    for b in blocks:
        out[:, at : at + b.shape[-1], at : at + b.shape[-1]] = b
        at += b.shape[-1]
    return out


class AudioTap:
    """For the projector stage, `cls_attention` (heads, n) of each audio clip from its
    Whisper-style encoder (`AudioTower`), recorded with the clip's placed tokens in
    `stage.tapped`: in the encoder's last layer, the attention each real frame receives,
    averaged over the real query rows of its attention window (a Qwen2-Audio clip, whose padded
    frames are never queries nor keys; a Qwen2.5-Omni chunk of `cu_seqlens`), heads kept, in
    float32; then averaged over each pair of frames the encoder's average pooling makes one
    token of (a clip's odd last frame, never placed, is left out).

    SEATS' released code (`audio_windivprune` on Qwen2.5-Omni's last encoder layer) reads the
    same map in windows of 2 s (100 frames: the released model's chunk), averaged over heads,
    summed (not averaged) over the window's query rows, in the model's dtype, its frame pairs
    taken over all clips' frames packed. Here each window is the model's own attention window
    (on Qwen2-Audio the whole clip) and pairs stay within a clip, as the model pools them; the
    sum is the mean times the window's frame count, one positive factor per window.

    `encoder_attention` (heads, 2n, 2n), for a method that needs it (SA-MAP), is the same
    layer's attention among the clip's 2n placed frames: within each window, each row the
    softmax over the window's real frames (on Qwen2.5-Omni, 0 between chunks, which never
    attend to each other). `remove()` removes the hooks."""

    signals = ("cls_attention", "encoder_attention")

    def __init__(self, tower: AudioTower, stage: Any) -> None:
        self.tower, self.stage = tower, stage
        self.lengths: list[int] = []  # Qwen2.5-Omni: each clip's mel frames, from the call
        self.windows: list[Window] = []
        self.frames: list[Tensor] = []
        self.maps: list[Tensor] = []  # per clip, (heads, real frames, real frames)
        attention = tower.layers[-1].self_attn
        self.handles = [
            attention.register_forward_pre_hook(self._attention, with_kwargs=True),
            tower.output.register_forward_hook(self._output),
        ]
        if tower.chunk:
            self.handles.append(tower.output.register_forward_pre_hook(self._lengths, with_kwargs=True))

    def _lengths(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.lengths = argument(args, kwargs, "feature_lens", 1).tolist()

    def _attention(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = argument(args, kwargs, "hidden_states")
        if self.tower.chunk:  # the clips' real frames packed (frames, D), chunks cut by cu_seqlens
            self.windows = chunk_windows(argument(args, kwargs, "cu_seqlens", 1), self.lengths, self.tower.chunk)
            hidden = hidden[None]
        else:  # a batch of clips padded to the same frames, real frames first
            self.windows = clip_windows(argument(args, kwargs, "attention_mask", 1), *hidden.shape[:2])
        frames = [[hidden[w.row : w.row + 1, w.start : w.start + w.frames] for w in own] for own in clips_of(self.windows)]
        if "encoder_attention" in self.stage.method.needs:  # the whole maps; received from them
            blocks = [[window_attention(module, x) for x in clip] for clip in frames]
            self.maps = [_block_diagonal(clip) for clip in blocks]
            self.frames = [torch.cat([block.mean(-2) for block in clip], dim=-1) for clip in blocks]
        else:  # per clip, (heads, real frames), the map never held whole
            self.maps = []
            self.frames = [torch.cat([window_received(module, x) for x in clip], dim=-1) for clip in frames]

    def _output(self, module: nn.Module, args: tuple, output: Any) -> None:
        placed = placed_clips(self.windows, output)
        for i, (tokens, frames) in enumerate(zip(placed, self.frames if placed else [], strict=True)):
            n = len(tokens)
            signals = {"cls_attention": frames[:, : 2 * n].view(frames.shape[0], n, 2).mean(-1)}
            if self.maps:
                signals["encoder_attention"] = self.maps[i][:, : 2 * n, : 2 * n]
            self.stage.tapped.append((tokens, signals))

    def remove(self) -> None:
        while self.handles:
            self.handles.pop().remove()
