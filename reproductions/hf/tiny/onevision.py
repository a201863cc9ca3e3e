"""LLaVA-OneVision: anyres images and pooled video frames."""

from __future__ import annotations

import torch
import transformers as tf

from .parts import IMAGE, VIDEO, Built, prompts, text_config


def llava_onevision(attn: str = "sdpa", seed: int = 0, video: bool = False) -> Built:
    """LLaVA-OneVision shape: SigLIP encoder, anyres image packing or pooled video frames, Qwen2."""
    torch.manual_seed(seed)
    vision = tf.SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    config = tf.LlavaOnevisionConfig(
        vision_config=vision,
        text_config=tf.Qwen2Config(**text_config()),
        image_token_id=IMAGE,
        video_token_id=VIDEO,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_grid_pinpoints=[[32, 32]],
        attn_implementation=attn,
    )
    model = tf.LlavaOnevisionForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(seed)
    if video:
        frames = 4
        per_video = frames * 2 * 2 + 1  # pooled 4x4 -> 2x2 per frame, one newline per video
        input_ids, mask = prompts([[(VIDEO, per_video)]] * 2, [7, 5], g)
        pixels = torch.randn(2, frames, 3, 32, 32, generator=g)
        return model, {
            "input_ids": input_ids,
            "attention_mask": mask,
            "pixel_values_videos": pixels,
        }
    # anyres with one 32x32 grid: base image (16) + one crop unpadded (16) + 4 newlines
    per_image = 16 + 16 + 4
    input_ids, mask = prompts([[(IMAGE, per_image)]] * 2, [7, 5], g)
    pixels = torch.randn(2, 2, 3, 32, 32, generator=g)
    sizes = torch.tensor([[32, 32], [32, 32]])
    return model, {
        "input_ids": input_ids,
        "attention_mask": mask,
        "pixel_values": pixels,
        "image_sizes": sizes,
    }
