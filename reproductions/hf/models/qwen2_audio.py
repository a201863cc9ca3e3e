"""Qwen2-Audio (Whisper encoder, one linear projector): each clip is one run of audio
placeholders on a 1-D grid. The projector stage compresses the rows entering the LLM."""

from __future__ import annotations

from torch import nn

from .base import Adapter, language_parts


def build(model: nn.Module) -> Adapter:
    config = model.config
    return Adapter(
        family="qwen2_audio",
        **language_parts(model),
        tokens={"audio": config.audio_token_id},
        gridded=("audio",),
    )
