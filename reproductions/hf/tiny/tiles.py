"""Families that read an image as square tiles of pixel-shuffled tokens: Idefics3 / SmolVLM and
InternVL (each tile one run of placeholders, or runs cut into tiles)."""

from __future__ import annotations

import torch
import transformers as tf

from .parts import IMAGE, Built, prompts, text_config

_ENCODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def idefics3(attn: str = "sdpa", seed: int = 0) -> Built:
    """Idefics3 / SmolVLM shape: SigLIP-style encoder on 64x64 tiles of 8x8 patches, pixel
    shuffle by 2 (16 tokens, a 4x4 grid, per tile), Llama; row 1 holds two tiles."""
    torch.manual_seed(seed)
    config = tf.Idefics3Config(
        vision_config=tf.Idefics3VisionConfig(image_size=64, patch_size=8, **_ENCODER),
        text_config=tf.LlamaConfig(**text_config()),
        image_token_id=IMAGE,
        scale_factor=2,
        attn_implementation=attn,
    )
    model = tf.Idefics3ForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(seed)
    input_ids, mask = prompts([[(IMAGE, 16), (IMAGE, 16)], [(IMAGE, 16), (IMAGE, 16)]], [7, 5], g)
    pixels = torch.randn(2, 2, 3, 64, 64, generator=g)
    return model, {"input_ids": input_ids, "attention_mask": mask, "pixel_values": pixels}


def internvl(attn: str = "sdpa", seed: int = 0) -> Built:
    """InternVL3 shape: InternViT on 32x32 tiles of 4x4 patches, pixel shuffle by 0.5 (16 tokens,
    a 4x4 grid, per tile; an image's tiles are one run), Qwen2; row 1's image has two tiles."""
    torch.manual_seed(seed)
    config = tf.InternVLConfig(
        vision_config=tf.InternVLVisionConfig(image_size=[32, 32], patch_size=[4, 4], **_ENCODER),
        text_config=tf.Qwen2Config(**text_config()),
        image_token_id=IMAGE,
        downsample_ratio=0.5,
        image_seq_length=16,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        attn_implementation=attn,
    )
    model = tf.InternVLForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(seed)
    input_ids, mask = prompts([[(IMAGE, 16)], [(IMAGE, 32)]], [7, 5], g)
    pixels = torch.randn(3, 3, 32, 32, generator=g)  # one tile for row 0, two for row 1
    return model, {"input_ids": input_ids, "attention_mask": mask, "pixel_values": pixels}
