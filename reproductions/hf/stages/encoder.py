"""The encoder stage: ToMe-style merging inside every layer of a CLIP or SigLIP encoder: LLaVA's,
and Gemma 3's and Idefics3's (and InternVL's InternViT), which pool a fixed grid of patches into
each LLM token afterwards. There the method merges whole pooling units (a token's 2x2 or 4x4
patches, concatenated; a leading [CLS] is a special token that never merges), and
before the pooling the merged units are put back on the grid (each unit holding its merged
unit's patches), so every merged unit leaves one distinct LLM token; the kept one stands for
them all (`units.py`, with the grid a `grid` method reads). The merged, projected tokens replace
each image's span of the LLM input (`input.py`).
The Qwen ViTs, which run every image as one flat sequence, merge in `packed.py`. (Audio methods,
A-ToMe and audio attention pruning, compress inside the Whisper-style audio encoders of
Qwen2-Audio and Qwen2.5-Omni, on whole pooling pairs of each clip's real frames: `audio.py`,
which lists what differs there from the official code.)

Each encoder layer runs, for the duration of `compress`, a forward bound to that one layer
instance (the class is untouched; the instance attribute is deleted on exit) that does what the
layer does, plus ToMe's two additions:

- proportional attention: log(sizes) is added to the attention logits (through the layer's own
  additive `attention_mask`, so eager and SDPA both apply it);
- between attention and MLP, the method merges the tokens on this layer's keys averaged over
  heads, with the sizes carried from layer to layer (`Tokens.sizes`).

A method may act differently per layer (`Method.encoder_step`: FlowCut scores in every layer up
to the one before the projector's and prunes in some); where every encoder token is one patch
(LLaVA) it may also read the layer's per-head `values` and, with a [CLS], its `cls_attention`,
recomputed from the layer's own projections, and the `scores` its previous layer's step returned.

The merges compose into a map from the encoder's input tokens to the tokens of the layer the
projector reads, so each projected token takes the position of its kept token in the LLM
sequence. The model's own outputs recording (hidden_states) sees the merged layers, as the
forward runs inside the layer's normal call.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ...interface import Compression, Method, Tokens
from ...ops import proportional_attention_bias
from ..models import Adapter
from ..sequence import row_of
from .audio import AudioUnits
from .input import InputStage
from .merging import Merging
from .packed import PackedMerging
from .signals import layer_signals
from .units import GridMerging


def _bias(sizes: Tensor | None, mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """ToMe's proportional attention term log(sizes) (B, 1, 1, N), plus any given mask."""
    if sizes is None:
        return mask
    bias = proportional_attention_bias(sizes).to(dtype)
    return bias if mask is None else bias + mask


def _parts(layer: nn.Module) -> tuple[Any, nn.Module, Tensor | None, Any, Any, Tensor | None]:
    """A pre-norm encoder layer's pieces: norm, attention, its layer scale (None: none), norm,
    MLP, its layer scale: CLIP / SigLIP's, or InternViT's (`lambda_1`, `lambda_2`)."""
    if hasattr(layer, "self_attn"):
        return layer.layer_norm1, layer.self_attn, None, layer.layer_norm2, layer.mlp, None
    mlp = lambda x: layer.dropout(layer.mlp(x))  # noqa: E731
    return layer.layernorm_before, layer.attention, layer.lambda_1, layer.layernorm_after, mlp, layer.lambda_2


class EncoderMerging(GridMerging):
    """The merging of CLIP / SigLIP encoder layers; tracks the merges of one call."""

    def __init__(
        self, method: Method, layers: nn.ModuleList, schedule: list[int] | None, special: int,
        units: Tensor | None = None, unmerge_at: int | None = None, feature: int | None = None,
    ) -> None:
        super().__init__(method, layers, schedule)
        self.special = special
        #: the layer the projector reads (the method's `encoder_step` counts from it)
        self.feature = len(layers) - 1 if feature is None else feature
        #: grid families: the patches of each pooling unit (U, k), merged whole, and the layer
        #: after which the units go back on the grid for the model's own pooling
        self.units, self.unmerge_at = units, unmerge_at
        self.reset()

    def reset(self) -> None:
        """Forget the merges of the previous encoder call."""
        self.sizes: Tensor | None = None
        self.scores: Tensor | None = None  # what the last layer's step returned as `scores`
        self.count = 0  # the tokens (grid families: units) the first layer saw
        self.regrouped = False  # grid families: the patches lie unit by unit (after a merge)
        self.source: Tensor | None = None  # (B, N0): slot of each input token, -1 dropped
        self.positions: Tensor | None = None  # (B, N): input index each current token stands at
        self.after: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

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
            norm1, attn, scale1, norm2, mlp, scale2 = _parts(layer)
            x = norm1(hidden_states)
            bias = _bias(merging.patch_sizes(), attention_mask, x.dtype)
            out, _ = attn(hidden_states=x, attention_mask=bias, **kwargs)
            hidden = (out if scale1 is None else scale1 * out) + hidden_states
            hidden = merging._merge(index, attn, x, hidden, bias)
            out = mlp(norm2(hidden))
            hidden = (out if scale2 is None else scale2 * out) + hidden
            return merging.on_grid(hidden) if index == merging.unmerge_at else hidden

        return forward

    def _merge(self, index: int, attn: nn.Module, normed: Tensor, hidden: Tensor, bias: Tensor | None) -> Tensor:
        if index == 0:
            self.count = hidden.shape[1] if self.units is None else self.special + self.units.shape[0]
        method = self._method_for(index).encoder_step(index, self.count, self.feature)
        if method is None:  # the layer runs unchanged
            if self.source is None:  # as does every layer before it: each token where it was
                start = torch.arange(self.count, device=hidden.device).expand(hidden.shape[0], -1)
                self.source, self.positions, self.sizes = start, start, torch.ones(start.shape, device=hidden.device)
            self.after[index] = (self.source, self.positions, self.sizes)
            return hidden
        if self.units is not None:
            return self._merge_units(index, method, layer_signals(attn, normed, bias, {"keys"})["keys"], hidden)
        wanted = {*method.needs, *method.uses}
        signals = layer_signals(attn, normed, bias, wanted - {"scores"})
        scores = self.scores if "scores" in wanted else None
        layout = self.square_grid(hidden) if method.grid else None
        comp = method(Tokens(features=hidden, layout=layout, sizes=self.sizes, special=self.special, scores=scores, **signals))
        self._compose(index, comp)
        return comp.features

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
        self.sizes, self.scores = comp.sizes, comp.scores
        self.after[index] = (self.source, self.positions, self.sizes)

    def compression_at(self, index: int, features: Tensor) -> Compression:
        """The composed merges up to layer `index`, with `features` (B, K, D) as the output."""
        source, positions, sizes = self.after[index]
        return Compression(features=features, source=source, positions=positions, sizes=sizes, scores=self.scores_at(index))

    def scores_at(self, index: int) -> Tensor | None:
        """The scores the method's last step returned (MustDrop's key set), where they are those
        of layer `index`'s tokens: no later layer changed them."""
        at, last = self.after[index][1], self.after[max(self.after)][1]
        return self.scores if at.shape == last.shape and bool((at == last).all()) else None


def stage_signals(adapter: Adapter, method: Method | None = None) -> set[str]:
    """The signals the encoder stage supplies in this family: `keys` everywhere; where every
    encoder token is one patch (LLaVA, whose projector reads the encoder's tokens) or one merge
    unit of a Qwen ViT also the layer's `values` and the `scores` a method's previous step
    returned; `cls_attention` where the encoder leads with a [CLS] (CLIP), or in Qwen2-VL's ViT
    (full attention in every block, no DeepStack taps) from the query `method.cls_free_query`
    names."""
    if adapter.packed is not None:
        plain = not hasattr(adapter.packed, "window_size") and not adapter.deepstack_layers
        mean = method is not None and method.cls_free_query == "mean" and plain
        return {"keys", "values", "scores"} | ({"cls_attention"} if mean else set())
    if adapter.projector is None:
        return {"keys"}
    return {"keys", "values", "scores"} | ({"cls_attention"} if getattr(adapter, "has_cls", False) else set())


def stage_special(adapter: Adapter) -> int:
    """The leading [CLS] tokens the encoder stage's method sees: LLaVA's CLIP's, a pooled grid
    family's encoder's (InternViT's), none in the Qwen ViTs."""
    if adapter.packed is not None:
        return 0
    return adapter.tap.special if adapter.projector is None else int(getattr(adapter, "has_cls", False))


class EncoderStage(InputStage):
    name = "encoder"
    signals = ("keys",)

    def __init__(self, *args: Any, schedule: list[int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        a = self.adapter
        self.merging: Merging
        if "audio" in self.method.modality:  # the Whisper encoder (`audio.py`)
            self.merging = AudioUnits(self.method, a.audio_tower, schedule)
            return
        units = a.tap.units if a.projector is None and a.packed is None else None
        self.merging = (
            PackedMerging(self.method, a.packed, a.outer, schedule) if a.packed is not None else
            EncoderMerging(
                self.method, a.encoder_layers, schedule,
                special=stage_special(a),
                units=units, unmerge_at=a.feature_layer if units is not None else None, feature=a.feature_layer,
            )
        )

    def install_hooks(self) -> None:
        self.merging.install()
        if isinstance(self.merging, AudioUnits):
            tower = self.adapter.audio_tower
            if tower.chunk:  # Qwen2.5-Omni: the encoder's output is placed; its call says the clips
                self.hook(tower.output.register_forward_pre_hook(self.merging.read_lengths, with_kwargs=True))
            self.hook(tower.output.register_forward_hook(self._clips))
        elif self.adapter.packed is not None:
            self.hook(self.adapter.packed.register_forward_hook(self._packed))
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
        scores = None if merged.scores is None else merged.scores[:, drop:]  # for the llm stage
        comp = Compression(output, source, merged.positions[:, drop:], merged.sizes[:, drop:], scores)
        slots = (merged.source[:, drop:] - drop).clamp(min=0)  # a dropped token: any slot will do
        placeholder = torch.gather(output, 1, slots[..., None].expand(-1, -1, output.shape[2]))
        cls = int(self.adapter.has_cls)
        self.encoded = [(placeholder[i], row_of(comp, i), cls) for i in range(output.shape[0])]
        return placeholder

    def _pooled(self, module: nn.Module, args: tuple, kwargs: dict, output: Tensor) -> None:
        """Grid families: each item's tokens came from units; the kept unit's token stands for
        every unit merged into it (their tokens are equal). A [CLS] (dropped) leaves no token."""
        s = self.merging.special
        source, positions, sizes = (x[:, s:] for x in self.merging.after[self.adapter.feature_layer])
        self.encoded = []
        for b, (placed, _) in enumerate(self.adapter.tap.items(args, kwargs, output)):
            kept = (positions[b] - s).to(placed.device)
            comp = Compression(placed[kept][None], source[b][None] - s, kept[None], sizes[b][None])
            self.encoded.append((placed, comp, 0))

    def _packed(self, module: nn.Module, args: tuple, output: Any) -> None:
        """Qwen ViTs: each image of an image call, placed as the model will place it."""
        if self.merging.active:
            self.encoded = [(placed, comp, 0) for placed, comp in self.merging.items(output.pooler_output)]

    def _clips(self, module: nn.Module, args: tuple, output: Any) -> None:
        """Audio encoders: each clip's placed tokens and the compression of its units."""
        self.encoded = self.merging.encoded(output)

    def compress_spans(self, embeds: Tensor) -> dict[int, tuple[Compression, int]]:
        return {i: self.encoded_image(embeds, span) for i, span in enumerate(self.spans)}
