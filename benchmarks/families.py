"""The families `python -m benchmarks generate` runs: realistic-shape random models built from
configs (no download), one prompt each with the token counts of the real model's media.

Why these shapes: the media token counts are those of the real models (LLaVA-1.5's 576 image
tokens, a 672 px image on Qwen2.5-VL, eight 336 px frames on Qwen2-VL, 30 s of audio on
Qwen2-Audio and Qwen2.5-Omni), so methods see the grids they see in use; the decoders share one
CPU-sized shape (`--layers` x `--hidden`, SwiGLU at 2.75x, 16 heads; grouped-query attention
where the family uses it) and the encoders are shallow, since the encoders are not what a
method changes (except ToMe's) and on a CPU they would dominate the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import transformers as tf
from torch import nn

from reproductions.hf.models import adapter_for

#: the vocabulary and placeholder ids of every built family (LLaVA's own ids: `prefill.build`)
VOCAB = 32000
IMAGE, VIDEO, AUDIO, START, END, AUDIO_START, AUDIO_END = range(31990, 31997)
#: text tokens around the media (half before, half after), as in the LLaVA-1.5 preset
TEXT = 64


@dataclass
class Family:
    """A model of one family, one prompt for it, and the modules the probe watches."""

    name: str
    model: nn.Module
    inputs: dict[str, torch.Tensor]
    modality: str
    #: the media tokens' grid, as methods see it: (H, W), (T, H, W) or (N,)
    layout: tuple[int, ...]
    text: int
    language_model: nn.Module
    llm_layers: Sequence[nn.Module]
    encoder_layers: Sequence[nn.Module]
    projector: nn.Module | None

    @property
    def media(self) -> int:
        return math.prod(self.layout)


def _decoder(layers: int, hidden: int, kv_heads: int = 16, **extra: Any) -> dict[str, Any]:
    heads = 16
    rope = {"rope_type": "default", "rope_theta": 1e6}
    if extra.pop("mrope", False):  # head_dim / 2 split over (t, h, w), as Qwen2-VL's 16/24/24
        half = hidden // heads // 2
        rope["mrope_section"] = [half // 4, 3 * half // 8, half - half // 4 - 3 * half // 8]
    return dict(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=int(hidden * 2.75),
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                max_position_embeddings=32768, rope_parameters=rope, bos_token_id=1,
                eos_token_id=2, pad_token_id=0, **extra)


def _ids(media: list[int]) -> torch.Tensor:
    """One prompt: TEXT/2 random text tokens, the media block, TEXT/2 text tokens."""
    g = torch.Generator().manual_seed(0)
    half = TEXT // 2
    text = torch.randint(3, 30000, (TEXT,), generator=g)
    return torch.cat([text[:half], torch.tensor(media), text[half:]])[None]


def _family(name: str, model: nn.Module, inputs: dict[str, torch.Tensor], modality: str,
            layout: tuple[int, ...], encoder_layers: Sequence[nn.Module]) -> Family:
    adapter = adapter_for(model)
    text = inputs["input_ids"].shape[1] - math.prod(layout)  # start / end markers count as text
    inputs.setdefault("attention_mask", torch.ones_like(inputs["input_ids"]))
    return Family(name, model.eval(), inputs, modality, layout, text, adapter.language_model,
                  adapter.layers, encoder_layers, adapter.projector)


def llava(layers: int, hidden: int) -> Family:
    """LLaVA-1.5: 576 image tokens (CLIP at 336 px, 14 px patches) between 64 text tokens."""
    from .prefill import build

    model, inputs = build(layers, hidden)
    inputs.pop("logits_to_keep")  # generate sets it
    return _family("llava-1.5", model, inputs, "image", (24, 24),
                   model.model.vision_tower.encoder.layers)


def _qwen_vision(hidden: int, **extra: Any) -> dict[str, Any]:
    """A 2-block Qwen ViT: 14 px patches, 2-frame tubelets, 2 x 2 merge into the decoder width."""
    return dict(depth=2, num_heads=4, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                in_channels=3, **extra)


def _qwen_media(token: int, grid: tuple[int, int, int], video: bool) -> dict[str, torch.Tensor]:
    """input_ids, patches and grid of one image or video of `grid` (t, h, w) patches."""
    t, h, w = grid
    ids = _ids([START] + [token] * (t * h * w // 4) + [END])
    g = torch.Generator().manual_seed(1)
    key, pixels = ("video", "pixel_values_videos") if video else ("image", "pixel_values")
    return {"input_ids": ids, pixels: torch.randn(t * h * w, 3 * 2 * 14 * 14, generator=g),
            f"{key}_grid_thw": torch.tensor([grid]),
            "mm_token_type_ids": (ids == token).long() * (2 if video else 1)}


def _qwen_ids() -> dict[str, int]:
    return dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=START,
                vision_end_token_id=END)


def qwen2_5_vl(layers: int, hidden: int) -> Family:
    """Qwen2.5-VL, one 672 px image: 48 x 48 patches, 576 tokens after the 2 x 2 merge."""
    torch.manual_seed(0)
    vision = _qwen_vision(hidden, hidden_size=128, intermediate_size=256, out_hidden_size=hidden,
                          window_size=112, fullatt_block_indexes=[1])
    config = tf.Qwen2_5_VLConfig(vision_config=vision, text_config=_decoder(layers, hidden, 4, mrope=True),
                                 attn_implementation="sdpa", **_qwen_ids())
    model = tf.Qwen2_5_VLForConditionalGeneration(config)
    return _family("qwen2.5-vl", model, _qwen_media(IMAGE, (1, 48, 48), False), "image",
                   (24, 24), model.model.visual.blocks)


def qwen2_vl_video(layers: int, hidden: int) -> Family:
    """Qwen2-VL, a video of eight 336 px frames: 4 x 24 x 24 patches, 4 x 12 x 12 = 576 tokens."""
    torch.manual_seed(0)
    vision = _qwen_vision(hidden, embed_dim=128, hidden_size=hidden, mlp_ratio=2)
    config = tf.Qwen2VLConfig(vision_config=vision, text_config=_decoder(layers, hidden, 4, mrope=True),
                              attn_implementation="sdpa", **_qwen_ids())
    model = tf.Qwen2VLForConditionalGeneration(config)
    return _family("qwen2-vl-video", model, _qwen_media(VIDEO, (4, 24, 24), True), "video",
                   (4, 12, 12), model.model.visual.blocks)


def _audio_encoder(**extra: Any) -> dict[str, Any]:
    """A 2-layer Whisper-style encoder over 30 s (3000 mel frames -> 1500 -> 750 tokens)."""
    return dict(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=512,
                d_model=128, max_source_positions=1500, **extra)


def _audio_inputs(media: list[int]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"input_ids": _ids(media), "input_features": torch.randn(1, 128, 3000, generator=g),
            "feature_attention_mask": torch.ones(1, 3000, dtype=torch.long)}


def qwen2_audio(layers: int, hidden: int) -> Family:
    """Qwen2-Audio, a 30 s clip: 750 audio tokens (Whisper encoder, 2x pooling, one linear)."""
    torch.manual_seed(0)
    config = tf.Qwen2AudioConfig(audio_config=_audio_encoder(), text_config=_decoder(layers, hidden, 16),
                                 audio_token_id=AUDIO, attn_implementation="sdpa")
    model = tf.Qwen2AudioForConditionalGeneration(config)
    return _family("qwen2-audio", model, _audio_inputs([AUDIO] * 750), "audio", (750,),
                   model.model.audio_tower.layers)


def qwen2_5_omni_audio(layers: int, hidden: int) -> Family:
    """Qwen2.5-Omni's thinker, a 30 s clip: 750 audio tokens between audio start / end."""
    torch.manual_seed(0)
    audio = _audio_encoder(output_dim=hidden, n_window=100)
    vision = _qwen_vision(hidden, hidden_size=128, intermediate_size=256, out_hidden_size=hidden,
                          window_size=112, fullatt_block_indexes=[1])
    config = tf.Qwen2_5OmniThinkerConfig(
        audio_config=audio, vision_config=vision, text_config=_decoder(layers, hidden, 4, mrope=True),
        audio_token_id=AUDIO, audio_start_token_id=AUDIO_START, audio_end_token_id=AUDIO_END,
        attn_implementation="sdpa", **_qwen_ids())
    model = tf.Qwen2_5OmniThinkerForConditionalGeneration(config)
    inputs = _audio_inputs([AUDIO_START] + [AUDIO] * 750 + [AUDIO_END])
    return _family("qwen2.5-omni-audio", model, inputs, "audio", (750,),
                   model.model.audio_tower.layers)


#: family key -> builder(layers, hidden)
FAMILIES: dict[str, Callable[[int, int], Family]] = {
    "llava": llava,
    "qwen2_5_vl": qwen2_5_vl,
    "qwen2_vl_video": qwen2_vl_video,
    "qwen2_audio": qwen2_audio,
    "qwen2_5_omni": qwen2_5_omni_audio,
}

#: the methods each modality runs by default (every supported one: `--methods all`): one per
#: kind of stage and signal, few enough for a CPU run
DEFAULT_METHODS: dict[str, tuple[str, ...]] = {
    "image": ("random", "pool", "visionzip", "divprune", "fastv"),
    "video": ("random", "divprune", "dycoke", "fastv"),
    "audio": ("random", "audio_pool", "fastv"),
}
