"""The `attention` the llm stage hands a method is the model's own: equal to the eager attention
weights transformers returns for layer K - 1 (output_attentions=True), in every family where the
llm stage runs. The recompute must follow each family's attention exactly, per-head q / k norms
included (Qwen3-VL), so a method never ranks tokens by an attention the model does not have."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from reproductions import Compression, Method, Tokens
from reproductions.hf import compress, why_unsupported
from reproductions.hf.models import adapter_for
from reproductions.hf.tiny import BUILDERS
from reproductions.ops import select


@dataclass
class AttentionRecorder(Method):
    """Test-only llm method: keeps every token and records the attention it was handed."""

    layer: int = 2

    stage = "llm"
    modality = ("image", "video", "audio")
    needs = ("attention",)

    def __post_init__(self) -> None:
        self.seen: list[Tokens] = []

    def compress(self, tokens: Tokens) -> Compression:
        self.seen.append(tokens)
        return select(tokens, torch.arange(tokens.count).expand(tokens.batch, -1))


def _families() -> list[str]:
    return [
        name for name, builder in BUILDERS.items()
        if why_unsupported(builder()[0], AttentionRecorder(layer=2)) is None
    ]


@pytest.mark.parametrize("name", _families())
def test_llm_stage_attention_is_the_models_eager_attention(name):
    model, inputs = BUILDERS[name](attn="eager")
    method = AttentionRecorder(layer=2)
    with torch.no_grad():
        reference = model(**inputs, output_attentions=True).attentions[1]  # layer K - 1
        with compress(model, method):
            method.seen.clear()  # compress() probes the method on example tokens
            model(**inputs)
    adapter = adapter_for(model)
    tokens = [t for m, t in adapter.tokens.items() if m in method.modality]
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    got = [t.attention[i] for t in method.seen for i in range(t.batch)]
    assert len(got) == ids.shape[0]
    for r, attention in enumerate(got):
        media = torch.isin(ids[r], torch.tensor(tokens)).nonzero().flatten()
        if "video" in name and adapter.video_trailer:  # OneVision's newline ends the clip's run
            media = media[: -adapter.video_trailer]
        queries = torch.arange(int(media.max()) + 1, ids.shape[1])
        want = reference[r][:, queries][:, :, media]
        assert mask[r, queries].all()
        torch.testing.assert_close(attention.float(), want.float(), rtol=1e-4, atol=1e-5)
