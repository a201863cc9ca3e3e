"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: images and videos merged 2x2 by the vision encoder, 3-D
M-RoPE position ids that spell out each span's (t, h, w) grid. The projector stage compresses
the rows entering the LLM; kept tokens keep their 3-D ids. Qwen3-VL's DeepStack adds features of
early ViT layers to the visual tokens after its first decoder layers: the projector stage
compresses them with the tokens (`stages/input.py`), and the llm / cache stages act after them."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers.vision_utils import get_vision_window_index

from .base import Adapter, EncoderTap, language_parts

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


def vision_tap(visual: nn.Module) -> EncoderTap:
    """The Qwen ViT's last block, whose output the merger reads: its attention within each image
    or frame, carried onto each merged token as the mean over its spatial_merge_size² patches
    (as LightCompress' Qwen2.5-VL VisionZip does); Qwen2.5-VL's blocks see the patches in window
    order, which the merged tokens leave."""

    def items(args: tuple, kwargs: dict, output) -> list[tuple[Tensor, Tensor]]:
        grid, merged = kwargs.get("grid_thw", args[1] if len(args) > 1 else None), output.pooler_output
        unit = visual.spatial_merge_size**2
        groups = torch.arange(merged.shape[0] * unit, device=merged.device).view(-1, unit)
        if hasattr(visual, "window_size"):  # the blocks' order: windows of merge units
            window, _ = get_vision_window_index(
                grid, spatial_merge_size=visual.spatial_merge_size, window_size=visual.window_size,
                patch_size=visual.patch_size,
            )
            groups = groups[torch.argsort(window.to(merged.device))]
        sizes = (grid.prod(-1) // unit).tolist()
        return list(zip(merged.split(sizes), groups.split(sizes), strict=True))

    return EncoderTap(attention=visual.blocks[-1].attn, output=visual, special=0, items=items)


def build(model: nn.Module) -> Adapter:
    config = model.config
    return Adapter(
        family=FAMILIES[type(model).__name__],
        **language_parts(model),
        tokens={"image": config.image_token_id, "video": config.video_token_id},
        mrope=True,
        gridded=("image", "video"),  # M-RoPE ids spell out each grid
        signals=("cls_attention", "keys"),
        tap=vision_tap(model.model.visual),
        deepstack_layers=len(getattr(config.vision_config, "deepstack_visual_indexes", ())),
        unsupported=VIDEO_TIMESTAMPS if type(model).__name__.startswith("Qwen3") else {},
    )
