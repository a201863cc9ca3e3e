"""LLaVA-OneVision (LlavaOnevisionForConditionalGeneration): anyres images packed with newline
tokens (no regular grid), and videos pooled 2x2 (ceil) after the projector, each clip ending in
one newline token. The projector stage compresses the rows entering the LLM."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from .base import Adapter, language_parts


@dataclass
class OneVisionAdapter(Adapter):
    #: side of a video frame's token grid after the model's 2x2 pooling
    pooled_side: int = 0

    def layout(self, modality, length, positions):
        per_frame = self.pooled_side**2
        if modality == "video" and length % per_frame == 0:
            return (length // per_frame, self.pooled_side, self.pooled_side)
        return super().layout(modality, length, positions)


def build(model: nn.Module) -> OneVisionAdapter:
    config = model.config
    vc = config.vision_config
    return OneVisionAdapter(
        family="llava_onevision",
        **language_parts(model),
        tokens={"image": config.image_token_id, "video": config.video_token_id},
        video_trailer=1,
        gridded=("video",),  # anyres images are packed with newline tokens
        pooled_side=math.ceil(vc.image_size // vc.patch_size / 2),
    )
