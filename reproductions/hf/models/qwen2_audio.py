"""Qwen2-Audio (Whisper encoder, one linear projector): each clip is one run of audio
placeholders on a 1-D grid. The projector stage compresses the rows entering the LLM; the
encoder stage compresses inside the Whisper encoder, whose average pool makes each LLM token of
two frames (`stages/audio.py`)."""

from __future__ import annotations

from torch import nn

from .base import Adapter, AudioTower, language_parts


def build(model: nn.Module) -> Adapter:
    config = model.config
    return Adapter(
        family="qwen2_audio",
        **language_parts(model),
        tokens={"audio": config.audio_token_id},
        gridded=("audio",),
        audio_tower=AudioTower(model.model.audio_tower.layers, model.model.multi_modal_projector),
    )
