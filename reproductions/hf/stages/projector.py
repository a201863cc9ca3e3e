"""The projector stage: compress each image, video or audio clip before the LLM.

On LLaVA the method sees the encoder features the projector reads (with the [CLS] token where
the method takes one), and [CLS] attention and keys recomputed eagerly for that encoder layer
only; the compressed features are projected. On the other families it sees the rows of the LLM
input, with the prompt's text embeddings (`text`) and each video frame's mean token (`frames`)
in that same embedding space, as frame-selection methods need; where the family names an
encoder tap, also the encoder's attention and keys, pooled onto each row as its merger pools
the encoder's tokens. An encoder without a [CLS] (SigLIP, the Qwen ViTs) gives, as
`cls_attention`, the attention each token receives averaged over the query rows: what the
released SigLIP port of VisPruner and LightCompress' Qwen2.5-VL ports of VisionZip and VisPruner
rank tokens by.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from ...interface import Compression, Method, Tokens
from ..attention import encoder_queries_keys, probabilities, received
from ..models import Adapter
from ..sequence import Span, row_of
from .base import argument
from .input import InputStage


def at_projector_input(adapter: Adapter, method: Method) -> bool:
    """Whether the method sees LLaVA's encoder features where its projector reads them (True),
    or the LLM-input rows: every other family, and on LLaVA a method that needs the prompt's
    `text`, which exists only at the LLM input (as CDPruner's official LLaVA code prunes the
    projected features)."""
    return adapter.projector is not None and "text" not in method.needs


def projector_signals(adapter: Adapter, method: Method) -> set[str]:
    """The signals this stage supplies to `method` in this family."""
    if at_projector_input(adapter, method):
        return set(adapter.signals)
    tapped = adapter.tap is not None and all(
        m in adapter.tap.modalities for m in method.modality if m in adapter.tokens
    )
    return {"text", "frames"} | (set(adapter.signals) if tapped else set())


class ProjectorStage(InputStage):
    name = "projector"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.captured: dict[str, Tensor] = {}
        self.inside_projector = False
        #: encoder-tap families: the last encoder call's (attention, keys) per encoder token, and
        #: each media item placed in this context with its signals per placed token
        self.patch: tuple[Tensor, Tensor] | None = None
        self.tapped: list[tuple[Tensor, dict[str, Tensor]]] = []

    def install_hooks(self) -> None:
        a = self.adapter
        if a.tap is not None and {"cls_attention", "keys"} & set(self.method.needs):
            self.hook(a.tap.attention.register_forward_pre_hook(self._tap_attention, with_kwargs=True))
            if a.tap.output is not None:
                self.hook(a.tap.output.register_forward_hook(self._tap_output, with_kwargs=True))
            if a.tap.packer is not None:
                self.hook(Repack(*a.tap.packer, self))
        if not at_projector_input(a, self.method):
            return
        self.hook(a.projector.register_forward_hook(self._projector))
        if a.feature_layer is not None:
            layer = a.encoder_layers[a.feature_layer]
            self.hook(layer.register_forward_hook(self._encoder_output))
            self.hook(layer.self_attn.register_forward_pre_hook(self._encoder_attention, with_kwargs=True))

    # ------------------------------------------------------------------ LLaVA: at the encoder output
    def _encoder_attention(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.inside_projector or not {"cls_attention", "keys"} & set(self.method.needs):
            return
        attention, keys = encoder_signals(module, args, kwargs, cls=self.adapter.has_cls)
        self.captured["keys"] = keys
        self.captured["cls_attention"] = attention

    def _encoder_output(self, module: nn.Module, args: tuple, output: Any) -> None:
        if not self.inside_projector:
            self.captured["hidden"] = output[0] if isinstance(output, tuple) else output

    def _projector(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        if self.inside_projector:
            return
        features, special, drop = args[0], 0, self.adapter.encoder_special
        wants_cls = self.method.special_tokens is not None and 0 not in self.method.special_tokens
        if wants_cls and drop and "hidden" in self.captured:
            features, special, drop = self.captured["hidden"], drop, 0
        signals = {}
        for name in self.method.needs:
            value = self.captured[name]
            signals[name] = value[:, :, drop:] if name == "cls_attention" else value[:, drop:]
        side = self.adapter.patches_per_side
        layout = (side, side) if features.shape[1] - special == side * side else None
        comp = self.method(Tokens(features=features, layout=layout, special=special, **signals))
        self.inside_projector = True
        try:
            projected = module(comp.features)
        finally:
            self.inside_projector = False
        projected_comp = Compression(projected, comp.source, comp.positions, comp.sizes)
        self.encoded = [(output[i], row_of(projected_comp, i), special) for i in range(features.shape[0])]

    # ------------------------------------------------------------------ encoder-tap families
    def _tap_attention(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        attention, keys = encoder_signals(module, args, kwargs, cls=self.adapter.tap.special > 0)
        s = self.adapter.tap.special
        heads = attention.shape[1]
        self.patch = (attention[..., s:].transpose(0, 1).reshape(heads, -1), keys[:, s:].reshape(-1, keys.shape[-1]))

    def _tap_output(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self.patch is None:
            return
        attention, keys = self.patch
        for placed, pool in self.adapter.tap.items(args, kwargs, output):
            self.tapped.append((placed, {"cls_attention": pool(attention), "keys": pool(keys.T).T}))

    def tapped_signals(self, embeds: Tensor, span: Span) -> dict[str, Tensor]:
        """The encoder signals of the items placed in this span (one, or a video's frames one
        after another), found by the span's content."""
        piece = embeds[span.row, span.columns.to(embeds.device)]
        found: list[dict[str, Tensor]] = []
        at = 0
        while at < len(piece):
            match = next(
                (signals for placed, signals in self.tapped
                 if at + len(placed) <= len(piece)
                 and torch.equal(placed.to(piece.dtype), piece[at : at + len(placed)])),
                None,
            )
            if match is None:
                raise RuntimeError(
                    f"{self.method.name}: the {span.modality} at row {span.row}, tokens {span.start}-"
                    f"{int(span.columns[-1])} was not encoded by {type(self.model).__name__}'s vision "
                    "encoder inside this compress context (features passed in precomputed carry no "
                    "encoder attention): pass pixel values inside the context"
                )
            found.append(match)
            at += match["keys"].shape[0]
        return {
            "cls_attention": torch.cat([f["cls_attention"] for f in found], dim=-1),
            "keys": torch.cat([f["keys"] for f in found]),
        }

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
        wanted = [name for name in ("cls_attention", "keys") if name in self.method.needs]
        if wanted and self.adapter.tap is not None:
            found = [self.tapped_signals(embeds, self.spans[i]) for i in members]
            signals |= {name: torch.stack([f[name] for f in found]).to(rows.dtype) for name in wanted}
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


def encoder_signals(module: nn.Module, args: tuple, kwargs: dict, cls: bool) -> tuple[Tensor, Tensor]:
    """(B, heads, L) attention and (B, L, d) keys averaged over heads, of one call of an encoder
    attention module: the [CLS] row's attention where the encoder has a [CLS], else the attention
    each token receives averaged over its query rows (within each image or frame of a flat Qwen
    sequence, as the module's `cu_seqlens` bound it)."""
    hidden = argument(args, kwargs, "hidden_states")
    q, k = encoder_queries_keys(module, hidden, kwargs.get("position_embeddings"))
    scale = module.scale if hasattr(module, "scale") else module.scaling
    keys = k.mean(1)  # ToMe / VisionZip read keys averaged over heads
    if cls:
        attention = probabilities(q[:, :, :1], k, scale)[:, :, 0]
    elif kwargs.get("cu_seqlens") is not None:
        bounds = kwargs["cu_seqlens"].tolist()
        attention = torch.cat(
            [received(q[:, :, a:b], k[:, :, a:b], scale) for a, b in zip(bounds, bounds[1:], strict=False)], dim=-1
        )
    else:
        mask = kwargs.get("attention_mask")
        allowed = None if mask is None else (mask if mask.dtype == torch.bool else mask == 0)
        attention = received(q, k, scale, allowed)
    return attention.to(hidden.dtype), keys



class Repack:
    """For the compress context, the family's packing method (`pack_image_features`) also packs
    the last encoder call's signals, as it packs the crops' features: unpadding, resizing and
    newlines (zeros) alike; each packed image is recorded with its signals. `remove()` restores
    the method."""

    def __init__(self, module: nn.Module, name: str, stage: ProjectorStage) -> None:
        self.module, self.name = module, name
        original = getattr(module, name)
        signature = inspect.signature(original)

        def pack(*args: Any, **kwargs: Any) -> Any:
            packed, lengths = original(*args, **kwargs)
            if stage.patch is None:
                return packed, lengths
            bound = signature.bind(*args, **kwargs)
            crops = [len(f) for f in bound.arguments["image_features"]]
            patches = bound.arguments["image_features"][0].shape[1]

            def signal(x: Tensor) -> list[Tensor]:  # (C, crops * patches) -> per image (tokens, C)
                bound.arguments["image_features"] = list(x.T.reshape(-1, patches, x.shape[0]).split(crops))
                bound.arguments["image_newline"] = x.new_zeros(x.shape[0])
                return original(*bound.args, **bound.kwargs)[0]

            attention, keys = stage.patch
            for placed, a, k in zip(packed, signal(attention), signal(keys.T), strict=True):
                stage.tapped.append((placed, {"cls_attention": a.T, "keys": k}))
            return packed, lengths

        setattr(module, name, pack)

    def remove(self) -> None:
        if self.name in vars(self.module):
            delattr(self.module, self.name)
