"""The encoder stage inside the audio encoders of Qwen2-Audio and Qwen2.5-Omni: A-ToMe and audio
attention pruning on whole pooling pairs (units) of each attention window's real frames (a
Qwen2-Audio clip, a Qwen2.5-Omni chunk), checked against the layers run by hand window by
window. Each batch pads its second clip to an odd frame count, so padding is exercised."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hf_helpers import (
    PLACED,
    hook_count,
    language_model_inputs,
    logits_from,
    padded_clips,
    reference_sequence,
    tiny,
)
from torch import Tensor, nn

from reproductions import Method, Tokens, get
from reproductions.hf import compress, why_unsupported
from reproductions.hf.tiny import AUDIO

CASES = [
    ("atome", {"r": 3}, (0, 1)),  # every layer: layer 1 attends with log(sizes)
    ("atome", {"r": 5, "schedule": [0, 5]}, (1,)),
    ("audio_attention_prune", {"keep_ratio": 0.5, "layers": (0, 1)}, (0, 1)),
    ("audio_attention_prune", {"keep_ratio": 0.6, "layers": (1,)}, (1,)),
]
FAMILIES = ["qwen2_audio", "qwen2_5_omni"]
def windows(model: nn.Module, inputs: dict) -> list[tuple[int, int, int, int]]:
    """(clip, row, first frame, frames) of every attention window of the encoder's input:
    Qwen2-Audio's clips (rows), Qwen2.5-Omni's chunks of 2 * n_window mel frames, packed."""
    tower, found, start = model.model.audio_tower, [], 0
    for clip, mel in enumerate(inputs["feature_attention_mask"].sum(-1).tolist()):
        if not hasattr(tower, "n_window"):
            found.append((clip, clip, 0, (mel - 1) // 2 + 1))
            continue
        for first in range(0, mel, 2 * tower.n_window):
            frames = (min(2 * tower.n_window, mel - first) - 1) // 2 + 1
            found.append((clip, 0, start, frames))
            start += frames
    return found


def window_by_hand(layers: nn.ModuleList, h: Tensor, method: Method, acting: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """One window's frames h (1, n, D) through the encoder layers, softmax attention written
    out (later layers adding log(size)), the method after attention in the `acting` layers on
    the units (two frames concatenated, keys and attention received averaged over the pair; an
    int r capped at the pairs); its kept units' pooled frames and their unit indices."""
    total, odd = None, h.shape[1] % 2
    for i, layer in enumerate(layers):
        attn, d = layer.self_attn, h.shape[-1]
        x = layer.self_attn_layer_norm(h)
        q, k, v = (p(x).view(1, -1, attn.num_heads, attn.head_dim).transpose(1, 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        logits = (q @ k.transpose(-1, -2)) * attn.scaling
        if total is not None:
            logits = logits + torch.cat([total.sizes.log().repeat_interleave(2, dim=1), torch.zeros(1, odd)], 1)[:, None]
        hidden = h + attn.out_proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(1, h.shape[1], -1))
        if i in acting:
            n = hidden.shape[1] // 2
            keys = k.transpose(1, 2)[0, : 2 * n].mean(1).view(1, n, 2, -1).mean(2)
            received = (q @ k.transpose(-1, -2) * attn.scaling).softmax(-1).mean(2)[:, :, : 2 * n]
            tokens = Tokens(features=hidden[:, : 2 * n].reshape(1, n, 2 * d), keys=keys, layout=(n,),
                            attention=received.view(1, -1, n, 2).mean(-1)[:, :, None],
                            sizes=None if total is None else total.sizes)
            capped = dataclasses.replace(method, r=min(method.r, n // 2)) if isinstance(getattr(method, "r", None), int) else method
            comp = capped(tokens)
            hidden = torch.cat([comp.features.reshape(1, -1, d), hidden[:, 2 * n :]], dim=1)
            total = comp if total is None else total.then(comp)
        h = hidden + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(hidden))))
    kept = torch.arange(h.shape[1] // 2) if total is None else total.positions[0]
    return h[0, : h.shape[1] - odd].view(-1, 2, h.shape[-1]).mean(1), kept


def by_hand(model: nn.Module, inputs: dict, method: Method, acting: tuple[int, ...]) -> list[tuple[Tensor, Tensor]]:
    """Per clip, its kept units' LLM tokens and their unit indices: every window of real frames
    run on its own (padding left out, so no mask), its kept units' frames averaged (the pooling),
    normed and projected as the family does."""
    tower = model.model.audio_tower
    entering = []
    hook = tower.layers[0].register_forward_pre_hook(lambda m, a, k: entering.append(a[0]), with_kwargs=True)
    try:
        language_model_inputs(model, inputs)
    finally:
        hook.remove()
    hidden = entering[0] if entering[0].dim() == 3 else entering[0][None]
    clips: dict[int, list[tuple[Tensor, Tensor, int]]] = {}
    with torch.no_grad():
        for clip, row, start, frames in windows(model, inputs):
            units, kept = window_by_hand(tower.layers, hidden[row : row + 1, start : start + frames], method, acting)
            clips.setdefault(clip, []).append((units, kept, frames // 2))
        out = []
        for parts in clips.values():
            units = torch.cat([u for u, _, _ in parts])
            offsets = torch.tensor([0] + [n for _, _, n in parts]).cumsum(0)
            kept = torch.cat([k + offsets[i] for i, (_, k, _) in enumerate(parts)])
            if hasattr(tower, "proj"):  # Qwen2.5-Omni: the encoder's own norm and projection
                out.append((tower.proj(tower.ln_post(units)), kept))
            else:
                out.append((model.model.multi_modal_projector(tower.layer_norm(units)), kept))
    return out


def expected_logits(model: nn.Module, inputs: dict, clips: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """The language model on the prompt whose clips hold only the kept tokens, each at its
    unit's placeholder position id; and which rows are real."""
    lm = language_model_inputs(model, inputs)
    embeds, ids, mask = lm["inputs_embeds"], inputs["input_ids"], inputs["attention_mask"]
    replaced = []
    for r, (tokens, kept) in enumerate(clips):
        columns = (ids[r] == AUDIO).nonzero().flatten()
        replaced.append((r, int(columns[0]), len(columns), tokens, kept))
    positions = lm.get("position_ids")
    positions = torch.arange(ids.shape[1]).expand(ids.shape) if positions is None else positions
    new, new_mask, new_pos = reference_sequence(embeds, positions, mask, replaced)
    return logits_from(model, new, new_mask, new_pos), new_mask.bool()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name,params,acting", CASES, ids=[f"{n}-{'-'.join(map(str, a))}" for n, _, a in CASES])
def test_encoder_stage_equals_the_encoder_layers_run_by_hand(name, params, acting, family, attn):
    model, inputs = padded_clips(family, attn)
    options = {key: value for key, value in params.items() if key != "schedule"}
    schedule = params.get("schedule")
    method = get(name, **({**options, "r": max(schedule)} if schedule else options))
    clips = by_hand(model, inputs, get(name, **options), acting)
    expected, real = expected_logits(model, inputs, clips)
    with compress(model, method, schedule=schedule) as report, torch.no_grad():
        logits = model(**inputs).logits
    assert report.records[0].media_before == PLACED[family]
    assert report.records[0].media_after == [len(kept) for _, kept in clips]
    torch.testing.assert_close(logits[real], expected[real], rtol=0, atol=1e-5)


def test_padding_is_never_merged_nor_counted():
    """Row 1 of Qwen2-Audio has 25 real units. Merging 12 pairs there must merge every real
    pair (0, 1) ... (22, 23) and leave unit 24 alone; pruning to 0.5 keeps ceil(0.5 * 25) = 13
    units, not ceil(0.5 * 32) = 16 (the padded units counted). Qwen2.5-Omni's chunks of that
    clip hold 4, 4, 4 and 1 real units: a pair merged in each of the first three leaves 10."""
    model, inputs = padded_clips("qwen2_audio", "sdpa")
    clips = by_hand(model, inputs, get("atome", r=12), (1,))
    assert clips[1][1].tolist() == list(range(0, 25, 2))
    with compress(model, "atome", r=12, schedule=[0, 12]) as report, torch.no_grad():
        model(**inputs)
    assert report.records[0].media_after == [32 - 12, 13]
    with compress(model, "audio_attention_prune", keep_ratio=0.5, layers=(1,)) as report, torch.no_grad():
        model(**inputs)
    assert report.records[0].media_after == [16, 13]
    model, inputs = padded_clips("qwen2_5_omni", "sdpa")
    with compress(model, "atome", r=1, schedule=[0, 1]) as report, torch.no_grad():
        model(**inputs)
    assert report.records[0].media_after == [16 - 4, 13 - 3]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name,params", [("atome", {"r": 0}), ("audio_attention_prune", {"keep_ratio": 1.0, "layers": (0, 1)})])
def test_keeping_every_unit_is_bit_identical(name, params, family, attn):
    model, inputs = padded_clips(family, attn)
    hooks = hook_count(model)
    with torch.no_grad():
        logits = model(**inputs).logits
        tokens = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        with compress(model, name, **params) as report:
            kept_logits = model(**inputs).logits
            kept_tokens = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert torch.equal(kept_logits, logits) and torch.equal(kept_tokens, tokens)
    assert all(r.media_after == r.media_before == PLACED[family] for r in report.records)
    assert hook_count(model) == hooks
    assert not any("forward" in vars(layer) for layer in model.model.audio_tower.layers)


def test_layers_the_encoder_lacks_and_a_schedule_without_r_are_refused():
    model, inputs = tiny("qwen2_audio")
    reason = why_unsupported(model, get("audio_attention_prune"))
    assert reason.endswith("layers=(3, 6, 9), but the encoder has 2 layers: pass layers between 0 and 1")
    with pytest.raises(ValueError, match="has no r"), compress(model, "audio_attention_prune", layers=(1,), schedule=[1, 1]):
        pass
    assert why_unsupported(model, get("atome", r=2)) is None


def test_padding_before_real_frames_is_refused_and_leaves_the_model_untouched():
    """The stage reads each clip's real frames as a prefix; an encoder mask that hides frames
    amid real ones is refused with what to pass, and the exception leaves no hook behind."""
    model, inputs = padded_clips("qwen2_audio", "sdpa")
    tower = model.model.audio_tower
    allowed = torch.ones(2, 1, 64, 64, dtype=torch.bool)
    allowed[1, :, :, 10:20] = False
    hooks = hook_count(model)
    with torch.no_grad():
        before = tower(inputs["input_features"], attention_mask=allowed).last_hidden_state
        with pytest.raises(ValueError, match="ones of each clip before its zeros"), compress(model, "atome", r=2):
            tower(inputs["input_features"], attention_mask=allowed)
        after = tower(inputs["input_features"], attention_mask=allowed).last_hidden_state
    assert torch.equal(before, after) and hook_count(model) == hooks
    assert not any("forward" in vars(layer) for layer in tower.layers)
