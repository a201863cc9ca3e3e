"""MustDrop in the tiny LLaVA: the encoder part merges 2x2 cells of the CLIP grid after layer 0
(the encoder stage hands it the grid), and the llm part filters, at each of its layers, the
merged tokens the encoder part handed on; the model leaves the context unchanged."""

from __future__ import annotations

import torch
from hf_helpers import Capture, hook_count, tiny

from reproductions import get
from reproductions.hf import compress
from reproductions.image.mustdrop import MustDropFilter, MustDropMerge

#: every cell merges (threshold -1); the filter keeps a token whose total or peak attention is
#: at least average (individual 1: every peak is below it, so the total alone decides)
PARAMS = {"threshold": -1.0, "window": 2, "layers": (1, 3), "global_threshold": 0.2, "individual_threshold": 1.0}


@torch.no_grad()
def test_the_llm_part_filters_the_tokens_the_encoder_part_merged(monkeypatch):
    model, inputs = tiny("llava")
    before, hooks = model(**inputs).logits, hook_count(model)
    seen: list[int] = []
    original = MustDropFilter.compress

    def spy(self, tokens):
        seen.append(tokens.attention.shape[-1])
        return original(self, tokens)

    monkeypatch.setattr(MustDropFilter, "compress", spy)
    merged = MustDropMerge(threshold=-1.0, window=2)
    with compress(model, merged) as report:
        capture = Capture(model.model.language_model)
        try:
            model(**inputs)
        finally:
            capture.close()
    handed = capture.calls[0]["inputs_embeds"]
    assert report.records[0].media_after == [4, 8]  # 16 patches -> 4 cells per image
    with compress(model, get("mustdrop", **PARAMS)) as report:
        capture = Capture(model.model.language_model)
        try:
            model(**inputs)
        finally:
            capture.close()
    encoder, first, second = report.records
    assert (encoder.stage, first.stage, second.stage) == ("encoder", "llm", "llm")
    assert torch.equal(capture.calls[0]["inputs_embeds"], handed)  # the encoder part's sequence
    assert first.media_before == encoder.media_after == [4, 8]
    assert seen[:2] == [4, 8]  # at layer 1, each row's merged tokens (one image, two images)
    assert second.media_before == first.media_after and sum(first.media_after) < 12
    assert sum(second.media_after) <= sum(second.media_before)
    assert hook_count(model) == hooks
    assert torch.equal(model(**inputs).logits, before)
