"""Qwen2-Audio (Whisper encoder, one linear projector): each clip is one run of audio
placeholders on a 1-D grid. The projector stage compresses the rows entering the LLM; the
encoder stage compresses inside the Whisper encoder, whose average pool makes each LLM token of
two frames (`stages/audio.py`).

For audio methods the projector stage reads `cls_attention` from the encoder's last layer
(`stages/signals.py`, `AudioTap`): the attention each real frame receives, averaged over the
clip's real frames as queries (padding to 30 s is neither query nor key), then over the two
frames of each LLM token. The encoder attends over the whole clip, so that is the softmax here;
SEATS' released code, written for Qwen2.5-Omni, sums over the query rows of 2-second windows
(its chunks there)."""

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
