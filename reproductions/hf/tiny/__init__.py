"""Tiny random models of every supported family, with matching inputs: for tests and examples.

Each builder returns `(model, inputs)` where `inputs` is a dict for `model(**inputs)` and
`model.generate(**inputs)`: a batch of two left-padded prompts of different lengths, so that
padding, batching and position ids are exercised. Weights are random (seeded); no download.
"""

from __future__ import annotations

from collections.abc import Callable

from .llava import llava, llava_next, llava_siglip
from .onevision import llava_onevision
from .parts import AUDIO, END, IMAGE, PAD, SPECIAL, START, VIDEO, VOCAB, Built
from .qwen import qwen2_5_omni, qwen2_5_vl, qwen2_audio, qwen2_vl, qwen3_vl
from .tiles import gemma3, idefics3, internvl

#: the modality the inputs of each tiny builder carry
MODALITY: dict[str, str] = {
    "llava": "image",
    "llava_siglip": "image",
    "llava_next": "image",
    "llava_onevision": "image",
    "llava_onevision_video": "video",
    "qwen2_vl": "image",
    "qwen2_vl_video": "video",
    "qwen2_5_vl": "image",
    "qwen2_5_vl_video": "video",
    "qwen3_vl": "image",
    "qwen3_vl_video": "video",
    "qwen2_audio": "audio",
    "idefics3": "image",
    "internvl": "image",
    "gemma3": "image",
    "qwen2_5_omni": "video",
    "qwen2_5_omni_audio": "audio",
    "qwen2_5_omni_image": "image",
}

#: every tiny builder by family name (video variants included)
BUILDERS: dict[str, Callable[..., Built]] = {
    "llava": llava,
    "llava_siglip": llava_siglip,
    "llava_next": llava_next,
    "llava_onevision": llava_onevision,
    "llava_onevision_video": lambda **kw: llava_onevision(video=True, **kw),
    "qwen2_vl": qwen2_vl,
    "qwen2_vl_video": lambda **kw: qwen2_vl(video=True, **kw),
    "qwen2_5_vl": qwen2_5_vl,
    "qwen2_5_vl_video": lambda **kw: qwen2_5_vl(video=True, **kw),
    "qwen3_vl": qwen3_vl,
    "qwen3_vl_video": lambda **kw: qwen3_vl(video=True, **kw),
    "qwen2_audio": qwen2_audio,
    "idefics3": idefics3,
    "internvl": internvl,
    "gemma3": gemma3,
    "qwen2_5_omni": qwen2_5_omni,
    "qwen2_5_omni_audio": qwen2_5_omni,  # the same prompt: an audio clip and a video
    "qwen2_5_omni_image": lambda **kw: qwen2_5_omni(image=True, **kw),
}

__all__ = ["AUDIO", "BUILDERS", "END", "IMAGE", "MODALITY", "PAD", "SPECIAL", "START", "VIDEO", "VOCAB", "Built"]
