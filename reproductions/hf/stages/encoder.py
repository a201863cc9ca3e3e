"""The encoder stage: ToMe-style merging inside every layer of a LLaVA model's CLIP or SigLIP
encoder (LLaVA-OneVision and Qwen2-VL pack or merge the encoder output into fixed grids
afterwards, which merged tokens no longer fill). The merged, projected tokens replace each
image's span of the LLM input (see `input.py`).

Each encoder layer runs, for the duration of `compress`, a forward bound to that one layer
instance (the class is untouched; the instance attribute is deleted on exit) that does what the
layer does, plus ToMe's two additions:

- proportional attention: log(sizes) is added to the attention logits (through the layer's own
  additive `attention_mask`, so eager and SDPA both apply it);
- between attention and MLP, the method merges the tokens on this layer's keys averaged over
  heads, with the sizes carried from layer to layer (`Tokens.sizes`).

The merges compose into a map from the encoder's input tokens to the tokens of the layer the
projector reads, so each projected token takes the position of its kept token in the LLM
sequence. The model's own outputs recording (hidden_states) sees the merged layers, as the
forward runs inside the layer's normal call.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any

import torch
from torch import Tensor, nn

from ...interface import Compression, Method, Tokens
from ...ops import proportional_attention_bias
from ..sequence import row_of
from .input import InputStage


def _bias(sizes: Tensor | None, mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """ToMe's proportional attention term log(sizes) (B, 1, 1, N), plus any given mask."""
    if sizes is None:
        return mask
    bias = proportional_attention_bias(sizes).to(dtype)
    return bias if mask is None else bias + mask


class EncoderMerging:
    """Installs the merging forward on every encoder layer and tracks the merges of one call."""

    def __init__(
        self, method: Method, layers: nn.ModuleList, schedule: list[int] | None, special: int
    ) -> None:
        if schedule is not None and len(schedule) != len(layers):
            raise ValueError(
                f"schedule has {len(schedule)} entries for {len(layers)} encoder layers: pass "
                "one merge count per layer"
            )
        if schedule is not None and not any(f.name == "r" for f in dataclasses.fields(method)):
            raise ValueError(f"schedule= sets ToMe's r per layer; {method.name} has no r")
        self.method = method
        self.layers = layers
        self.schedule = schedule
        self.special = special
        self.reset()

    def reset(self) -> None:
        """Forget the merges of the previous encoder call."""
        self.sizes: Tensor | None = None
        self.source: Tensor | None = None  # (B, N0): slot of each input token, -1 dropped
        self.positions: Tensor | None = None  # (B, N): input index each current token stands at
        self.after: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    def install(self) -> None:
        for index, layer in enumerate(self.layers):
            layer.forward = types.MethodType(self._forward_for(index), layer)

    def remove(self) -> None:
        for layer in self.layers:
            if "forward" in vars(layer):
                del layer.forward

    def _method_for(self, index: int) -> Method:
        if self.schedule is None:
            return self.method
        return dataclasses.replace(self.method, r=self.schedule[index])

    def _forward_for(self, index: int):
        merging = self

        def forward(
            layer: nn.Module,
            hidden_states: Tensor,
            attention_mask: Tensor | None = None,
            **kwargs: Any,
        ) -> Tensor:
            if index == 0:
                merging.reset()
            residual = hidden_states
            x = layer.layer_norm1(hidden_states)
            bias = _bias(merging.sizes, attention_mask, x.dtype)
            out, _ = layer.self_attn(hidden_states=x, attention_mask=bias, **kwargs)
            hidden = residual + out
            hidden = merging._merge(index, layer, x, hidden)
            return hidden + layer.mlp(layer.layer_norm2(hidden))

        return forward

    def _merge(self, index: int, layer: nn.Module, normed: Tensor, hidden: Tensor) -> Tensor:
        attn = layer.self_attn
        b, n, _ = normed.shape
        keys = attn.k_proj(normed).view(b, n, attn.num_heads, -1).mean(2)
        tokens = Tokens(features=hidden, keys=keys, sizes=self.sizes, special=self.special)
        comp = self._method_for(index)(tokens)
        if self.source is None:
            self.source = comp.source
            self.positions = comp.positions
        else:
            kept = self.source >= 0
            self.source = torch.where(
                kept, comp.source.gather(1, self.source.clamp_min(0)), self.source
            )
            self.positions = self.positions.gather(1, comp.positions)
        self.sizes = comp.sizes
        self.after[index] = (self.source, self.positions, self.sizes)
        return comp.features

    def compression_at(self, index: int, features: Tensor) -> Compression:
        """The composed merges up to layer `index`, with `features` (B, K, D) as the output."""
        source, positions, sizes = self.after[index]
        return Compression(features=features, source=source, positions=positions, sizes=sizes)


class EncoderStage(InputStage):
    name = "encoder"
    signals = ("keys",)

    def __init__(self, *args: Any, schedule: list[int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        a = self.adapter
        self.merging = EncoderMerging(self.method, a.encoder_layers, schedule, special=int(a.has_cls))

    def install_hooks(self) -> None:
        self.merging.install()
        self.hook(self.adapter.projector.register_forward_hook(self._projector))

    def remove(self) -> None:
        super().remove()
        self.merging.remove()

    def _projector(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        """Record the merged, projected tokens of each image, and hand the model a placeholder
        of the unmerged size (its own placeholder check holds): every token the model expects,
        holding the merged token it went to (ToMe's unmerge), so each image's placeholder
        content identifies its compression."""
        drop = self.adapter.encoder_special
        merged = self.merging.compression_at(self.adapter.feature_layer, output)
        source = merged.source
        if drop:
            source = torch.where(source >= drop, source - drop, torch.full_like(source, -1))
        comp = Compression(output, source, merged.positions[:, drop:], merged.sizes[:, drop:])
        slots = (merged.source[:, drop:] - drop).clamp(min=0)  # a dropped token: any slot will do
        placeholder = torch.gather(output, 1, slots[..., None].expand(-1, -1, output.shape[2]))
        cls = int(self.adapter.has_cls)
        self.encoded = [(placeholder[i], row_of(comp, i), cls) for i in range(output.shape[0])]
        return placeholder

    def compress_spans(self, embeds: Tensor) -> dict[int, tuple[Compression, int]]:
        return {i: self.encoded_image(embeds, span) for i, span in enumerate(self.spans) if span.modality == "image"}
