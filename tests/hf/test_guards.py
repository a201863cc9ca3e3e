"""What used to fail late or silently now works or is refused up front: nested contexts,
`labels=` (log-likelihood scoring on the kept positions), static caches, meta-device models,
`torch.compile` wrappers, trainable methods with untrained weights, a method whose modality never
appears, and `why_unsupported` on anything."""

from __future__ import annotations

import warnings

import pytest
import torch
from hf_helpers import hook_count, tiny
from transformers import LlavaConfig, LlavaForConditionalGeneration

from reproductions.hf import compress, why_unsupported
from reproductions.hf.tiny import IMAGE, llava

LLM = ("fastv", {"keep": 0.5, "layer": 2})
PROJECTOR = ("divprune", {"keep": 0.5})


def test_nested_contexts_are_refused_and_the_outer_one_still_works():
    model, inputs = tiny("llava")
    hooks = hook_count(model)
    nested = r"already inside compress\(\.\.\., 'divprune'\).*'fastv'"
    with compress(model, PROJECTOR[0], **PROJECTOR[1]), torch.no_grad():
        with pytest.raises(ValueError, match=nested), compress(model, LLM[0], **LLM[1]):
            pass
        inside = model(**inputs).logits
    with compress(model, PROJECTOR[0], **PROJECTOR[1]), torch.no_grad():
        again = model(**inputs).logits
    assert torch.equal(inside, again) and hook_count(model) == hooks


def labels_for(inputs: dict) -> torch.Tensor:
    """Every real text token is a target; image placeholders and padding are not."""
    labels = inputs["input_ids"].clone()
    labels[(labels == IMAGE) | (inputs["attention_mask"] == 0)] = -100
    return labels


def kept_labels(inputs: dict, labels: torch.Tensor, kept: list[int], width: int) -> torch.Tensor:
    """The labels of a compressed sequence built by hand: each row's real tokens in order, each
    image's run replaced by `kept` placeholders' -100, left-padded with -100 to `width`."""
    rows = []
    for row, ids in enumerate(inputs["input_ids"]):
        out, in_image = [], False
        for j, token in enumerate(ids.tolist()):
            if not inputs["attention_mask"][row, j]:
                continue
            if token == IMAGE:
                if not in_image:
                    out += [-100] * kept[row]
                in_image = True
                continue
            in_image = False
            out.append(int(labels[row, j]))
        rows.append([-100] * (width - len(out)) + out)
    return torch.tensor(rows)


@pytest.mark.parametrize("name,params", [PROJECTOR, LLM], ids=["projector", "llm"])
def test_labels_give_the_models_loss_on_the_kept_positions(name, params):
    model, inputs = llava(attn="eager", images_per_row=(1, 1))  # one image a row: its kept count is the row's
    labels = labels_for(inputs)
    with compress(model, name, **params) as report, torch.no_grad():
        logits = model(**inputs).logits
        loss = model(**inputs, labels=labels).loss
    expected_labels = kept_labels(inputs, labels, report.records[0].media_after, logits.shape[1])
    expected = model.loss_function(logits=logits, labels=expected_labels,
                                   vocab_size=model.config.get_text_config().vocab_size)
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-6)


def test_labels_with_nothing_dropped_give_the_unpatched_loss():
    model, inputs = tiny("llava")
    labels = labels_for(inputs)
    with torch.no_grad():
        plain = model(**inputs, labels=labels).loss
        with compress(model, "divprune", keep=1.0):
            kept = model(**inputs, labels=labels).loss
    assert torch.equal(plain, kept)


@pytest.mark.parametrize("name,params", [PROJECTOR, LLM], ids=["projector", "llm"])
def test_a_static_cache_is_refused_with_what_to_use(name, params):
    model, inputs = tiny("llava")
    hooks = hook_count(model)
    refused = pytest.raises(ValueError, match=r"static cache.*DynamicCache")
    with refused, compress(model, name, **params), torch.no_grad():
        model.generate(**inputs, max_new_tokens=2, do_sample=False, cache_implementation="static")
    assert hook_count(model) == hooks


def test_a_model_on_the_meta_device_is_refused():
    config = tiny("llava")[0].config
    with torch.device("meta"):
        empty = LlavaForConditionalGeneration(LlavaConfig.from_dict(config.to_dict()))
    with pytest.raises(ValueError, match="meta device"), compress(empty, PROJECTOR[0], **PROJECTOR[1]):
        pass


def test_a_compiled_model_is_compressed_through_the_module_it_wraps():
    model, inputs = tiny("llava")
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad():
        with compress(model, PROJECTOR[0], **PROJECTOR[1]):
            expected = model(**inputs).logits
        with compress(compiled, PROJECTOR[0], **PROJECTOR[1]):
            got = compiled(**inputs).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_a_trainable_method_warns_that_its_weights_are_its_own():
    model, _ = tiny("llava")
    with pytest.warns(UserWarning, match="trainable method"), compress(model, "resampler"):
        pass


def test_a_method_whose_modality_never_appears_warns():
    model, inputs = tiny("llava_onevision")  # an image prompt; dycoke compresses video
    warned = pytest.warns(UserWarning, match=r"dycoke compressed nothing in 1 forward calls.*no video tokens")
    with warned, compress(model, "dycoke"), torch.no_grad():
        model(**inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with compress(model, "divprune", keep=0.5), torch.no_grad():
            model(**inputs)


def test_why_unsupported_answers_for_any_model_and_takes_method_names():
    model, _ = tiny("llava")
    assert why_unsupported(torch.nn.Linear(2, 2), "divprune").startswith("Linear is not supported")
    assert why_unsupported(model, "divprune") is None
    assert "audio" in why_unsupported(model, "audio_pool")
    assert "not a registered method" in why_unsupported(model, "no_such_method")


def test_qwen2_5_omni_refuses_audio_interleaved_with_its_video():
    model, inputs = tiny("qwen2_5_omni")
    hooks = hook_count(model)
    refused = pytest.raises(ValueError, match="use_audio_in_video=False")
    with refused, compress(model, "divprune", keep=0.5), torch.no_grad():
        model(**inputs, use_audio_in_video=True)
    assert hook_count(model) == hooks
