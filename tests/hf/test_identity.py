"""With a budget that keeps every token, compress leaves logits and greedy generations exactly as
the unpatched model's, on every family, in eager and SDPA, for the projector, llm and cache
stages; and the context removes every hook on exit, even when its body raises."""

from __future__ import annotations

import pytest
import torch
from hf_helpers import LastRowTopK, hook_count, tiny

from reproductions import get
from reproductions.hf import compress, why_unsupported
from reproductions.hf.tiny import BUILDERS

FAMILIES = sorted(BUILDERS)
KEEP_ALL = {
    "projector": lambda: get("random", keep=1.0),
    "llm": lambda: LastRowTopK(keep=10_000, layer=2),
}


def _run(model, inputs):
    with torch.no_grad():
        logits = model(**inputs).logits
        tokens = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    return logits, tokens


KEEP_ALL["encoder"] = lambda: get("tome", r=0)
MEDIA = {"pixel_values": "image", "pixel_values_videos": "video", "input_features": "audio"}


def carried(inputs: dict) -> set[str]:
    """The modalities whose media a tiny prompt carries."""
    return {modality for key, modality in MEDIA.items() if key in inputs}


#: every (family, stage) where the stage runs on the prompt's media (ToMe: images only, in the
#: encoders it handles; Gemma 3: no llm stage)
CASES = [
    (family, stage)
    for family in FAMILIES
    for stage in sorted(KEEP_ALL)
    if why_unsupported(tiny(family)[0], KEEP_ALL[stage]()) is None
    and carried(tiny(family)[1]) & set(KEEP_ALL[stage]().modality)
]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("family,stage", CASES)
def test_keeping_everything_changes_nothing(family, stage, attn):
    model, inputs = tiny(family, attn)
    logits, tokens = _run(model, inputs)
    hooks = hook_count(model)
    with compress(model, KEEP_ALL[stage]()) as report:
        kept_logits, kept_tokens = _run(model, inputs)
    valid = inputs["attention_mask"].bool()
    assert torch.equal(kept_logits[valid], logits[valid])
    assert torch.equal(kept_tokens, tokens)
    assert report.records and all(r.media_after == r.media_before for r in report.records)
    assert hook_count(model) == hooks
    after_logits, _ = _run(model, inputs)
    assert torch.equal(after_logits, logits)


@pytest.mark.parametrize("family", ["llava_onevision_video", "qwen2_vl_video"])
def test_cache_stage_that_prunes_nothing_changes_nothing(family):
    model, inputs = tiny(family)
    _, tokens = _run(model, inputs)
    with compress(model, "dycoke_cache", layer=2, prune_ratio=0.0) as report:
        _, kept = _run(model, inputs)
    assert torch.equal(kept, tokens)
    assert len(report.records) == 2  # one per decoding step of generate (3 new tokens)
    assert all(r.tokens_after == r.tokens_before for r in report.records)


@pytest.mark.parametrize("stage", sorted(KEEP_ALL))
def test_hooks_are_removed_when_the_body_raises(stage):
    model, inputs = tiny("llava")
    logits, _ = _run(model, inputs)
    hooks = hook_count(model)
    method = get("random", keep=0.5) if stage == "projector" else LastRowTopK(keep=3)
    with pytest.raises(RuntimeError, match="body failed"), compress(model, method):
        with torch.no_grad():
            model(**inputs)
        assert hook_count(model) > hooks
        raise RuntimeError("body failed")
    assert hook_count(model) == hooks
    after, _ = _run(model, inputs)
    assert torch.equal(after, logits)
