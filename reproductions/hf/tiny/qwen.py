"""Qwen2-VL, Qwen2.5-VL, Qwen3-VL (3-D M-RoPE; Qwen3-VL with DeepStack) and Qwen2-Audio."""

from __future__ import annotations

import torch
import transformers as tf

from .parts import AUDIO, END, IMAGE, START, VIDEO, Built, prompts, text_config


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
    text = text_config(
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
    return _qwen_inputs(cls(config).eval(), seed, video)


def _qwen_inputs(model: torch.nn.Module, seed: int, video: bool) -> Built:
    """Two left-padded prompts, each one image (1 x 4 x 8 patches: Qwen2.5-VL's 2 x 2-unit windows
    reorder its 2 x 4 merged tokens) or one video (2 x 4 x 4), with
    its vision start / end tokens; mm_token_type_ids as the processor makes them."""
    g = torch.Generator().manual_seed(seed)
    t, h, w = (2, 4, 4) if video else (1, 4, 8)
    per_item = t * h * w // 4
    token = VIDEO if video else IMAGE
    spans = [[(START, 1), (token, per_item), (END, 1)], [(START, 1), (token, per_item), (END, 1)]]
    input_ids, mask = prompts(spans, [7, 5], g)
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
        text_config=text_config(),
        audio_token_id=AUDIO,
        attn_implementation=attn,
    )
    model = tf.Qwen2AudioForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(seed)
    frames = 128  # mel frames -> 64 after the conv stride -> 32 audio tokens after pooling
    features = torch.randn(2, 16, frames, generator=g)
    feature_mask = torch.ones(2, frames, dtype=torch.long)
    input_ids, mask = prompts([[(AUDIO, 32)]] * 2, [7, 5], g)
    return model, {
        "input_ids": input_ids,
        "attention_mask": mask,
        "input_features": features,
        "feature_attention_mask": feature_mask,
    }


def qwen3_vl(attn: str = "sdpa", seed: int = 0, video: bool = False) -> Built:
    """Qwen3-VL shape: ViT with 2x2 patch merger and DeepStack (features of ViT layers 0 and 1
    added to the visual tokens after LLM layers 0 and 1), interleaved 3-D M-RoPE decoder. A video
    is written as its processor writes it: frame by frame, each frame's tokens after a timestamp
    (two text tokens here) and between vision start / end tokens."""
    torch.manual_seed(seed)
    vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=4, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=64, num_position_embeddings=64, deepstack_visual_indexes=[0, 1])
    text = text_config(head_dim=16, rope_parameters={
        "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3], "mrope_interleaved": True})
    for key in ("bos_token_id", "eos_token_id"):
        text.pop(key)
    config = tf.Qwen3VLConfig(vision_config=vision, text_config=text, image_token_id=IMAGE, video_token_id=VIDEO,
                              vision_start_token_id=START, vision_end_token_id=END, attn_implementation=attn)
    model = tf.Qwen3VLForConditionalGeneration(config).eval()
    if not video:
        return _qwen_inputs(model, seed, video=False)
    g = torch.Generator().manual_seed(seed)
    t, h, w = 2, 4, 4  # two frames of 2 x 2 merged tokens
    clip = [id for frame in range(t) for id in [40 + frame, 60, START] + [VIDEO] * (h * w // 4) + [END]]
    input_ids, mask = prompts([[(clip, 1)]] * 2, [7, 5], g)
    return model, {
        "input_ids": input_ids,
        "attention_mask": mask,
        "pixel_values_videos": torch.randn(2 * t * h * w, 3 * 2 * 4 * 4, generator=g),
        "video_grid_thw": torch.tensor([[t, h, w]] * 2),
        "mm_token_type_ids": (input_ids == VIDEO).long() * 2,
    }


def qwen2_5_omni(attn: str = "sdpa", seed: int = 0, image: bool = False) -> Built:
    """Qwen2.5-Omni thinker shape: Whisper-style audio encoder (64 mel frames -> 16 tokens), a
    Qwen2.5-VL-style vision encoder, a Qwen2.5 decoder with 3-D M-RoPE. Each prompt holds one
    audio clip and one video (2 x 4 x 4 patches -> 8 tokens), apart (not interleaved), or with
    `image`, one image (1 x 8 x 4 patches -> 8 tokens)."""
    torch.manual_seed(seed)
    audio = dict(num_mel_bins=16, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, d_model=32,
                 output_dim=64, n_window=8, max_source_positions=64)
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=4, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=64, fullatt_block_indexes=[1], window_size=16)
    text = text_config(rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
    config = tf.Qwen2_5OmniThinkerConfig(
        audio_config=audio, vision_config=vision, text_config=text, audio_token_id=AUDIO, image_token_id=IMAGE,
        video_token_id=VIDEO, vision_start_token_id=START, vision_end_token_id=END, audio_start_token_id=155,
        audio_end_token_id=156, attn_implementation=attn,
    )
    model = tf.Qwen2_5OmniThinkerForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(seed)
    if image:  # each placeholder run right after its start token, as the rope index needs
        input_ids, mask = prompts([[([START] + [IMAGE] * 8 + [END], 1)]] * 2, [7, 5], g)
        return model, {
            "input_ids": input_ids,
            "attention_mask": mask,
            "pixel_values": torch.randn(2 * 8 * 4, 3 * 2 * 4 * 4, generator=g),
            "image_grid_thw": torch.tensor([[1, 4, 8]] * 2),
        }
    audio_block = [155] + [AUDIO] * 16 + [156]
    video_block = [START] + [VIDEO] * 8 + [END]
    input_ids, mask = prompts([[(audio_block, 1), (video_block, 1)]] * 2, [7, 5], g)
    return model, {
        "input_ids": input_ids,
        "attention_mask": mask,
        "input_features": torch.randn(2, 16, 64, generator=g),
        "feature_attention_mask": torch.ones(2, 64, dtype=torch.long),
        "pixel_values_videos": torch.randn(2 * 2 * 4 * 4, 3 * 2 * 4 * 4, generator=g),
        "video_grid_thw": torch.tensor([[2, 4, 4]] * 2),
        "video_second_per_grid": torch.tensor([1.0, 1.0]),
    }
