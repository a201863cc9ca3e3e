"""The projector stage: compress each image, video or audio clip before the LLM.

On LLaVA the method sees the encoder features the projector reads (with the [CLS] token where
the method takes one), and [CLS] attention and keys recomputed eagerly for that encoder layer
only; only the kept features are projected (the projector's forward is replaced for the
context, `shadow`). On the other families it sees the rows of the LLM
input, with the prompt's text embeddings (`text`) and each video frame's mean token (`frames`)
in that same embedding space, as frame-selection methods need; where the family names an
encoder tap, also the encoder's attention and keys, pooled onto each row as its merger pools
the encoder's tokens. An encoder without a [CLS] (SigLIP, the Qwen ViTs) gives, as
`cls_attention`, the attention each token receives averaged over the query rows: what the
released SigLIP port of VisPruner and LightCompress' Qwen2.5-VL ports of VisionZip and VisPruner
rank tokens by. `received` (HiPrune's global attention) is the attention each token receives,
averaged over heads and every query row, at the encoder layers the method names
(`Method.encoder_layers`), pooled like `cls_attention`. A method whose `cls_from` is
"last_logits" (GlobalCom2) gets the last encoder layer's [CLS] logits instead; on anyres images
`anyres` gives each packed token's view and place, packed by the model's own packing (`Repack`).
An audio method in a family with a Whisper-style audio encoder (Qwen2-Audio, Qwen2.5-Omni) gets
`cls_attention` from that encoder's last layer (`AudioTap`): the attention each real frame
receives, averaged over the real query rows of its attention window, then over each pair of
frames the encoder pools into one LLM token.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from ...interface import Compression, Method, Tokens
from ..models import Adapter
from ..models.base import shadow
from ..sequence import Span, placed_here, row_of
from .input import InputStage
from .signals import AudioTap, Repack, encoder_signals, received_signal


def at_projector_input(adapter: Adapter, method: Method) -> bool:
    """Whether the method sees LLaVA's encoder features where its projector reads them (True),
    or the LLM-input rows: every other family, and on LLaVA a method that needs the prompt's
    `text`, which exists only at the LLM input (as CDPruner's official LLaVA code prunes the
    projected features)."""
    return adapter.projector is not None and "text" not in method.needs


ENCODER_SIGNALS = ("cls_attention", "keys", "received", "anyres", "encoder_attention")


def encoder_depth(adapter: Adapter) -> tuple[list[nn.Module], int] | None:
    """Every encoder layer's attention module, and the index of the one the projector reads;
    None where the family names none."""
    if adapter.projector is not None and adapter.encoder_layers is not None:
        return [layer.self_attn for layer in adapter.encoder_layers], adapter.feature_layer
    if adapter.tap is not None and adapter.tap.attentions:
        attentions = list(adapter.tap.attentions)
        return attentions, next(i for i, m in enumerate(attentions) if m is adapter.tap.attention)
    return None


def cls_module(adapter: Adapter, method: Method) -> nn.Module:
    """The encoder attention module whose call gives `cls_attention` and `keys`: the layer the
    projector reads, or the last layer for a method that reads its logits (`cls_from`)."""
    attentions, feature = encoder_depth(adapter)
    return attentions[-1 if method.cls_from == "last_logits" else feature]


def encoder_cls(adapter: Adapter, method: Method) -> bool:
    """Whether `cls_attention` comes from a [CLS] row (an encoder with a [CLS] that the model
    drops before its projector), not from the attention each token receives."""
    if at_projector_input(adapter, method):
        return bool(getattr(adapter, "has_cls", False)) and adapter.encoder_special > 0
    return adapter.tap is not None and adapter.tap.special > 0


def received_layers(adapter: Adapter, method: Method) -> dict[int, nn.Module]:
    """The encoder layers whose `received` attention `method` reads, in its order, by index."""
    found = encoder_depth(adapter)
    if found is None or "received" not in method.needs:
        return {}
    attentions, feature = found
    return {i: attentions[i] for i in method.encoder_layers(len(attentions), feature)}


def audio_tapped(adapter: Adapter, method: Method) -> bool:
    """Whether `method`'s encoder signals come from the family's audio encoder (`AudioTap`): it
    works on audio alone, among the modalities the family carries."""
    carried = {m for m in method.modality if m in adapter.tokens}
    return adapter.audio_tower is not None and carried == {"audio"}


def projector_signals(adapter: Adapter, method: Method) -> set[str]:
    """The signals this stage supplies to `method` in this family."""
    if at_projector_input(adapter, method):
        return set(adapter.signals)
    if audio_tapped(adapter, method):
        return {"text", "frames", *AudioTap.signals}
    tapped = adapter.tap is not None and all(
        m in adapter.tap.modalities for m in method.modality if m in adapter.tokens
    )
    return {"text", "frames"} | (set(adapter.signals) if tapped else set())


class ProjectorStage(InputStage):
    name = "projector"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.captured: dict[str, Tensor] = {}
        #: encoder-tap families: the last encoder call's (attention, keys) per encoder token, and
        #: each media item placed in this context with its signals per placed token, every signal
        #: channels first: (heads, n) attention, (d, n) keys, (layers, n) received
        self.patch: dict[str, Tensor] | None = None
        self.tapped: list[tuple[Tensor, dict[str, Tensor]]] = []
        #: `received` per encoder layer index of the last encoder call, (B, L) each
        self.rows: dict[int, Tensor] = {}
        self.layers = received_layers(self.adapter, self.method)

    def install_hooks(self) -> None:
        a = self.adapter
        for index, module in self.layers.items():
            self.hook(module.register_forward_pre_hook(self._received(index), with_kwargs=True))
        if audio_tapped(a, self.method):
            if set(AudioTap.signals) & set(self.method.needs):
                self.hook(AudioTap(a.audio_tower, self))
        elif a.tap is not None and set(ENCODER_SIGNALS) & set(self.method.needs):
            if {"cls_attention", "keys"} & set(self.method.needs):
                self.hook(cls_module(a, self.method).register_forward_pre_hook(self._tap_attention, with_kwargs=True))
            if a.tap.output is not None:
                self.hook(a.tap.output.register_forward_hook(self._tap_output, with_kwargs=True))
            if a.tap.packer is not None:
                self.hook(Repack(*a.tap.packer, self))
        if not at_projector_input(a, self.method):
            return
        self.hook(shadow(a.projector, "forward", partial(self._projector, a.projector.forward)))
        if a.feature_layer is not None:
            layer = a.encoder_layers[a.feature_layer]
            self.hook(layer.register_forward_hook(self._encoder_output))
            self.hook(cls_module(a, self.method).register_forward_pre_hook(self._encoder_attention, with_kwargs=True))

    def _received(self, index: int):
        """A pre-hook on encoder layer `index`'s attention recording `received` there."""

        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self.rows[index] = received_signal(module, args, kwargs)

        return hook

    def received_rows(self) -> Tensor:
        """(B, L, tokens) `received` of the last encoder call at the method's layers."""
        return torch.stack([self.rows[i] for i in self.layers], dim=1)

    # ------------------------------------------------------------------ LLaVA: at the encoder output
    def _encoder_attention(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not {"cls_attention", "keys"} & set(self.method.needs):
            return
        attention, keys = encoder_signals(module, args, kwargs, self.adapter.has_cls, self.method.cls_from == "last_logits")
        self.captured["keys"] = keys
        self.captured["cls_attention"] = attention

    def _encoder_output(self, module: nn.Module, args: tuple, output: Any) -> None:
        self.captured["hidden"] = output[0] if isinstance(output, tuple) else output

    def _projector(self, project: Any, features: Tensor) -> Tensor:
        """LLaVA's projector, for the duration of the context: the method on its input, the
        projector on the kept tokens only, and, for the model's own placeholder check, every
        input row holding the projected token it went to (a dropped one: any), so each image's
        placeholder content identifies its compression."""
        rows, special, drop = features, 0, self.adapter.encoder_special
        wants_cls = self.method.special_tokens is not None and 0 not in self.method.special_tokens
        if wants_cls and drop and "hidden" in self.captured:
            features, special, drop = self.captured["hidden"], drop, 0
        if "received" in self.method.needs:
            self.captured["received"] = self.received_rows()
        signals = {}
        for name in self.method.needs:
            value = self.captured[name]
            signals[name] = value[:, drop:] if name == "keys" else value[:, :, drop:]
        side = self.adapter.patches_per_side
        layout = (side, side) if features.shape[1] - special == side * side else None
        comp = self.method(Tokens(features=features, layout=layout, special=special, **signals))
        projected = project(comp.features)
        slots = comp.source[:, features.shape[1] - rows.shape[1] :].clamp(min=0)
        placeholder = torch.gather(projected, 1, slots[..., None].expand(-1, -1, projected.shape[2]))
        projected_comp = Compression(projected, comp.source, comp.positions, comp.sizes)
        self.encoded = [(placeholder[i], row_of(projected_comp, i), special) for i in range(rows.shape[0])]
        return placeholder

    # ------------------------------------------------------------------ encoder-tap families
    def _tap_attention(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        attention, keys = encoder_signals(module, args, kwargs, self.adapter.tap.special > 0,
                                          self.method.cls_from == "last_logits")
        self.patch = {"cls_attention": self.per_token(attention), "keys": self.per_token(keys.transpose(1, 2))}

    def per_token(self, x: Tensor) -> Tensor:
        """(B, C, L) per encoder sequence -> (C, tokens) over the call, special tokens left out."""
        return x[..., self.adapter.tap.special :].transpose(0, 1).reshape(x.shape[1], -1)

    def encoder_patch(self) -> dict[str, Tensor] | None:
        """The last encoder call's signals per encoder token, channels first."""
        if "received" in self.method.needs and self.rows:
            self.patch = (self.patch or {}) | {"received": self.per_token(self.received_rows())}
            self.rows = {}
        return self.patch

    def _tap_output(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        patch = self.encoder_patch()
        if patch is None:
            return
        for placed, pool in self.adapter.tap.items(args, kwargs, output):
            self.tapped.append((placed, {name: pool(value) for name, value in patch.items()}))

    def tapped_signals(self, embeds: Tensor, span: Span) -> dict[str, Tensor]:
        """The encoder signals of the items placed in this span (one, or a video's frames one
        after another), found by the span's content."""
        piece = embeds[span.row, span.columns.to(embeds.device)]
        found: list[dict[str, Tensor]] = []
        at = 0
        while at < len(piece):
            match = next(
                (signals for placed, signals in self.tapped if placed_here(placed, piece[at : at + len(placed)])),
                None,
            )
            if match is None:
                raise RuntimeError(
                    f"{self.method.name}: the {span.modality} at row {span.row}, tokens {span.start}-"
                    f"{int(span.columns[-1])} was not encoded by {type(self.model).__name__}'s "
                    f"{'audio' if span.modality == 'audio' else 'vision'} encoder inside this compress "
                    "context (features passed in precomputed carry no encoder attention): pass "
                    f"{'input_features' if span.modality == 'audio' else 'pixel values'} inside the context"
                )
            found.append(match)
            at += next(iter(match.values())).shape[-1]
        return {name: torch.cat([f[name] for f in found], dim=-1) for name in found[0]}

    # ------------------------------------------------------------------ every span
    def compress_spans(self, embeds: Tensor) -> dict[int, tuple[Compression, int]]:
        """LLaVA images from the projector hook; the rest of the LLM input rows, batched over
        spans of one shape. One call per span where prompts differ (`text`) or where the
        method's output count depends on the data (rows of one batch could differ)."""
        out: dict[int, tuple[Compression, int]] = {}
        groups: dict[tuple, list[int]] = {}
        for i, span in enumerate(self.spans):
            if span.modality == "image" and at_projector_input(self.adapter, self.method):
                out[i] = self.encoded_image(embeds, span)
            else:
                groups.setdefault((span.length, span.layout, span.modality), []).append(i)
        for members in groups.values():
            tokens = self.span_tokens(embeds, members)
            if len(members) > 1 and ("text" in self.method.needs or self.method.output_count(tokens) is None):
                batches = [(self.span_tokens(embeds, [i]), [i]) for i in members]
            else:
                batches = [(tokens, members)]
            for batch, which in batches:
                comp = self.method(batch)
                for j, i in enumerate(which):
                    out[i] = (row_of(comp, j), 0)
        return out

    def span_tokens(self, embeds: Tensor, members: list[int]) -> Tokens:
        """The LLM input rows of spans of one shape, as one batch, with their signals."""
        first = self.spans[members[0]]
        rows = torch.stack(
            [embeds[self.spans[i].row, self.spans[i].columns.to(embeds.device)] for i in members]
        )
        signals = self.sequence_signals(embeds, first, rows)
        wanted = [name for name in ENCODER_SIGNALS if name in self.method.needs]
        if wanted:  # an encoder tap supplies them (`projector_signals`)
            found = [self.tapped_signals(embeds, self.spans[i]) for i in members]
            for name in wanted:
                value = torch.stack([f[name] for f in found])
                value = value.round().long() if name == "anyres" else value.to(rows.dtype)
                signals[name] = value.transpose(1, 2) if name in ("keys", "anyres") else value
        return Tokens(features=rows, layout=first.layout, **signals)

    def sequence_signals(self, embeds: Tensor, span: Span, rows: Tensor) -> dict[str, Tensor]:
        """`text` (the row's real non-media tokens) and `frames` (each frame's mean token of a
        video laid out (T, H, W)), in the LLM input's embedding space."""
        signals: dict[str, Tensor] = {}
        if "frames" in self.method.needs and span.layout is not None and len(span.layout) == 3:
            signals["frames"] = rows.reshape(rows.shape[0], span.layout[0], -1, rows.shape[-1]).mean(2)
        if "text" in self.method.needs:
            text = torch.ones(embeds.shape[1], dtype=torch.bool, device=embeds.device)
            if self.mask2d is not None:
                text &= self.mask2d[span.row].bool().to(embeds.device)
            for other in self.spans:
                if other.row == span.row:
                    text[other.columns.to(embeds.device)] = False
            signals["text"] = embeds[span.row, text][None]
        return signals
