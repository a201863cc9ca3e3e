"""The models the benchmark builds from configs (random weights, no download) and the token
grids and budgets it sweeps on each."""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Any

import torch

from reproductions.flops import DecoderShape, ModelShape


@dataclass(frozen=True)
class Scenario:
    """One modality's token grid and the budgets swept on it."""

    modality: str
    layout: tuple[int, ...]
    budgets: tuple[int, ...]
    measured_prefill: bool = True
    #: layers of the encoder that produces these tokens: ToMe-style methods (an `r` field, the
    #: tokens merged per layer) run once per layer
    encoder_layers: int = 1

    @property
    def tokens(self) -> int:
        return math.prod(self.layout)


@dataclass(frozen=True)
class Preset:
    """A model built from configs with random weights, plus the sweep that suits its size."""

    text: dict[str, Any]
    vision: dict[str, Any] | None
    scenarios: tuple[Scenario, ...]
    text_tokens: int
    repeats: int
    warmup: int
    decode_tokens: int


#: LLaVA-1.5's CLIP-L/336 vision tower: its shape sets the method inputs and encoder FLOPs.
CLIP_L_336 = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
)

PRESETS: dict[str, Preset] = {
    # LLaVA-1.5 (Vicuna: multi-head attention, SwiGLU at 2.7x, 32000 words) scaled to a CPU:
    # hidden 2048 keeps every matmul compute-bound at 128 tokens, so measured and FLOP
    # speed-ups are comparable.
    "llava-cpu": Preset(
        text=dict(
            hidden_size=2048,
            intermediate_size=5504,
            num_hidden_layers=4,
            num_attention_heads=16,
            num_key_value_heads=16,
            vocab_size=32000,
        ),
        vision=CLIP_L_336,
        scenarios=(
            Scenario("image", (24, 24), (192, 128, 64), encoder_layers=24),
            Scenario("video", (32, 14, 14), (1568, 784), False, encoder_layers=24),
            # Whisper-large's 32 encoder layers (Qwen2-Audio)
            Scenario("audio", (1500,), (750, 375), False, encoder_layers=32),
        ),
        text_tokens=64,
        repeats=5,
        warmup=1,
        decode_tokens=2,
    ),
    # The smoke test's model: seconds for the whole sweep.
    "tiny": Preset(
        text=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=128,
        ),
        vision=dict(
            CLIP_L_336,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=48,
            patch_size=8,
        ),
        scenarios=(
            Scenario("image", (12, 12), (48, 16), encoder_layers=2),
            Scenario("video", (8, 6, 6), (96,), encoder_layers=2),
            Scenario("audio", (100,), (50,), encoder_layers=2),
        ),
        text_tokens=8,
        repeats=2,
        warmup=1,
        decode_tokens=2,
    ),
}



def build_model(args: argparse.Namespace, preset: Preset, device: torch.device, dtype: torch.dtype):
    """(model, ModelShape, source) for a preset, a config file, or a local checkpoint."""
    import transformers as tf

    if args.checkpoint:
        config = tf.AutoConfig.from_pretrained(args.checkpoint)
        auto = (
            tf.AutoModelForImageTextToText
            if hasattr(config, "vision_config")
            else tf.AutoModelForCausalLM
        )
        model = auto.from_pretrained(args.checkpoint, dtype=dtype)
        source = f"checkpoint:{args.checkpoint}"
    else:
        if args.config:
            config = tf.AutoConfig.from_pretrained(args.config)
            source = f"config:{args.config}"
        else:
            text = tf.LlamaConfig(**preset.text, max_position_embeddings=16384)
            if preset.vision is None:
                config = text
            else:
                config = tf.LlavaConfig(
                    vision_config=tf.CLIPVisionConfig(**preset.vision), text_config=text
                )
            source = "preset"
        torch.manual_seed(0)
        text_config = config.get_text_config()
        text_config._attn_implementation = args.attention
        model = tf.AutoModelForCausalLM.from_config(text_config, dtype=dtype)
    model.config.get_text_config()._attn_implementation = args.attention
    try:
        shape = ModelShape.from_config(config)
    except ValueError as error:  # an encoder reproductions.flops cannot read: the LLM alone
        print(f"note: encoder FLOPs left out ({error})", file=sys.stderr)
        shape = ModelShape(decoder=DecoderShape.from_config(config))
    return model.to(device).eval(), shape, source


