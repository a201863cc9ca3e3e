"""Families that read an image as square tiles of pixel-shuffled tokens: Idefics3 / SmolVLM
(each tile one run of placeholders between its row/column markers) and InternVL (an image's
tiles one run). Each tile is one item on a square grid; the projector stage compresses the rows
entering the LLM, the encoder stage merges each tile's pooling units inside its encoder."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from .base import (
    Adapter,
    EncoderTap,
    arange_features,
    grid_tap,
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
    index = arange_features(patches).view(1, patches, 1)
    units = pooled_groups(connector.pixel_shuffle(index, connector.scale_factor))
    layers = inner.vision_model.encoder.layers
    return grid_tap(layers[-1].self_attn, connector, 0, units, tuple(layer.self_attn for layer in layers))


def internvl_tap(model: nn.Module, side: int) -> EncoderTap:
    """InternViT's feature layer, with its [CLS] (which the model drops before the pixel shuffle);
    each tile token pools the 2x2 patches that the model's own pixel shuffle, run on the patch
    indices, names."""
    inner, config = model.model, model.config
    index = arange_features(side * side).view(1, side, side, 1)
    units = pooled_groups(inner.pixel_shuffle(index, scale_factor=config.downsample_ratio))
    layers = inner.vision_tower.encoder.layer
    feature = config.vision_feature_layer % (len(layers) + 1) - 1  # hidden_states[k]: layer k - 1's output
    special = 1 if config.vision_feature_select_strategy == "default" else 0
    return grid_tap(layers[feature].attention, inner.multi_modal_projector, special, units,
                    tuple(layer.attention for layer in layers))


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
        encoder_layers=model.model.vision_model.encoder.layers,
        feature_layer=len(model.model.vision_model.encoder.layers) - 1,
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
        **internvl_encoder(model),
    )


def internvl_encoder(model: nn.Module) -> dict:
    """InternViT's layers, in which the encoder stage merges the pixel shuffle's 2x2 units (its
    [CLS] never merges) where the model reads the last layer without its [CLS]; else a reason."""
    config, layers = model.config, model.model.vision_tower.encoder.layer
    if config.vision_feature_layer == -1 and config.vision_feature_select_strategy == "default":
        return {"encoder_layers": layers, "feature_layer": len(layers) - 1}
    return {"unsupported_stages": {"encoder": (
        f"the encoder stage merges InternViT's units up to the layer the model reads, the last, without its "
        f"[CLS]; this model reads layer {config.vision_feature_layer!r} ({config.vision_feature_select_strategy})")}}
