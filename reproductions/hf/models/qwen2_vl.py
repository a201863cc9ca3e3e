"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: images and videos merged 2x2 by the vision encoder, 3-D
M-RoPE position ids that spell out each span's (t, h, w) grid. The projector stage compresses
the rows entering the LLM; kept tokens keep their 3-D ids. Qwen3-VL's DeepStack adds features of
early ViT layers to the visual tokens after its first decoder layers: the projector stage
compresses them with the tokens (`stages/input.py`), and the llm / cache stages act after them."""

from __future__ import annotations

from torch import nn

from .base import Adapter, language_parts

#: Qwen3-VL splits a video into frames, each with a timestamp and its own vision start / end
VIDEO_TIMESTAMPS = {
    "video": "Qwen3-VL's videos come frame by frame with timestamp tokens between the frames, which "
    "reproductions.hf does not lay out as one (T, H, W) clip yet"
}
FAMILIES = {
    "Qwen2VLForConditionalGeneration": "qwen2_vl",
    "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
    "Qwen3VLForConditionalGeneration": "qwen3_vl",
}


def build(model: nn.Module) -> Adapter:
    config = model.config
    return Adapter(
        family=FAMILIES[type(model).__name__],
        **language_parts(model),
        tokens={"image": config.image_token_id, "video": config.video_token_id},
        mrope=True,
        gridded=("image", "video"),  # M-RoPE ids spell out each grid
        deepstack_layers=len(getattr(config.vision_config, "deepstack_visual_indexes", ())),
        unsupported=VIDEO_TIMESTAMPS if type(model).__name__.startswith("Qwen3") else {},
    )
