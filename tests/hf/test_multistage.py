"""A method that spans two stages (PruneVid, HoliTom: merging before the LLM, pruning or merging
inside it) runs both in one context, the later stage on the sequence the earlier one handed on: its logits, its first
decoding step and its loss equal the decoder run by hand; both stages record every prefill in
every video family; every hook goes on exit, on an exception and when a stage fails to start;
the reason a cell cannot run is its first part's."""

from __future__ import annotations

import pytest
import torch
from hf_helpers import Capture, hook_count, run_layers, tiny

from reproductions import get
from reproductions.hf import compress, why_unsupported
from reproductions.hf.stages.llm import LlmStage
from reproductions.hf.tiny import VIDEO

#: every cell of the tiny video families: all static (tau -1), half of each group kept at K = 2
PRUNEVID = {"tau": -1.0, "alpha": 0.5, "layer": 2}
FAMILIES = ["llava_onevision_video", "qwen2_vl_video", "qwen2_5_vl_video", "qwen3_vl_video", "qwen2_5_omni"]


def one_row():
    """Row 0 of the tiny OneVision video batch (no padding): 3 text tokens, a video of 4 frames
    x 2 x 2 and its newline, 5 text tokens; eager attention."""
    model, inputs = tiny("llava_onevision_video", "eager")
    return model, {key: value[:1] for key, value in inputs.items()}


def handed_on(model, merge, inputs):
    """What the projector part alone hands the decoder: its input embeddings and position ids."""
    with compress(model, merge), Capture(model.model.language_model) as capture, torch.no_grad():
        model(**inputs)
    return capture.calls[0]["inputs_embeds"], capture.calls[0]["position_ids"]


def kept_by_hand(lm, h, k, media, after):
    """The media rows PruneVid's llm part keeps at layer K: layer K - 1's attention before RoPE,
    softmax over every column, its highest over heads and the rows `after`; one group (every
    token of the all-static window stands for all 4 frames), half of it kept."""
    attn = lm.layers[k - 1].self_attn
    x = lm.layers[k - 1].input_layernorm(h)
    n, d = h.shape[1], attn.head_dim
    q = attn.q_proj(x).view(1, n, -1, d).transpose(1, 2)
    keys = attn.k_proj(x).view(1, n, -1, d).transpose(1, 2)
    keys = keys.repeat_interleave(q.shape[1] // keys.shape[1], dim=1)
    probs = (q @ keys.transpose(-1, -2) * d**-0.5).softmax(-1)
    scores = probs[0][:, after][:, :, media].amax(dim=(0, 1))
    return media[scores.topk(len(media) // 2).indices.sort().values]


@torch.no_grad()
def test_the_llm_part_prunes_the_sequence_the_projector_part_handed_on():
    model, inputs = one_row()
    method = get("prunevid", **{**PRUNEVID, "layer": 3})
    k, lm = method.layer, model.model.language_model
    h0, pos0 = handed_on(model, method.parts()[0], inputs)
    n = h0.shape[1]  # 3 text + 4 static means (one window, 4 positions) + newline + 5 text
    assert n == 13 and pos0[0, :7].tolist() == [0, 1, 2, 3, 4, 5, 6]
    media, after = torch.arange(3, 7), torch.arange(7, n)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    h = run_layers(lm, h0, pos0, lm.layers[: k - 1], causal)
    kept = kept_by_hand(lm, h, k, media, after)
    assert kept.tolist() == [3, 6]  # layer 2's causal attention after RoPE would keep 4 and 5
    h = run_layers(lm, h, pos0, lm.layers[k - 1 : k], causal)
    keep = torch.cat([torch.arange(3), kept, after])
    h = run_layers(lm, h[:, keep], pos0[:, keep], lm.layers[k:], torch.ones(len(keep), len(keep), dtype=torch.bool).tril())
    expected = model.lm_head(lm.norm(h))

    with compress(model, method) as report:
        logits = model(**inputs).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    stages = [(r.stage, r.media_before, r.media_after, r.tokens_before, r.tokens_after) for r in report.records]
    assert stages == [("projector", [16], [4], [25], [13]), ("llm", [4], [2], [13], [11])]

    # the first decoding step: at layers < K too, the new row sees none of the dropped tokens
    with compress(model, method):
        out = model.generate(**inputs, max_new_tokens=2, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
    torch.testing.assert_close(out.logits[0][0], expected[0, -1], rtol=0, atol=1e-5)
    token = out.sequences[:, -2:-1]
    h = torch.cat([h0, lm.embed_tokens(token)], dim=1)
    pos = torch.cat([pos0, torch.tensor([[inputs["input_ids"].shape[1]]])], dim=1)
    dropped = media[~torch.isin(media, kept)]
    decoded = []
    for hidden in (True, False):
        allowed = torch.ones(n + 1, n + 1, dtype=torch.bool).tril()
        allowed[n, dropped] = not hidden
        step = run_layers(lm, h, pos, lm.layers[:k], allowed)
        rows = torch.cat([keep, torch.tensor([n])])
        step = run_layers(lm, step[:, rows], pos[:, rows], lm.layers[k:], torch.ones(len(rows), len(rows), dtype=torch.bool).tril())
        decoded.append(model.lm_head(lm.norm(step))[0, -1])
    torch.testing.assert_close(out.logits[1][0], decoded[0], rtol=0, atol=1e-5)
    assert not torch.allclose(decoded[0], decoded[1], atol=1e-5), "the hidden entries must matter"


@torch.no_grad()
def test_labels_follow_both_stages():
    model, inputs = one_row()
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == VIDEO, -100)
    with compress(model, "prunevid", **PRUNEVID):
        logits = model(**inputs).logits
        loss = model(**inputs, labels=labels).loss
    # the rows left: 3 text, 2 kept video tokens, the newline (a video placeholder: -100), 5 text
    kept = torch.cat([labels[0, :3], torch.full((3,), -100), labels[0, 20:]])[None]
    vocab = model.config.get_text_config().vocab_size
    expected = model.loss_function(logits=logits, labels=kept, vocab_size=vocab)
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-6)


#: (method, its parameters, the media tokens its llm part keeps of m)
TWO_STAGES = [
    ("prunevid", PRUNEVID, lambda m: m // 2),  # one group (all static), int(m / 2) of it
    ("holitom", {"retention": 0.5, "layer": 2, "r": 0.5}, lambda m: max(1, round(m / 2))),
]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name,params,kept", TWO_STAGES, ids=[case[0] for case in TWO_STAGES])
@torch.no_grad()
def test_both_stages_act_in_every_video_family(family, name, params, kept):
    """Fails if the llm stage is skipped, or sees the prompt instead of the shortened sequence."""
    model, inputs = tiny(family)
    hooks = hook_count(model)
    with compress(model, name, **params) as report:
        model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert hook_count(model) == hooks
    projector, llm = report.records
    assert (projector.stage, llm.stage) == ("projector", "llm")
    assert llm.media_before == projector.media_after and llm.tokens_before == projector.tokens_after
    assert all(m < n for m, n in zip(projector.media_after, projector.media_before, strict=True))
    assert llm.media_after == [kept(m) for m in llm.media_before]


@torch.no_grad()
def test_every_hook_goes_and_the_model_is_unchanged_after_a_failure():
    model, inputs = tiny("llava_onevision_video")
    hooks, state = hook_count(model), {k: v.clone() for k, v in model.state_dict().items()}
    before = model(**inputs).logits
    with pytest.raises(RuntimeError, match="body"), compress(model, "prunevid", **PRUNEVID):
        model(**inputs)
        raise RuntimeError("the body fails")
    assert hook_count(model) == hooks

    def broken(stage):
        raise RuntimeError("the llm stage cannot start")

    original = LlmStage.install_hooks
    LlmStage.install_hooks = broken
    try:
        with pytest.raises(RuntimeError, match="cannot start"), compress(model, "prunevid", **PRUNEVID):
            pass
    finally:
        LlmStage.install_hooks = original
    assert hook_count(model) == hooks
    with compress(model, "fastv", keep=0.5, layer=2):  # nothing of the failed context is left
        pass
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(model(**inputs).logits, before)


def test_a_context_of_several_stages_still_refuses_to_nest():
    model, _ = tiny("llava_onevision_video")
    nested = r"already inside compress\(\.\.\., 'prunevid'\)"
    with compress(model, "prunevid", **PRUNEVID), pytest.raises(ValueError, match=nested), compress(model, "fastv", keep=0.5, layer=2):
        pass


def test_the_reason_a_cell_cannot_run_is_its_first_parts():
    image, _ = tiny("llava")
    video, _ = tiny("llava_onevision_video")
    assert why_unsupported(image, "prunevid").startswith("prunevid.projector works on video tokens")
    reason = why_unsupported(video, get("prunevid", layer=11))
    assert reason.startswith("prunevid.llm.layer=11: the llm stage needs a decoder layer K in [0, 3]")
    with pytest.raises(ValueError, match="drop schedule="), compress(video, "prunevid", schedule=[1]):
        pass
