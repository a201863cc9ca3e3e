"""Families that read an image as square grids of tokens: Idefics3 / SmolVLM and InternVL
(pixel-shuffled tiles: each tile one run of placeholders, or runs cut into tiles) and Gemma 3
(one pooled 16 x 16 grid per image)."""

from __future__ import annotations

import torch
import transformers as tf

from .parts import END, IMAGE, START, Built, prompts, text_config

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


def gemma3(attn: str = "sdpa", seed: int = 0) -> Built:
    """Gemma 3 shape: SigLIP encoder (8x8 patches of a 32x32 image) average-pooled to 16 tokens
    (a 4x4 grid) per image between begin / end-of-image tokens, attended bidirectionally; a
    Gemma 3 decoder with a sliding window of 8 on every other layer."""
    torch.manual_seed(seed)
    vision = tf.SiglipVisionConfig(image_size=32, patch_size=4, **_ENCODER)
    kinds = ["sliding_attention", "full_attention"] * 2
    text = tf.Gemma3TextConfig(**text_config(head_dim=16, sliding_window=8, layer_types=kinds))
    config = tf.Gemma3Config(
        vision_config=vision, text_config=text, image_token_id=IMAGE, mm_tokens_per_image=16,
        boi_token_index=START, eoi_token_index=END, attn_implementation=attn,
    )
    model = tf.Gemma3ForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(seed)
    input_ids, mask = prompts([[(START, 1), (IMAGE, 16), (END, 1)]] * 2, [7, 5], g)
    pixels = torch.randn(2, 3, 32, 32, generator=g)
    return model, {"input_ids": input_ids, "attention_mask": mask, "pixel_values": pixels,
                   "token_type_ids": (input_ids == IMAGE).long()}
