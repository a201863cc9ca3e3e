"""Every registered method whose stage and modality fit a model runs through `generate()` on
that family's tiny model (parametrized over the registry, so methods that land later are
exercised automatically), compresses only its own modality, and leaves no hook behind; those
that do not fit are refused with a reason."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hf_helpers import hook_count, tiny

import reproductions
from reproductions.hf import compress, why_unsupported
from reproductions.hf.tiny import BUILDERS, MODALITY

#: families whose image tokens fill no regular grid (layout None)
NO_IMAGE_GRID = {"llava_onevision"}
METHODS = {name: cls for name, cls in reproductions.methods().items() if not cls.trainable}


def build(cls):
    """The method's example parameters, with int budgets turned into a half (tiny spans hold
    as few as 8 tokens) and llm / cache layers inside the tiny 4-layer decoder."""
    params = dict(cls.example)
    names = {f.name for f in dataclasses.fields(cls)}
    if "keep" in names and isinstance(params.get("keep", cls.keep), int):
        params["keep"] = 0.5
    if "layer" in names:
        params["layer"] = 2
    return cls(**params)


CASES = [
    (name, family)
    for name in sorted(METHODS)
    for family in sorted(BUILDERS)
    if MODALITY[family] in METHODS[name].modality
]


@pytest.mark.parametrize("name,family", CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_method_runs_through_generate(name, family):
    model, inputs = tiny(family)
    method = build(METHODS[name])
    reason = why_unsupported(model, method)
    if reason is not None:
        with pytest.raises(ValueError), compress(model, method):
            pass
        pytest.skip(reason)
    hooks = hook_count(model)
    try:
        with compress(model, method) as report, torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    except ValueError as error:
        # OneVision packs anyres images with newline tokens: no (H, W) grid for its image prompts
        if family in NO_IMAGE_GRID and "layout" in str(error):
            assert hook_count(model) == hooks
            pytest.skip(f"{family} images have no grid: {error}")
        raise
    assert out.shape == (inputs["input_ids"].shape[0], inputs["input_ids"].shape[1] + 3)
    assert hook_count(model) == hooks
    assert report.records, f"{name} never compressed anything on {family}"
    for record in report.records:
        assert record.stage == method.stage
        for b in range(len(record.tokens_before)):
            assert 0 < record.media_after[b] <= record.media_before[b]
            removed = record.media_before[b] - record.media_after[b]
            assert record.tokens_after[b] == record.tokens_before[b] - removed


def keep_everything(cls):
    """The method with a budget that keeps every token (its `identity` parameters, or keep=1.0),
    or None where it has neither."""
    names = {f.name for f in dataclasses.fields(cls)}
    params = dict(cls.example)
    if "layer" in names:
        params["layer"] = 2
    if cls.identity is not None:
        return cls(**{**params, **cls.identity})
    if "keep" in names:
        return cls(**{**params, "keep": 1.0})
    return None


@pytest.mark.parametrize("name,family", CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_budget_that_keeps_everything_changes_nothing(name, family):
    model, inputs = tiny(family)
    method = keep_everything(METHODS[name])
    if method is None:
        pytest.skip(f"{name} has no budget that keeps every token")
    reason = why_unsupported(model, method)
    if reason is not None:
        pytest.skip(reason)
    with torch.no_grad():
        logits = model(**inputs).logits
        tokens = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        try:
            with compress(model, method):
                kept_logits = model(**inputs).logits
                kept_tokens = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        except ValueError as error:
            # identity parameters sized for the example grid (temporal_pool's (4, 4, 4))
            if "layout" in str(error):
                pytest.skip(f"{name}'s identity parameters do not fit {family}'s grid: {error}")
            raise
    valid = inputs["attention_mask"].bool()
    assert torch.equal(kept_logits[valid], logits[valid])
    assert torch.equal(kept_tokens, tokens)
