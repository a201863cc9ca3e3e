"""The encoder stage: ToMe-style merging inside every layer of a CLIP or SigLIP encoder: LLaVA's,
and Gemma 3's and Idefics3's, which pool a fixed grid of patches into each LLM token afterwards.
(Audio methods, A-ToMe and audio attention pruning, compress inside the Whisper-style audio
encoders of Qwen2-Audio and Qwen2.5-Omni, on whole pooling pairs of each clip's real frames:
`audio.py`, which lists what differs there from the official code.)
In Gemma 3 and Idefics3 the method merges whole pooling units (a token's 2x2 or 4x4 patches,
concatenated), and before the pooling the merged units are put back on the grid (each unit
holding its merged unit's patches), so every merged unit leaves one distinct LLM token; the
kept one stands for them all. The merged, projected tokens replace each image's span of the LLM input (`input.py`).

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

import types
from typing import Any

import torch
from torch import Tensor, nn

from ...interface import Compression, Method, Tokens
from ...ops import proportional_attention_bias
from ..sequence import row_of
from .audio import AudioUnits
from .input import InputStage
from .schedule import check_schedule, method_at


def _bias(sizes: Tensor | None, mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """ToMe's proportional attention term log(sizes) (B, 1, 1, N), plus any given mask."""
    if sizes is None:
        return mask
    bias = proportional_attention_bias(sizes).to(dtype)
    return bias if mask is None else bias + mask


class EncoderMerging:
    """Installs the merging forward on every encoder layer and tracks the merges of one call."""

    def __init__(
        self, method: Method, layers: nn.ModuleList, schedule: list[int] | None, special: int,
        units: Tensor | None = None, unmerge_at: int | None = None,
    ) -> None:
        check_schedule(method, layers, schedule)
        self.method = method
        self.layers = layers
        self.schedule = schedule
        self.special = special
        #: grid families: the patches of each pooling unit (U, k), merged whole, and the layer
        #: after which the units go back on the grid for the model's own pooling
        self.units, self.unmerge_at = units, unmerge_at
        self.reset()

    def reset(self) -> None:
        """Forget the merges of the previous encoder call."""
        self.sizes: Tensor | None = None
        self.regrouped = False  # grid families: the patches lie unit by unit (after a merge)
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
            if merging.units is not None:
                merging.refuse_padding(attention_mask)
                attention_mask = None  # it hides nothing
            residual = hidden_states
            x = layer.layer_norm1(hidden_states)
            bias = _bias(merging.patch_sizes(), attention_mask, x.dtype)
            out, _ = layer.self_attn(hidden_states=x, attention_mask=bias, **kwargs)
            hidden = residual + out
            hidden = merging._merge(index, layer, x, hidden)
            hidden = hidden + layer.mlp(layer.layer_norm2(hidden))
            return merging.on_grid(hidden) if index == merging.unmerge_at else hidden

        return forward

    def refuse_padding(self, mask: Tensor | None) -> None:
        """Unit merging reorders and shortens the sequence, which a padding mask cannot follow:
        refuse a mask that hides patches (one that hides nothing the caller drops)."""
        if mask is not None and not bool((mask if mask.dtype == torch.bool else mask == 0).all()):
            raise ValueError(
                "the encoder stage merges whole pooling units of full tiles; this call pads some "
                "tiles (a patch attention mask): pass full-size tiles, or use a projector-stage method"
            )

    def patch_sizes(self) -> Tensor | None:
        """The size of every current encoder token (a unit's size on each of its patches)."""
        if self.sizes is None or self.units is None or not self.regrouped:
            return self.sizes if self.units is None else None
        return self.sizes.repeat_interleave(self.units.shape[1], dim=1)

    def on_grid(self, hidden: Tensor) -> Tensor:
        """The units back on the grid: each original unit's patches hold its merged unit's."""
        if not self.regrouped:  # nothing merged: the patches never left the grid
            return hidden
        b, _, d = hidden.shape
        k = self.units.shape[1]
        merged = hidden.view(b, -1, k, d)
        slots = self.source.clamp_min(0)
        placed = merged.gather(1, slots[:, :, None, None].expand(-1, -1, k, d).to(hidden.device))
        grid = torch.empty(b, self.units.numel(), d, dtype=hidden.dtype, device=hidden.device)
        grid[:, self.units.flatten().to(hidden.device)] = placed.reshape(b, -1, d)
        return grid

    def _merge(self, index: int, layer: nn.Module, normed: Tensor, hidden: Tensor) -> Tensor:
        attn = layer.self_attn
        b, n, d = normed.shape
        keys = attn.k_proj(normed).view(b, n, attn.num_heads, -1).mean(2)
        grid = hidden
        if self.units is not None:  # one token per unit: its patches concatenated, keys averaged
            k = self.units.shape[1]
            if not self.regrouped:  # still in grid order: put each unit's patches side by side
                order = self.units.flatten().to(hidden.device)
                hidden, keys = hidden[:, order], keys[:, order]
            hidden, keys = hidden.reshape(b, n // k, k * d), keys.view(b, n // k, k, -1).mean(2)
        tokens = Tokens(features=hidden, keys=keys, sizes=self.sizes, special=self.special)
        comp = method_at(self.method, self.schedule, index)(tokens)
        if self.units is not None and not self.regrouped:
            units = torch.arange(hidden.shape[1], device=hidden.device)
            if comp.count == hidden.shape[1] and bool((comp.source == units).all()):
                self._compose(index, comp)
                return grid  # nothing merged yet: stay on the grid, bit for bit
            self.regrouped = True
        self._compose(index, comp)
        return comp.features.reshape(b, -1, d)

    def _compose(self, index: int, comp: Compression) -> None:
        """Fold this layer's merges into the map from the encoder's input tokens (or units)."""
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
        self.merging: EncoderMerging | AudioUnits
        if "audio" in self.method.modality:  # the Whisper encoder (`audio.py`)
            self.merging = AudioUnits(self.method, a.audio_tower, schedule)
            return
        units = a.tap.units if a.projector is None else None
        self.merging = EncoderMerging(
            self.method, a.encoder_layers, schedule, special=int(getattr(a, "has_cls", False)),
            units=units, unmerge_at=a.feature_layer if units is not None else None,
        )

    def install_hooks(self) -> None:
        self.merging.install()
        if isinstance(self.merging, AudioUnits):
            tower = self.adapter.audio_tower
            if tower.chunk:  # Qwen2.5-Omni: the encoder's output is placed; its call says the clips
                self.hook(tower.output.register_forward_pre_hook(self.merging.read_lengths, with_kwargs=True))
            self.hook(tower.output.register_forward_hook(self._clips))
        elif self.adapter.projector is not None:
            self.hook(self.adapter.projector.register_forward_hook(self._projector))
        else:
            self.hook(self.adapter.tap.output.register_forward_hook(self._pooled, with_kwargs=True))

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

    def _pooled(self, module: nn.Module, args: tuple, kwargs: dict, output: Tensor) -> None:
        """Grid families: each item's tokens came from units; the kept unit's token stands for
        every unit merged into it (their tokens are equal)."""
        source, positions, sizes = self.merging.after[self.adapter.feature_layer]
        self.encoded = []
        for b, (placed, _) in enumerate(self.adapter.tap.items(args, kwargs, output)):
            kept = positions[b].to(placed.device)
            comp = Compression(placed[kept][None], source[b][None], kept[None], sizes[b][None])
            self.encoded.append((placed, comp, 0))

    def _clips(self, module: nn.Module, args: tuple, output: Any) -> None:
        """Audio encoders: each clip's placed tokens and the compression of its units."""
        self.encoded = self.merging.encoded(output)

    def compress_spans(self, embeds: Tensor) -> dict[int, tuple[Compression, int]]:
        return {i: self.encoded_image(embeds, span) for i, span in enumerate(self.spans)}
