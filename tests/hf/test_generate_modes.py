"""generate() in the modes that expand or re-run the prompt gives every row what the method gives
it in a plain compressed forward: num_return_sequences and beam search (generate encodes each
image once and repeats it for the expanded rows) and use_cache=False (every step re-runs the
prompt with the images encoded at the start). Before the fix, LLaVA's expanded rows fell back to
compressing the projected features, and VisionZip refused them.

Cases: every tiny family x one method per shortening stage, kept where the method runs in that
family (`why_unsupported` is None)."""

from __future__ import annotations

import pytest
import torch
from hf_helpers import tiny

from reproductions import get
from reproductions.hf import compress, why_unsupported
from reproductions.hf.tiny import BUILDERS, MODALITY, SPECIAL

#: per stage and modality, a method whose budget fits the tiny models' 8-16-token spans
METHODS = {
    ("projector", "image"): [("divprune", {"keep": 0.5}), ("visionzip", {"dominant": 3, "contextual": 1})],
    ("projector", "video"): [("divprune", {"keep": 0.5})],
    ("projector", "audio"): [("audio_pool", {"stride": 2}), ("seats_audio", {"ratio": 0.5, "window": 8})],
    ("encoder", "image"): [("tome", {"r": 2})],
    ("encoder", "audio"): [("atome", {"r": 4}), ("audio_attention_prune", {"keep_ratio": 0.5, "layers": (1,)})],
    ("llm", "image"): [("fastv", {"keep": 0.5, "layer": 2})],
    ("llm", "video"): [("fastv", {"keep": 0.5, "layer": 2})],
    ("llm", "audio"): [("fastv", {"keep": 0.5, "layer": 2})],
}
MODES = {
    "num_return_sequences": {"do_sample": True, "num_return_sequences": 3},
    "beam_search": {"do_sample": False, "num_beams": 3, "num_return_sequences": 3},
}


def cases() -> list[tuple[str, str, dict]]:
    found = []
    for family in sorted(BUILDERS):
        model, _ = tiny(family)
        for (_stage, modality), entries in METHODS.items():
            for name, params in entries:
                if modality == MODALITY[family] and why_unsupported(model, get(name, **params)) is None:
                    found.append((family, name, params))
    return found


CASES = cases()


def plain_last_logits(model, inputs, name, params) -> torch.Tensor:
    with compress(model, name, **params), torch.no_grad():
        return model(**inputs).logits[:, -1]


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("family,name,params", CASES, ids=[f"{f}-{n}" for f, n, _ in CASES])
def test_expanded_rows_get_their_prompts_compression(family, name, params, mode):
    model, inputs = tiny(family)
    expected = plain_last_logits(model, inputs, name, params)
    torch.manual_seed(0)
    with compress(model, name, **params) as report, torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=2, output_logits=True,
                             return_dict_in_generate=True, **MODES[mode])
    first = out.logits[0]
    assert first.shape[0] == 3 * expected.shape[0]
    torch.testing.assert_close(first, expected.repeat_interleave(3, dim=0), rtol=0, atol=1e-5)
    assert report.records and all(r.media_after != r.media_before for r in report.records[:1])


@pytest.mark.parametrize("family,name,params", CASES, ids=[f"{f}-{n}" for f, n, _ in CASES])
def test_use_cache_false_equals_the_cached_generation(family, name, params):
    model, inputs = tiny(family)
    runs = {}
    for use_cache in (True, False):
        with compress(model, name, **params), torch.no_grad():
            runs[use_cache] = model.generate(**inputs, max_new_tokens=3, do_sample=False, use_cache=use_cache,
                                             output_logits=True, return_dict_in_generate=True,
                                             suppress_tokens=SPECIAL)  # no placeholder among the new tokens
    torch.testing.assert_close(runs[False].logits[0], plain_last_logits(model, inputs, name, params),
                               rtol=0, atol=1e-5)
    if name != "fastv":  # FastV ranks by the last rows' attention, which use_cache=False re-reads each step
        for cached, uncached in zip(runs[True].logits, runs[False].logits, strict=True):
            torch.testing.assert_close(uncached, cached, rtol=0, atol=1e-4)
        assert torch.equal(runs[True].sequences, runs[False].sequences)


@pytest.mark.parametrize("family,name,params", CASES, ids=[f"{f}-{n}" for f, n, _ in CASES])
def test_bfloat16_runs_as_float32_does(family, name, params):
    """In bfloat16 the compressed model keeps as many tokens as in float32, and its first-step
    logits stay within bfloat16 rounding of a bfloat16 plain compressed forward."""
    model, inputs = BUILDERS[family]()
    half = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}
    with compress(model, name, **params) as full, torch.no_grad():
        model(**inputs)
    model = model.to(torch.bfloat16)
    with compress(model, name, **params) as report, torch.no_grad():
        logits = model(**half).logits
        out = model.generate(**half, max_new_tokens=2, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, suppress_tokens=SPECIAL)
    assert report.records[0].media_after == full.records[0].media_after
    assert logits.dtype == torch.bfloat16 and bool(torch.isfinite(logits).all())
    torch.testing.assert_close(out.logits[0].float(), logits[:, -1].float(), rtol=0, atol=5e-2)
