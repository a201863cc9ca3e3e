"""LLaVA-1.5 with a CLIP or a SigLIP encoder, and LLaVA-NeXT (anyres)."""

from __future__ import annotations

from typing import Any

import torch
import transformers as tf

from .parts import IMAGE, VISION, Built, prompts, text_config


def llava(attn: str = "sdpa", seed: int = 0, images_per_row: tuple[int, ...] = (1, 2)) -> Built:
    """LLaVA-1.5 shape: CLIP encoder (4x4 patches + [CLS]), 2-layer MLP projector, Llama."""
    vision = tf.CLIPVisionConfig(projection_dim=32, **VISION)
    return _llava(vision, "default", attn, seed, images_per_row)


def llava_siglip(attn: str = "sdpa", seed: int = 0) -> Built:
    """LLaVA with a SigLIP encoder (no [CLS]; the projector reads every token), Llama."""
    return _llava(tf.SiglipVisionConfig(**VISION), "full", attn, seed, (1, 1))




def _llava(
    vision: Any, strategy: str, attn: str, seed: int, images_per_row: tuple[int, ...]
) -> Built:
    """A LLaVA model on `vision` and one left-padded batch, one row per `images_per_row` entry."""
    torch.manual_seed(seed)
    config = tf.LlavaConfig(
        vision_config=vision,
        text_config=tf.LlamaConfig(**text_config()),
        image_token_id=IMAGE,
        vision_feature_layer=-2,
        vision_feature_select_strategy=strategy,
        projector_hidden_act="gelu",
        attn_implementation=attn,
    )
    model = tf.LlavaForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(seed)
    spans = [[(IMAGE, 16)] * n for n in images_per_row]
    input_ids, mask = prompts(spans, [7, 5][: len(spans)] + [6] * (len(spans) - 2), g)
    pixels = torch.randn(sum(images_per_row), 3, 32, 32, generator=g)
    return model, {"input_ids": input_ids, "attention_mask": mask, "pixel_values": pixels}


def llava_next(attn: str = "sdpa", seed: int = 0) -> Built:
    """LLaVA-NeXT (llava-v1.6) shape: CLIP encoder, anyres with a 32x64 image (base image and two
    crops, unpadded, one newline per row), Llama. The placeholder count is the model's own."""
    torch.manual_seed(seed)
    config = tf.LlavaNextConfig(
        vision_config=tf.CLIPVisionConfig(projection_dim=32, **VISION),
        text_config=tf.LlamaConfig(**text_config()),
        image_token_id=IMAGE,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_grid_pinpoints=[[32, 32], [32, 64]],
        attn_implementation=attn,
    )
    model = tf.LlavaNextForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(2, 3, 3, 32, 32, generator=g)  # per image: base + 2 crops
    sizes = torch.tensor([[32, 64], [32, 64]])
    with torch.no_grad():
        features = model.model.get_image_features(pixel_values=pixels, image_sizes=sizes).pooler_output
    input_ids, mask = prompts([[(IMAGE, len(features[0]))]] * 2, [7, 5], g)
    return model, {"input_ids": input_ids, "attention_mask": mask, "pixel_values": pixels, "image_sizes": sizes}
