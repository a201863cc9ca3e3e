"""Gemma 3 (Gemma3ForConditionalGeneration): each image is mm_tokens_per_image pooled tokens on a
square grid, between begin / end-of-image tokens, and the image's tokens attend to each other
bidirectionally (on sliding-window layers, within the window). A shortened prompt keeps those
semantics: its masks are built by Gemma 3's own `create_masks_for_vision_model` on the kept
tokens, the kept image tokens forming each image's block. The llm stage runs its layers >= K
with these masks per layer type (`layer_types`) on the kept rows. The cache stage is refused: it
masks media entries of every cached column at each step, but a sliding-window layer's cache
holds only its last W - 1 entries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from transformers.models.gemma3 import modeling_gemma3

from ..sequence import take
from .base import Adapter, EncoderTap, arange_features, grid_tap, language_parts, square

CACHE_STAGE = (
    "Gemma 3's sliding-window layers cache only their last sliding_window - 1 entries, so the "
    "media entries this stage masks at each decoding step are not all there; use an llm- or "
    "projector-stage method"
)


@dataclass
class Gemma3Adapter(Adapter):
    tokens_per_image: int = 0
    text_config: Any = None

    def item_size(self, modality: str) -> int | None:
        return self.tokens_per_image if modality == "image" else None

    def layout(self, modality, length, positions):
        return square(length) if modality == "image" else super().layout(modality, length, positions)

    def prefill_mask(self, valid: Tensor, index: Tensor, input_ids: Tensor | None, embeds: Tensor,
                     positions: Tensor, cache: Any) -> dict[str, Tensor]:
        """Gemma 3's own masks per layer type on the rows `index`: full = causal or within one
        image's kept tokens (a run of them), sliding = that within the window counted over
        these rows (with `cache` None: the rows are all the keys)."""
        image = take((input_ids == self.tokens["image"]).long(), index, dim=1, fill=0) & valid.long()
        blocks = modeling_gemma3.get_block_sequence_ids_for_mask(image, device=embeds.device)
        return modeling_gemma3.create_masks_for_vision_model(
            config=self.text_config, inputs_embeds=embeds, attention_mask=valid.long(), cache=cache,
            position_ids=positions, block_sequence_ids=blocks,
        )


def vision_tap(inner: nn.Module) -> EncoderTap:
    """The last SigLIP layer (no [CLS]); each image token is the projector's average pool of a
    kernel_size² block of patches."""
    projector = inner.multi_modal_projector
    side, kernel = projector.patches_per_image, projector.kernel_size
    index = arange_features(side * side).view(1, 1, side, side)
    units = F.unfold(index, kernel, stride=kernel)[0].T.round().long()  # (tokens, kernel²), row-major
    layers = vision_layers(inner)
    return grid_tap(layers[-1].self_attn, projector, 0, units, tuple(layer.self_attn for layer in layers))


def vision_layers(inner: nn.Module) -> nn.ModuleList:
    tower = inner.vision_tower
    return getattr(tower, "vision_model", tower).encoder.layers


def build(model: nn.Module) -> Gemma3Adapter:
    config = model.config
    return Gemma3Adapter(
        family="gemma3",
        **language_parts(model),
        tokens={"image": config.image_token_id},
        gridded=("image",),
        unsupported_stages={"cache": CACHE_STAGE},
        layer_types=tuple(config.get_text_config().layer_types),
        tokens_per_image=config.mm_tokens_per_image,
        signals=("cls_attention", "keys", "received"),
        tap=vision_tap(model.model),
        encoder_layers=vision_layers(model.model),
        feature_layer=len(vision_layers(model.model)) - 1,
        text_config=config.get_text_config(),
    )
