"""Refusals name the problem and what would work, before any hook is installed."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from hf_helpers import LastRowTopK, hook_count, tiny

from reproductions import get
from reproductions.hf import SUPPORTED, compress, why_unsupported


def test_unsupported_model_lists_the_supported_ones():
    config = tf.LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
    )
    model = tf.LlamaForCausalLM(config)
    with (
        pytest.raises(ValueError, match="LlamaForCausalLM is not supported") as error,
        compress(model, "random"),
    ):
        pass
    for name in SUPPORTED:
        assert name in str(error.value)


@pytest.mark.parametrize(
    "family,method,match",
    [
        ("qwen2_5_omni", lambda: get("omnizip"), "needs audio, attention"),
        (
            "qwen2_audio",
            lambda: get("pool", stride=2),
            "image/video tokens",
        ),
        ("llava", lambda: LastRowTopK(keep=3, layer=9), r"layer K in \[0, 3\]"),
        (
            "llava_next",
            lambda: get("tome", r=2),
            "merges inside the encoders of LLaVA",
        ),
        ("llava", lambda: get("pixel_unshuffle", factor=2), "projector trained for that width"),
    ],
    ids=[
        "missing-signal",
        "wrong-modality",
        "layer-out-of-range",
        "encoder-elsewhere",
        "width-change",
    ],
)
def test_refusals_say_why(family, method, match):
    model, _ = tiny(family)
    hooks = hook_count(model)
    built = method()
    assert why_unsupported(model, built) is not None
    with pytest.raises(ValueError, match=match), compress(model, built):
        pass
    assert hook_count(model) == hooks


def test_llm_stage_refuses_flash_attention_implementations():
    model, _ = tiny("llava")
    model.model.language_model.config._attn_implementation = "flash_attention_2"
    try:
        with pytest.raises(ValueError, match="sdpa"), compress(model, LastRowTopK()):
            pass
    finally:
        model.model.language_model.config._attn_implementation = "sdpa"


def test_options_of_another_stage_are_refused():
    model, _ = tiny("llava")
    with (
        pytest.raises(ValueError, match="schedule="),
        compress(model, "random", keep=3, schedule=[1, 1, 1]),
    ):
        pass
    with pytest.raises(ValueError, match="layer="), compress(model, "random", keep=3, layer=2):
        pass
    with (
        pytest.raises(ValueError, match="'original' or 'renumbered'"),
        compress(model, "random", positions="new"),
    ):
        pass


def test_hyperparameters_go_with_a_method_name():
    model, _ = tiny("llava")
    with pytest.raises(ValueError, match="hyperparameters"), compress(model, get("random"), keep=3):
        pass
    with (
        pytest.raises(ValueError, match="disagrees"),
        compress(model, get("fastv", keep=3, layer=2), layer=3),
    ):
        pass


def test_layer_option_sets_k_for_methods_without_one():
    """sparsevlm has no layer field: layer=1 makes decoder layer 1 the first on kept rows."""
    model, inputs = tiny("llava")
    seen = []
    for layer in (1, 2):
        with compress(model, "sparsevlm", keep=3, recycle=False, layer=layer) as report:
            # registered after compress's own hook, so it sees what the layer really gets
            handle = model.model.language_model.layers[1].register_forward_pre_hook(
                lambda module, args, kwargs: seen.append(
                    kwargs.get("hidden_states", args[0]).shape[1]
                ),
                with_kwargs=True,
            )
            try:
                with torch.no_grad():
                    model(**inputs)
            finally:
                handle.remove()
        assert report.records[0].media_after == [3, 3]
    full = inputs["input_ids"].shape[1]
    assert seen[0] < full and seen[1] == full
