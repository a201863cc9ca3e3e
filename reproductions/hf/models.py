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

    def item_size(self, modality: str) -> int | None:
        """Tokens per item of `modality` where the model fixes them (LLaVA-1.5: 576), else
        None (one item per run of placeholders)."""
        if self.family == "llava" and modality == "image":
            return self.extra["patches_per_side"] ** 2
        return None

    def layout(
        self, modality: str, length: int, positions: Tensor | None
    ) -> tuple[int, ...] | None:
        """The grid of a span of `length` placeholder tokens; `positions` (3, length) are its
        M-RoPE ids on Qwen models, which spell out the (t, h, w) grid, else None."""
        if positions is not None and positions.dim() == 2 and positions.shape[0] == 3:
            t, h, w = (int(row.unique().numel()) for row in positions)
            if t * h * w == length:
                return (h, w) if modality == "image" and t == 1 else (t, h, w)
            return None
        if modality == "audio":
            return (length,)
        if modality == "image" and self.family == "llava":  # one square grid per image
            side = math.isqrt(length)
            return (side, side) if side * side == length else None
        if modality == "video" and "pooled_side" in self.extra:
            per_frame = self.extra["pooled_side"] ** 2
            if length % per_frame == 0:
                return (length // per_frame, self.extra["pooled_side"], self.extra["pooled_side"])
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
        # hidden_states[k] is the output of layer k - 1 (hidden_states[0] the embeddings); a
        # list of layers (concatenated features) names no single layer for signals or merging
        one = isinstance(feature_layer, int)
        layer_index = feature_layer % (len(layers) + 1) - 1 if one else None
        vc = config.vision_config
        # CLIP leads with a [CLS] token (a class embedding); SigLIP has none
        has_cls = int(
            getattr(getattr(vision, "embeddings", None), "class_embedding", None) is not None
        )
        return Adapter(
            family="llava",
            outer=inner,
            language_model=inner.language_model,
            layers=inner.language_model.layers,
            tokens={"image": config.image_token_id},
            projector=inner.multi_modal_projector,
            encoder_layers=layers if one else None,
            feature_layer=layer_index,
            signals=(("cls_attention", "keys") if has_cls else ("keys",)) if one else (),
            encoder_special=1 if config.vision_feature_select_strategy == "default" else 0,
            extra={"patches_per_side": vc.image_size // vc.patch_size, "cls": has_cls},
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
            # frames are pooled 2x2 (ceil) after the projector, as the model's apply_pooling
            extra={
                "pooled_side": math.ceil(
                    config.vision_config.image_size // config.vision_config.patch_size / 2
                )
            },
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
