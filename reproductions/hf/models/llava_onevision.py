"""LLaVA-OneVision (LlavaOnevisionForConditionalGeneration): anyres images packed with newline
tokens (no regular grid), and videos pooled 2x2 (ceil) after the projector, each clip ending in
one newline token. The projector stage compresses the rows entering the LLM; a video's frames
carry the SigLIP feature layer's attention and keys, resized bilinearly onto the pooled grid by
the model's own pooling (as FastVID's released OneVision code resizes its attention), and an
image's packed tokens carry them packed by the model's own `pack_image_features`, with their
`anyres` places."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from .base import Adapter, EncoderTap, Pool, language_parts


@dataclass
class OneVisionAdapter(Adapter):
    #: side of a video frame's token grid after the model's 2x2 pooling
    pooled_side: int = 0

    def layout(self, modality, length, positions):
        per_frame = self.pooled_side**2
        if modality == "video" and length % per_frame == 0:
            return (length // per_frame, self.pooled_side, self.pooled_side)
        return super().layout(modality, length, positions)


def video_tap(model: nn.Module) -> EncoderTap | None:
    """Each video frame (one batch row of the projector's call) is pooled by `apply_pooling`;
    a signal per encoder token is pooled by the same function, frame by frame. None where the
    model drops a first encoder token that is not a [CLS] (SigLIP with the "default" strategy)."""
    inner, config = model.model, model.config
    tower = inner.vision_tower
    layers = getattr(tower, "vision_model", tower).encoder.layers

    def items(args: tuple, kwargs: dict, output: Tensor) -> list[tuple[Tensor, Pool]]:
        frames, patches = output.shape[:2]

        def pool_frame(f: int) -> Pool:
            return lambda x: inner.apply_pooling(x.view(x.shape[0], frames, patches)[:, f].T[None])[0].T

        pooled = inner.apply_pooling(output)
        return [(pooled[f], pool_frame(f)) for f in range(frames)]

    feature = config.vision_feature_layer % (len(layers) + 1) - 1  # hidden_states[k]: layer k - 1's output
    special = 1 if config.vision_feature_select_strategy == "default" else 0
    if special and getattr(getattr(tower, "embeddings", None), "class_embedding", None) is None:
        return None
    return EncoderTap(attention=layers[feature].self_attn, output=inner.multi_modal_projector,
                      special=special, items=items, modalities=("image", "video"),
                      attentions=tuple(layer.self_attn for layer in layers),
                      packer=(inner, "pack_image_features"))


def build(model: nn.Module) -> OneVisionAdapter:
    config = model.config
    vc = config.vision_config
    tap = video_tap(model) if isinstance(config.vision_feature_layer, int) else None
    return OneVisionAdapter(
        family="llava_onevision",
        **language_parts(model),
        tokens={"image": config.image_token_id, "video": config.video_token_id},
        video_trailer=1,
        gridded=("video",),  # anyres images are packed with newline tokens
        pooled_side=math.ceil(vc.image_size // vc.patch_size / 2),
        signals=("cls_attention", "keys", "received", "anyres") if tap is not None else (),
        tap=tap,
    )
