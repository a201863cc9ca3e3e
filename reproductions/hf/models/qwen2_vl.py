"""Qwen2-VL and Qwen2.5-VL: images and videos merged 2x2 by the vision encoder, 3-D M-RoPE
position ids that spell out each span's (t, h, w) grid. The projector stage compresses the rows
entering the LLM; kept tokens keep their 3-D ids."""

from __future__ import annotations

from torch import nn

from .base import Adapter, language_parts


def build(model: nn.Module) -> Adapter:
    config = model.config
    return Adapter(
        family="qwen2_vl" if type(model).__name__.startswith("Qwen2VL") else "qwen2_5_vl",
        **language_parts(model),
        tokens={"image": config.image_token_id, "video": config.video_token_id},
        mrope=True,
        gridded=("image", "video"),  # M-RoPE ids spell out each grid
    )
