"""Where each supported transformers model keeps what the integration needs.

An `Adapter` names, for one model family, the module that receives the prompt (`outer`), the
language model and its decoder layers, the placeholder token of each modality, how many tokens
each media item fills and on which grid, and (for LLaVA) the projector and the vision encoder
layer whose [CLS] attention and keys the projector-stage methods read. Everything else is
generic and lives in `compress.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

#: model class name -> adapter builder; the error for an unsupported model lists these
SUPPORTED = (
    "LlavaForConditionalGeneration",
    "LlavaOnevisionForConditionalGeneration",
    "Qwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration",
    "Qwen2AudioForConditionalGeneration",
)


@dataclass
class Adapter:
    """The model-specific facts the hooks need (see the module docstring)."""

    family: str
    outer: nn.Module
    language_model: nn.Module
    layers: nn.ModuleList
    #: modality -> placeholder token id in input_ids
    tokens: dict[str, int]
    #: projector whose input is compressed (pre-projector, as the official LLaVA methods do);
    #: None: compress the media rows of the LLM input (post-projector)
    projector: nn.Module | None = None
    #: vision encoder layers and the index of the one whose output the projector reads
    encoder_layers: nn.ModuleList | None = None
    feature_layer: int | None = None
    #: signals the projector stage can provide on this model
    signals: tuple[str, ...] = ()
    #: leading tokens of the encoder output that the model itself drops before the projector
    encoder_special: int = 0
    #: trailing tokens of each video span that are not frame tokens (OneVision's newline)
    video_trailer: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def item_sizes(self, modality: str, media: dict[str, Any]) -> list[int] | None:
        """Tokens per item of `modality` in order, where the model fixes them; else None."""
        grid = media.get(f"{modality}_grid_thw")
        if grid is not None:  # Qwen2-VL / Qwen2.5-VL: merged 2x2 patches per item
            merge = self.extra["spatial_merge"]
            return [int(t * h * w) // merge**2 for t, h, w in grid.tolist()]
        if self.family == "llava" and modality == "image":
            side = self.extra["patches_per_side"]
            return (
                None
                if media.get("pixel_values") is None
                else [side * side] * media["pixel_values"].shape[0]
            )
        return None

    def layout(
        self, modality: str, length: int, item: int, media: dict[str, Any]
    ) -> tuple[int, ...] | None:
        """The grid of item `item` of `modality`, which has `length` placeholder tokens."""
        grid = media.get(f"{modality}_grid_thw")
        if grid is not None:
            merge = self.extra["spatial_merge"]
            t, h, w = (int(v) for v in grid[item].tolist())
            return (
                (h // merge, w // merge)
                if modality == "image" and t == 1
                else (t, h // merge, w // merge)
            )
        if modality == "audio":
            return (length,)
        if modality == "image":
            side = math.isqrt(length)
            return (side, side) if side * side == length else None
        if modality == "video":
            pixels = media.get("pixel_values_videos")
            frames = pixels.shape[1] if pixels is not None else None
            if frames and length % frames == 0:
                side = math.isqrt(length // frames)
                if side * side * frames == length:
                    return (frames, side, side)
            return None
        return None


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter of `model`, or a ValueError listing the supported model classes."""
    name = type(model).__name__
    config = getattr(model, "config", None)
    if name == "LlavaForConditionalGeneration":
        inner = model.model
        vision = inner.vision_tower
        layers = getattr(vision, "vision_model", vision).encoder.layers
        feature_layer = config.vision_feature_layer
        if not isinstance(feature_layer, int):
            raise ValueError(
                f"vision_feature_layer={feature_layer!r}: the projector stage reads one encoder "
                "layer; configure an int vision_feature_layer"
            )
        # hidden_states[k] is the output of layer k - 1 (hidden_states[0] the embeddings)
        layer_index = feature_layer % (len(layers) + 1) - 1
        vc = config.vision_config
        return Adapter(
            family="llava",
            outer=inner,
            language_model=inner.language_model,
            layers=inner.language_model.layers,
            tokens={"image": config.image_token_id},
            projector=inner.multi_modal_projector,
            encoder_layers=layers,
            feature_layer=layer_index,
            signals=("cls_attention", "keys"),
            encoder_special=1 if config.vision_feature_select_strategy == "default" else 0,
            extra={"patches_per_side": vc.image_size // vc.patch_size},
        )
    if name == "LlavaOnevisionForConditionalGeneration":
        inner = model.model
        return Adapter(
            family="llava_onevision",
            outer=inner,
            language_model=inner.language_model,
            layers=inner.language_model.layers,
            tokens={"image": config.image_token_id, "video": config.video_token_id},
            video_trailer=1,
        )
    if name in ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration"):
        inner = model.model
        return Adapter(
            family="qwen2_vl" if name.startswith("Qwen2VL") else "qwen2_5_vl",
            outer=inner,
            language_model=inner.language_model,
            layers=inner.language_model.layers,
            tokens={"image": config.image_token_id, "video": config.video_token_id},
            extra={"spatial_merge": config.vision_config.spatial_merge_size},
        )
    if name == "Qwen2AudioForConditionalGeneration":
        inner = model.model
        return Adapter(
            family="qwen2_audio",
            outer=inner,
            language_model=inner.language_model,
            layers=inner.language_model.layers,
            tokens={"audio": config.audio_token_id},
        )
    raise ValueError(
        f"{name} is not supported by reproductions.hf.compress; supported models: "
        f"{', '.join(SUPPORTED)}"
    )


def media_of(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The media inputs of one forward call that the adapters read (grids, pixel shapes)."""
    keys = ("pixel_values", "pixel_values_videos", "image_grid_thw", "video_grid_thw")
    return {k: kwargs[k] for k in keys if isinstance(kwargs.get(k), Tensor)}
