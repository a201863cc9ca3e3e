"""Families that read an image as square tiles of pixel-shuffled tokens: Idefics3 / SmolVLM
(each tile one run of placeholders between its row/column markers) and InternVL (an image's
tiles one run). Each tile is one item on a square grid; the projector stage compresses the rows
entering the LLM."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from .base import (
    Adapter,
    EncoderTap,
    Pool,
    arange_features,
    flat_items,
    language_parts,
    pooled_groups,
    square,
)


@dataclass
class TileAdapter(Adapter):
    #: placeholder tokens per tile
    tile_tokens: int = 0

    def item_size(self, modality: str) -> int | None:
        return self.tile_tokens if modality == "image" else None

    def layout(self, modality, length, positions):
        return square(length) if modality == "image" else super().layout(modality, length, positions)


def _side(size) -> int:
    return size[0] if isinstance(size, list | tuple) else size


def idefics3_tap(inner: nn.Module, patches: int) -> EncoderTap:
    """The last SigLIP layer (no [CLS]); each tile token pools scale_factor² patches, which the
    connector's own pixel shuffle, run on the patch indices, names."""
    connector = inner.connector

    def items(args: tuple, kwargs: dict, output: Tensor) -> list[tuple[Tensor, Pool]]:
        index = arange_features(patches, output.device).view(1, patches, 1)
        return flat_items(output, pooled_groups(connector.pixel_shuffle(index, connector.scale_factor)), patches)

    layers = inner.vision_model.encoder.layers
    return EncoderTap(attention=layers[-1].self_attn, output=connector, special=0, items=items,
                      attentions=tuple(layer.self_attn for layer in layers))


def internvl_tap(model: nn.Module, side: int) -> EncoderTap:
    """InternViT's feature layer, with its [CLS] (which the model drops before the pixel shuffle);
    each tile token pools the 2x2 patches that the model's own pixel shuffle, run on the patch
    indices, names."""
    inner, config = model.model, model.config

    def items(args: tuple, kwargs: dict, output: Tensor) -> list[tuple[Tensor, Pool]]:
        index = arange_features(side * side, output.device).view(1, side, side, 1)
        shuffled = inner.pixel_shuffle(index, scale_factor=config.downsample_ratio)
        return flat_items(output, pooled_groups(shuffled), side * side)

    layers = inner.vision_tower.encoder.layer
    feature = config.vision_feature_layer % (len(layers) + 1) - 1  # hidden_states[k]: layer k - 1's output
    special = 1 if config.vision_feature_select_strategy == "default" else 0
    return EncoderTap(attention=layers[feature].attention, output=inner.multi_modal_projector, special=special,
                      items=items, attentions=tuple(layer.attention for layer in layers))


def build_idefics3(model: nn.Module) -> TileAdapter:
    config = model.config
    vc = config.vision_config
    patches = (_side(vc.image_size) // _side(vc.patch_size)) ** 2
    return TileAdapter(
        family="idefics3",
        **language_parts(model, "text_model"),
        tokens={"image": config.image_token_id},
        tile_tokens=patches // config.scale_factor**2,
        gridded=("image",),
        signals=("cls_attention", "keys", "received"),
        tap=idefics3_tap(model.model, patches),
    )


def build_internvl(model: nn.Module) -> TileAdapter:
    config = model.config
    vc = config.vision_config
    side = _side(vc.image_size) // _side(vc.patch_size)
    return TileAdapter(
        family="internvl",
        **language_parts(model),
        tokens={"image": config.image_token_id},
        tile_tokens=int(math.floor(side * config.downsample_ratio)) ** 2,
        gridded=("image",),
        **({"signals": ("cls_attention", "keys", "received"), "tap": internvl_tap(model, side)}
           if isinstance(config.vision_feature_layer, int) else {}),
    )
