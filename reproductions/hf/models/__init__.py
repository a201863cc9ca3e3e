"""One adapter per supported model family (a module each): `adapter_for(model)` picks it by the
model's class. To support a family, add a module with a `build(model) -> Adapter` and name its
classes here."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from . import gemma3, llava, llava_next, llava_onevision, qwen2_5_omni, qwen2_audio, qwen2_vl, tiles
from .base import Adapter

#: model class name -> the builder of its adapter
BUILDERS: dict[str, Callable[[nn.Module], Adapter]] = {
    "LlavaForConditionalGeneration": llava.build,
    "LlavaOnevisionForConditionalGeneration": llava_onevision.build,
    "Qwen2VLForConditionalGeneration": qwen2_vl.build,
    "Qwen2_5_VLForConditionalGeneration": qwen2_vl.build,
    "Qwen3VLForConditionalGeneration": qwen2_vl.build,
    "Qwen2AudioForConditionalGeneration": qwen2_audio.build,
    "LlavaNextForConditionalGeneration": llava_next.build,
    "Idefics3ForConditionalGeneration": tiles.build_idefics3,
    "SmolVLMForConditionalGeneration": tiles.build_idefics3,
    "InternVLForConditionalGeneration": tiles.build_internvl,
    "Gemma3ForConditionalGeneration": gemma3.build,
    "Qwen2_5OmniThinkerForConditionalGeneration": qwen2_5_omni.build,
}
SUPPORTED = tuple(BUILDERS)


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter of `model`, or a ValueError listing the supported model classes."""
    name = type(model).__name__
    if name not in BUILDERS:
        raise ValueError(
            f"{name} is not supported by reproductions.hf.compress; supported models: {', '.join(SUPPORTED)}"
        )
    return BUILDERS[name](model)


__all__ = ["SUPPORTED", "Adapter", "adapter_for"]
