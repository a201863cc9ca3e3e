"""The encoder stage inside Qwen2-Audio's Whisper encoder: A-ToMe and audio attention pruning on
whole pooling pairs (units) of each clip's real frames. The batch pads its second clip (102 of
128 mel frames: 51 real frames, an odd one, and 25 placed tokens), so padding is exercised."""

from __future__ import annotations

import pytest
import torch
from hf_helpers import hook_count, language_model_inputs, logits_from, reference_sequence, tiny
from torch import Tensor, nn

from reproductions import Method, Tokens, get
from reproductions.hf import compress, why_unsupported
from reproductions.hf.tiny import AUDIO
from reproductions.hf.tiny.parts import prompts

CASES = [
    ("atome", {"r": 3}, (0, 1)),  # every layer: layer 1 attends with log(sizes)
    ("atome", {"r": 5, "schedule": [0, 5]}, (1,)),
    ("audio_attention_prune", {"keep_ratio": 0.5, "layers": (0, 1)}, (0, 1)),
    ("audio_attention_prune", {"keep_ratio": 0.6, "layers": (1,)}, (1,)),
]


def padded_clips(attn: str) -> tuple[nn.Module, dict]:
    """The tiny Qwen2-Audio with two clips: 128 mel frames (64 frames, 32 units) and 102 real of
    128 (51 frames: units 0-24 and frame 50 real, the rest padding)."""
    model, inputs = tiny("qwen2_audio", attn)
    ids, mask = prompts([[(AUDIO, 32)], [(AUDIO, 25)]], [7, 5], torch.Generator().manual_seed(1))
    feature_mask = torch.ones(2, 128, dtype=torch.long)
    feature_mask[1, 102:] = 0
    features = inputs["input_features"].clone()
    features[1, :, 102:] = 0
    return model, {"input_ids": ids, "attention_mask": mask, "input_features": features,
                   "feature_attention_mask": feature_mask}


def by_hand(model: nn.Module, inputs: dict, method: Method, acting: tuple[int, ...]) -> list[tuple[Tensor, Tensor]]:
    """Per clip, its kept units' LLM tokens and their unit indices: the encoder layers run on the
    clip's real frames alone (padding left out, so no mask), the method after attention in the
    `acting` layers on the real units (two frames concatenated, keys and attention received
    averaged over the pair), later layers adding log(size) to the logits; then each kept unit's
    two frames averaged (the pooling), normed and projected."""
    tower = model.model.audio_tower
    entering = []
    hook = tower.layers[0].register_forward_pre_hook(lambda m, a, k: entering.append(a[0]), with_kwargs=True)
    try:
        language_model_inputs(model, inputs)
    finally:
        hook.remove()
    frames = ((inputs["feature_attention_mask"].sum(-1) - 1) // 2 + 1).tolist()
    out = []
    for r, n in enumerate(frames):
        h, total, odd = entering[0][r : r + 1, :n], None, n % 2
        with torch.no_grad():
            for i, layer in enumerate(tower.layers):
                attn, d = layer.self_attn, h.shape[-1]
                x = layer.self_attn_layer_norm(h)
                bias = None
                if total is not None:
                    bias = torch.cat([total.sizes.log().repeat_interleave(2, dim=1), torch.zeros(1, odd)], 1)[:, None, None]
                hidden = h + attn(hidden_states=x, attention_mask=bias)[0]
                if i in acting:
                    k = hidden.shape[1] // 2
                    keys = attn.k_proj(x)[0, : 2 * k].view(2 * k, attn.num_heads, -1).mean(1).view(1, k, 2, -1).mean(2)
                    q, kk = (p(x).view(1, -1, attn.num_heads, attn.head_dim).transpose(1, 2) for p in (attn.q_proj, attn.k_proj))
                    received = ((q * attn.scaling) @ kk.transpose(-1, -2)).softmax(-1).mean(2)[:, :, : 2 * k]
                    tokens = Tokens(features=hidden[:, : 2 * k].reshape(1, k, 2 * d), keys=keys, layout=(k,),
                                    attention=received.view(1, -1, k, 2).mean(-1)[:, :, None],
                                    sizes=None if total is None else total.sizes)
                    comp = method(tokens)
                    hidden = torch.cat([comp.features.reshape(1, -1, d), hidden[:, 2 * k :]], dim=1)
                    total = comp if total is None else total.then(comp)
                h = hidden + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(hidden))))
            units = h[0, : h.shape[1] - odd].view(-1, 2, d).mean(1)
            out.append((model.model.multi_modal_projector(tower.layer_norm(units)), total.positions[0]))
    return out


def expected_logits(model: nn.Module, inputs: dict, clips: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """The language model on the prompt whose clips hold only the kept tokens, each at its
    unit's placeholder position; and which rows are real."""
    lm = language_model_inputs(model, inputs)
    embeds, ids, mask = lm["inputs_embeds"], inputs["input_ids"], inputs["attention_mask"]
    replaced = []
    for r, (tokens, kept) in enumerate(clips):
        columns = (ids[r] == AUDIO).nonzero().flatten()
        replaced.append((r, int(columns[0]), len(columns), tokens, kept))
    positions = torch.arange(ids.shape[1]).expand(ids.shape)
    new, new_mask, new_pos = reference_sequence(embeds, positions, mask, replaced)
    return logits_from(model, new, new_mask, new_pos), new_mask.bool()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("name,params,acting", CASES, ids=[f"{n}-{'-'.join(map(str, a))}" for n, _, a in CASES])
def test_encoder_stage_equals_the_whisper_layers_run_by_hand(name, params, acting, attn):
    model, inputs = padded_clips(attn)
    options = {key: value for key, value in params.items() if key != "schedule"}
    schedule = params.get("schedule")
    method = get(name, **({**options, "r": max(schedule)} if schedule else options))
    clips = by_hand(model, inputs, get(name, **options), acting)
    expected, real = expected_logits(model, inputs, clips)
    with compress(model, method, schedule=schedule) as report, torch.no_grad():
        logits = model(**inputs).logits
    assert report.records[0].media_before == [32, 25]
    assert report.records[0].media_after == [len(kept) for _, kept in clips]
    torch.testing.assert_close(logits[real], expected[real], rtol=0, atol=1e-5)


def test_padding_is_never_merged_nor_counted():
    """Row 1 has 25 real units. Merging 12 pairs there must merge every real pair (0, 1) ...
    (22, 23) and leave unit 24 alone; pruning to 0.5 keeps ceil(0.5 * 25) = 13 units, not
    ceil(0.5 * 32) = 16 (the padded units counted)."""
    model, inputs = padded_clips("sdpa")
    clips = by_hand(model, inputs, get("atome", r=12), (1,))
    assert clips[1][1].tolist() == list(range(0, 25, 2))
    with compress(model, "atome", r=12, schedule=[0, 12]) as report, torch.no_grad():
        model(**inputs)
    assert report.records[0].media_after == [32 - 12, 13]
    with compress(model, "audio_attention_prune", keep_ratio=0.5, layers=(1,)) as report, torch.no_grad():
        model(**inputs)
    assert report.records[0].media_after == [16, 13]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("name,params", [("atome", {"r": 0}), ("audio_attention_prune", {"keep_ratio": 1.0, "layers": (0, 1)})])
def test_keeping_every_unit_is_bit_identical(name, params, attn):
    model, inputs = padded_clips(attn)
    hooks = hook_count(model)
    with torch.no_grad():
        logits = model(**inputs).logits
        tokens = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        with compress(model, name, **params) as report:
            kept_logits = model(**inputs).logits
            kept_tokens = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert torch.equal(kept_logits, logits) and torch.equal(kept_tokens, tokens)
    assert all(r.media_after == r.media_before == [32, 25] for r in report.records)
    assert hook_count(model) == hooks
    assert not any("forward" in vars(layer) for layer in model.model.audio_tower.layers)


def test_layers_the_encoder_lacks_and_a_schedule_without_r_are_refused():
    model, inputs = tiny("qwen2_audio")
    reason = why_unsupported(model, get("audio_attention_prune"))
    assert reason.endswith("layers=(3, 6, 9), but the encoder has 2 layers: pass layers between 0 and 1")
    with pytest.raises(ValueError, match="has no r"), compress(model, "audio_attention_prune", layers=(1,), schedule=[1, 1]):
        pass
    assert why_unsupported(model, get("atome", r=2)) is None
