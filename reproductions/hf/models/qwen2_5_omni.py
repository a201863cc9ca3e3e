"""Qwen2.5-Omni's thinker (Qwen2_5OmniThinkerForConditionalGeneration): a Whisper-style audio
encoder, a Qwen2.5-VL vision encoder and a Qwen2.5 decoder with 3-D M-RoPE (audio tokens take
time positions on all three axes). Images, videos and audio clips that come separately are
compressed like Qwen2.5-VL's and Qwen2-Audio's. A video whose audio is interleaved with it
(`use_audio_in_video`, 2-second chunks of video then audio tokens) is refused: OmniZip's joint
audio-video compression needs the chunks read as one clip, which this integration does not do yet.
The encoder stage compresses inside the audio encoder, each 2-second chunk it attends within on
its own (`stages/audio.py`). For audio methods the projector stage reads `cls_attention` from the
audio encoder's last layer (`stages/signals.py`, `AudioTap`): the attention each frame receives,
averaged over the query rows of its chunk, then over the two frames of each LLM token. SEATS'
released code reads the same map but sums over the query rows, and lays its 2-second windows
(the released model's chunks) and its frame pairs over all clips' frames packed, not clip by clip.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .base import Adapter, AudioTower, language_parts
from .qwen2_vl import vision_encoder, vision_tap

INTERLEAVED = (
    "Qwen2.5-Omni interleaves a video's audio with its frames in 2-second chunks "
    "(use_audio_in_video), which reproductions.hf does not read as one clip yet"
)


@dataclass
class OmniAdapter(Adapter):
    def refuse_call(self, kwargs: dict) -> str | None:
        return INTERLEAVED + ": pass use_audio_in_video=False" if kwargs.get("use_audio_in_video") else None


def build(model: nn.Module) -> OmniAdapter:
    config, tower = model.config, model.model.audio_tower
    return OmniAdapter(
        family="qwen2_5_omni",
        **language_parts(model),
        tokens={"image": config.image_token_id, "video": config.video_token_id, "audio": config.audio_token_id},
        mrope=True,
        gridded=("image", "video", "audio"),
        signals=("cls_attention", "keys", "received"),
        tap=vision_tap(model.model.visual),
        **vision_encoder(model.model.visual),
        audio_tower=AudioTower(tower.layers, tower, chunk=2 * tower.n_window),
    )
