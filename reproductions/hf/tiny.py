"""Tiny random models of every supported family, with matching inputs: for tests and examples.

Each builder returns `(model, inputs)` where `inputs` is a dict for `model(**inputs)` and
`model.generate(**inputs)`: a batch of two left-padded prompts of different lengths, so that
padding, batching and position ids are exercised. Weights are random (seeded); no download.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import transformers as tf

#: token ids shared by the tiny models (all below the vocabulary size)
VOCAB = 160
PAD, IMAGE, VIDEO, AUDIO, START, END = 0, 150, 151, 152, 153, 154

Built = tuple[torch.nn.Module, dict[str, Any]]


def _text(**override: Any) -> dict[str, Any]:
    """A 4-layer decoder with grouped-query attention, small enough for CPU tests."""
    config = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=PAD,
        bos_token_id=1,
        eos_token_id=2,
    )
    config.update(override)
    return config


def _prompts(
    spans: list[list[tuple[int, int]]], lengths: list[int], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded input ids: row b is `lengths[b]` random text tokens with, after token 3, the
    spans `(token_id, count)` of `spans[b]` separated by one text token."""
    rows = []
    for row_spans, length in zip(spans, lengths, strict=True):
        text = torch.randint(3, 100, (length,), generator=generator).tolist()
        ids = text[:3]
        for token, count in row_spans:
            ids += [token] * count + [text[len(ids) % length]]
        ids += text[3:]
        rows.append(ids)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, ids in enumerate(rows):
        input_ids[b, width - len(ids) :] = torch.tensor(ids)
        mask[b, width - len(ids) :] = 1
    return input_ids, mask


def llava(attn: str = "sdpa", seed: int = 0, images_per_row: tuple[int, ...] = (1, 2)) -> Built:
    """LLaVA-1.5 shape: CLIP encoder (4x4 patches + [CLS]), 2-layer MLP projector, Llama."""
    vision = tf.CLIPVisionConfig(projection_dim=32, **_VISION)
    return _llava(vision, "default", attn, seed, images_per_row)


def llava_siglip(attn: str = "sdpa", seed: int = 0) -> Built:
    """LLaVA with a SigLIP encoder (no [CLS]; the projector reads every token), Llama."""
    return _llava(tf.SiglipVisionConfig(**_VISION), "full", attn, seed, (1, 1))


_VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
)


def _llava(
    vision: Any, strategy: str, attn: str, seed: int, images_per_row: tuple[int, ...]
) -> Built:
    """A LLaVA model on `vision` and one left-padded batch, one row per `images_per_row` entry."""
    torch.manual_seed(seed)
    config = tf.LlavaConfig(
        vision_config=vision,
        text_config=tf.LlamaConfig(**_text()),
        image_token_id=IMAGE,
        vision_feature_layer=-2,
        vision_feature_select_strategy=strategy,
        projector_hidden_act="gelu",
        attn_implementation=attn,
    )
    model = tf.LlavaForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(seed)
    spans = [[(IMAGE, 16)] * n for n in images_per_row]
    input_ids, mask = _prompts(spans, [7, 5][: len(spans)] + [6] * (len(spans) - 2), g)
    pixels = torch.randn(sum(images_per_row), 3, 32, 32, generator=g)
    return model, {"input_ids": input_ids, "attention_mask": mask, "pixel_values": pixels}


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
        text_config=tf.Qwen2Config(**_text()),
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
        input_ids, mask = _prompts([[(VIDEO, per_video)]] * 2, [7, 5], g)
        pixels = torch.randn(2, frames, 3, 32, 32, generator=g)
        return model, {
            "input_ids": input_ids,
            "attention_mask": mask,
            "pixel_values_videos": pixels,
        }
    # anyres with one 32x32 grid: base image (16) + one crop unpadded (16) + 4 newlines
    per_image = 16 + 16 + 4
    input_ids, mask = _prompts([[(IMAGE, per_image)]] * 2, [7, 5], g)
    pixels = torch.randn(2, 2, 3, 32, 32, generator=g)
    sizes = torch.tensor([[32, 32], [32, 32]])
    return model, {
        "input_ids": input_ids,
        "attention_mask": mask,
        "pixel_values": pixels,
        "image_sizes": sizes,
    }


def _qwen_vl(cls: type, config_cls: type, attn: str, seed: int, video: bool) -> Built:
    torch.manual_seed(seed)
    vision = dict(
        depth=2,
        embed_dim=32,
        hidden_size=64,
        num_heads=4,
        patch_size=4,
        spatial_merge_size=2,
        temporal_patch_size=2,
        in_channels=3,
    )
    if config_cls is tf.Qwen2_5_VLConfig:
        vision.update(
            intermediate_size=64, out_hidden_size=64, window_size=16, fullatt_block_indexes=[1]
        )
        vision.pop("embed_dim")
        vision["hidden_size"] = 32
    text = _text(
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    )
    config = config_cls(
        vision_config=vision,
        text_config=text,
        image_token_id=IMAGE,
        video_token_id=VIDEO,
        vision_start_token_id=START,
        vision_end_token_id=END,
        attn_implementation=attn,
    )
    model = cls(config).eval()
    g = torch.Generator().manual_seed(seed)
    t, h, w = (2, 4, 4) if video else (1, 8, 4)
    per_item = t * h * w // 4
    token = VIDEO if video else IMAGE
    spans = [[(START, 1), (token, per_item), (END, 1)], [(START, 1), (token, per_item), (END, 1)]]
    input_ids, mask = _prompts(spans, [7, 5], g)
    patch = 3 * 2 * 4 * 4
    pixels = torch.randn(2 * t * h * w, patch, generator=g)
    grid = torch.tensor([[t, h, w]] * 2)
    types = (input_ids == token).long() * (2 if video else 1)
    key = "video" if video else "image"
    pixel_key = "pixel_values_videos" if video else "pixel_values"
    return model, {
        "input_ids": input_ids,
        "attention_mask": mask,
        pixel_key: pixels,
        f"{key}_grid_thw": grid,
        "mm_token_type_ids": types,
    }


def qwen2_vl(attn: str = "sdpa", seed: int = 0, video: bool = False) -> Built:
    """Qwen2-VL shape: ViT with 2x2 patch merger, 3-D M-RoPE decoder."""
    return _qwen_vl(tf.Qwen2VLForConditionalGeneration, tf.Qwen2VLConfig, attn, seed, video)


def qwen2_5_vl(attn: str = "sdpa", seed: int = 0, video: bool = False) -> Built:
    """Qwen2.5-VL shape: windowed ViT with 2x2 patch merger, 3-D M-RoPE decoder."""
    return _qwen_vl(tf.Qwen2_5_VLForConditionalGeneration, tf.Qwen2_5_VLConfig, attn, seed, video)


def qwen2_audio(attn: str = "sdpa", seed: int = 0) -> Built:
    """Qwen2-Audio shape: Whisper-style encoder with pooling, linear projector, Qwen2."""
    torch.manual_seed(seed)
    audio = dict(
        num_mel_bins=16,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=64,
        d_model=32,
        max_source_positions=64,
    )
    config = tf.Qwen2AudioConfig(
        audio_config=audio,
        text_config=_text(),
        audio_token_id=AUDIO,
        attn_implementation=attn,
    )
    model = tf.Qwen2AudioForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(seed)
    frames = 128  # mel frames -> 64 after the conv stride -> 32 audio tokens after pooling
    features = torch.randn(2, 16, frames, generator=g)
    feature_mask = torch.ones(2, frames, dtype=torch.long)
    input_ids, mask = _prompts([[(AUDIO, 32)]] * 2, [7, 5], g)
    return model, {
        "input_ids": input_ids,
        "attention_mask": mask,
        "input_features": features,
        "feature_attention_mask": feature_mask,
    }


#: the modality the inputs of each tiny builder carry
MODALITY: dict[str, str] = {
    "llava": "image",
    "llava_siglip": "image",
    "llava_onevision": "image",
    "llava_onevision_video": "video",
    "qwen2_vl": "image",
    "qwen2_vl_video": "video",
    "qwen2_5_vl": "image",
    "qwen2_audio": "audio",
}

#: every tiny builder by family name (video variants included)
BUILDERS: dict[str, Callable[..., Built]] = {
    "llava": llava,
    "llava_siglip": llava_siglip,
    "llava_onevision": llava_onevision,
    "llava_onevision_video": lambda **kw: llava_onevision(video=True, **kw),
    "qwen2_vl": qwen2_vl,
    "qwen2_vl_video": lambda **kw: qwen2_vl(video=True, **kw),
    "qwen2_5_vl": qwen2_5_vl,
    "qwen2_audio": qwen2_audio,
}
