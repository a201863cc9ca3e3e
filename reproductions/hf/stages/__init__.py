"""One module per stage (where a method acts in the model), each a `Stage` context that installs
its hooks on entry and removes them in `finally`:

- `projector.py`: the media tokens entering the LLM (LLaVA: at the encoder output);
- `encoder.py`: ToMe-style merging inside the vision encoders (`packed.py`: the Qwen ViTs),
  and (`audio.py`) A-ToMe and attention pruning inside the audio encoders of Qwen2-Audio and
  Qwen2.5-Omni;
- `llm.py`: at decoder layer K during prefill (FastV-style), and what decoding steps see
  (`llm_decoding.py`);
- `cache.py`: the KV cache entries during decoding (DyCoke's stage 2).

`input.py` holds what the projector and encoder stages share (the rebuilt, shorter LLM input),
`decoder.py` what the llm and cache stages share (the hooks at and after layer K), `signals.py`
the encoder signals recomputed for the projector stage, `merging.py` the encoder stage's
per-layer forward and merge counts, `units.py` its merging of whole pooling units, `windows.py`
the attention windows of an audio encoder call, and `base.py` what all of them do.
"""

from __future__ import annotations

from .base import Stage
from .cache import CacheStage
from .decoder import DEFAULT_LAYER, decoder_layer
from .encoder import EncoderStage
from .llm import LlmStage
from .projector import ProjectorStage

#: a method's declared stage -> the class that runs it
STAGES: dict[str, type[Stage]] = {
    stage.name: stage for stage in (ProjectorStage, EncoderStage, LlmStage, CacheStage)
}

__all__ = ["DEFAULT_LAYER", "STAGES", "Stage", "decoder_layer"]
