"""Families that read an image as square tiles of pixel-shuffled tokens: Idefics3 / SmolVLM
(each tile one run of placeholders between its row/column markers) and InternVL (an image's
tiles one run). Each tile is one item on a square grid; the projector stage compresses the rows
entering the LLM."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from .base import Adapter, language_parts, square


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
    )
