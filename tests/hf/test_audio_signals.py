"""`cls_attention` from the audio encoders of Qwen2-Audio and Qwen2.5-Omni at the projector
stage: checked against the eager attention maps the model itself computes in its last encoder
layer (read through a registered transformers attention function), reduced as documented, on a
batch whose second clip is padded to an odd frame count; and SEATS' audio winDivPrune
(`seats_audio`) handing the language model what a hand-built reference hands it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hf_helpers import (
    PLACED,
    Capture,
    eager_spy,
    language_model_inputs,
    padded_clips,
    reference_sequence,
)
from torch import Tensor
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from reproductions import Compression, Method, Tokens
from reproductions.hf import compress, why_unsupported
from reproductions.hf.models import adapter_for
from reproductions.hf.tiny import AUDIO
from reproductions.ops import select

MAPS = eager_spy("eager_audio_spy")
AttentionMaskInterface.register("eager_audio_spy", eager_mask)  # the padding mask eager gets


@dataclass
class Recorder(Method):
    """Test-only projector method on audio: keeps every token and records what it was handed."""

    stage = "projector"
    modality = ("audio",)
    needs = ("cls_attention",)

    def __post_init__(self) -> None:
        self.seen: list[Tokens] = []

    def compress(self, tokens: Tokens) -> Compression:
        self.seen.append(tokens)
        return select(tokens, torch.arange(tokens.count).expand(tokens.batch, -1))


def sharp(family: str) -> tuple[torch.nn.Module, dict]:
    """A new tiny model of the family on `padded_clips`' prompt, its last encoder layer's query
    and key projections scaled up: at random init the maps are near uniform, where every
    reduction agrees."""
    model, inputs = padded_clips(family, fresh=True)
    attn = model.model.audio_tower.layers[-1].self_attn
    with torch.no_grad():
        for projection in (attn.q_proj, attn.k_proj):
            projection.weight.mul_(8)
    return model, inputs


def recorded(family: str, method: Recorder | None = None) -> tuple[list[Tokens], list[Tensor], list[int]]:
    """The tokens each audio span handed `method` (default: a `Recorder`), the eager maps of the
    last encoder layer's calls (Qwen2-Audio: one (clips, heads, F, F); Qwen2.5-Omni: one (1,
    heads, c, c) per chunk), and each clip's real frames."""
    model, inputs = sharp(family)
    tower = model.model.audio_tower
    tower.config._attn_implementation = "eager_audio_spy"
    method = method or Recorder()
    MAPS.clear()
    with compress(model, method), torch.no_grad():
        method.seen.clear()
        model(**inputs)
    last = tower.layers[-1].self_attn
    mel = inputs["feature_attention_mask"].sum(-1)
    return method.seen, [w for m, w in MAPS if m is last], ((mel - 1) // 2 + 1).tolist()


def expected(family: str, maps: list[Tensor], frames: list[int], padded_queries: bool = False) -> list[Tensor]:
    """Per clip (heads, placed tokens): the attention each real frame receives, averaged over
    its window's real query rows (`padded_queries`: over every row of the map, the padded
    frames' too), then over each pooling pair; an odd last frame left out."""
    if len(maps) == 1:  # Qwen2-Audio: a clip per row, its real frames first
        (weights,) = maps
        per_clip = [
            weights[c, :, :, :n].mean(-2) if padded_queries else weights[c, :, :n, :n].mean(-2)
            for c, n in enumerate(frames)
        ]
    else:  # Qwen2.5-Omni: chunks packed in order, each clip's real frames only
        chunks, per_clip = iter(weights[0].mean(-2) for weights in maps), []
        for n in frames:
            parts = [next(chunks)]
            while sum(p.shape[-1] for p in parts) < n:
                parts.append(next(chunks))
            per_clip.append(torch.cat(parts, dim=-1))
    return [a[:, : a.shape[-1] // 2 * 2].view(a.shape[0], -1, 2).mean(-1) for a in per_clip]


@pytest.mark.parametrize("family", ["qwen2_audio", "qwen2_5_omni"])
def test_cls_attention_is_the_last_encoder_layers_own_attention_pooled_per_clip(family):
    seen, maps, frames = recorded(family)
    assert frames[1] % 2 == 1 and [n // 2 for n in frames] == PLACED[family]
    got = {t.count: t.cls_attention[0] for t in seen}  # the two clips place 32 / 25 or 16 / 13
    assert sorted(got) == sorted(PLACED[family]) and all(t.batch == 1 for t in seen)
    want = expected(family, maps, frames)
    for clip, n in enumerate(PLACED[family]):
        torch.testing.assert_close(got[n].float(), want[clip], rtol=1e-5, atol=1e-7)
    if family == "qwen2_audio":  # padded frames as queries would give another signal
        wrong = expected(family, maps, frames, padded_queries=True)[1]
        assert not torch.allclose(wrong, want[1], rtol=1e-3, atol=1e-5)


def winDivPrune(x: Tensor, a: Tensor, kept: int) -> list[int]:
    """SEATS' weighted_MMD_batch for one window, written out: distance (1 - cos(x_i, x_j)) * a_j;
    the first pick maximises each column's second-smallest distance, then the farthest from
    the picks, by the running minimum (picks set to -1)."""
    n = len(x)
    if kept >= n:
        return list(range(n))
    unit = x / (x.norm(dim=-1, keepdim=True) + 1e-8)
    dist = (1.0 - unit @ unit.T) * a[None, :]
    picks = [int(dist.topk(2, dim=0, largest=False).values[1].argmax())]
    low = dist[picks[0]].clone()
    low[picks[0]] = -1.0
    while len(picks) < kept:
        picks.append(int(low.argmax()))
        low = torch.minimum(low, dist[picks[-1]])
        low[picks[-1]] = -1.0
    return sorted(picks)


def attention_by_hand(model, inputs: dict) -> list[Tensor]:
    """Per Qwen2-Audio clip, (placed tokens,): its last encoder layer's softmax over its real
    frames (the layer's input normed and projected by hand), averaged over heads and the real
    query rows, then over each pooling pair."""
    tower, entering = model.model.audio_tower, []
    attn = tower.layers[-1].self_attn
    hook = attn.register_forward_pre_hook(lambda m, a, k: entering.append(k["hidden_states"]), with_kwargs=True)
    try:
        language_model_inputs(model, inputs)
    finally:
        hook.remove()
    out = []
    with torch.no_grad():
        for clip, mel in enumerate(inputs["feature_attention_mask"].sum(-1).tolist()):
            x = entering[0][clip, : (mel - 1) // 2 + 1]
            q, k = (p(x).view(len(x), attn.num_heads, -1).transpose(0, 1) for p in (attn.q_proj, attn.k_proj))
            a = ((q @ k.transpose(-1, -2)) * attn.head_dim**-0.5).softmax(-1).mean(0).mean(0)
            out.append(a[: len(a) // 2 * 2].view(-1, 2).mean(-1))
    return out


def test_seats_audio_hands_qwen2_audio_the_hand_built_input():
    """ratio 0.5 in windows of 16 tokens: the 32-token clip keeps 8 + 8, the padded 25-token one
    8 + round(4.5) = 4 (Python rounds halves to even), picked by winDivPrune on each window's
    LLM-input rows weighted by the attention written out by hand; kept tokens keep their
    placeholders' position ids."""
    model, inputs = sharp("qwen2_audio")
    lm = language_model_inputs(model, inputs)
    embeds, ids, mask = lm["inputs_embeds"], inputs["input_ids"], inputs["attention_mask"]
    replaced, unweighted = [], []
    for row, a in enumerate(attention_by_hand(model, inputs)):
        columns = (ids[row] == AUDIO).nonzero().flatten()
        x = embeds[row, columns]
        kept, plain = [], []
        for start in range(0, len(x), 16):
            window = slice(start, start + 16)
            count = max(1, min(len(x[window]), round(0.5 * len(x[window]))))
            kept += [start + i for i in winDivPrune(x[window].float(), a[window], count)]
            plain += [start + i for i in winDivPrune(x[window].float(), torch.ones_like(a[window]), count)]
        kept = torch.tensor(kept)
        replaced.append((row, int(columns[0]), len(columns), x[kept], kept))
        unweighted.append(plain)
    assert [len(k) for *_, k in replaced] == [16, 12]
    assert unweighted != [k.tolist() for *_, k in replaced]  # the attention changes the picks
    positions = lm.get("position_ids")
    positions = torch.arange(ids.shape[1]).expand(ids.shape) if positions is None else positions
    want, want_mask, want_positions = reference_sequence(embeds, positions, mask, replaced)
    with (
        compress(model, "seats_audio", ratio=0.5, window=16),
        torch.no_grad(),
        Capture(adapter_for(model).language_model) as capture,  # after the stage's own hook
    ):
        model(**inputs)
    got = capture.calls[0]
    for row in range(2):  # each row's real tokens in order (where padding lies is the stage's)
        real, wanted = got["attention_mask"][row].bool(), want_mask[row].bool()
        assert torch.equal(got["inputs_embeds"][row, real], want[row, wanted])
        assert torch.equal(got["position_ids"][row, real], want_positions[row, wanted])


def test_an_audio_method_reads_no_vision_signal_and_refuses_what_the_audio_encoder_lacks():
    """The audio encoder supplies `cls_attention` only: an audio method that needs keys is
    refused with what the stage supplies, in both families."""
    keyed = type("Keyed", (Recorder,), {"needs": ("cls_attention", "keys")})()
    for family in ("qwen2_audio", "qwen2_5_omni"):
        model, _ = padded_clips(family)
        assert why_unsupported(model, Recorder()) is None
        assert why_unsupported(model, keyed).endswith(
            "cannot supply at the projector stage (it supplies: cls_attention, encoder_attention, frames, text)"
        )


@dataclass
class MapRecorder(Recorder):
    """Test-only: reads the full map too (SA-MAP's signal)."""

    needs = ("cls_attention", "encoder_attention")


@pytest.mark.parametrize("family", ["qwen2_audio", "qwen2_5_omni"])
def test_encoder_attention_is_the_last_encoder_layers_own_map_over_each_clips_placed_frames(family):
    """`encoder_attention` of each clip: the eager map among its 2n placed frames, each row the
    softmax over the window's real frames (Qwen2-Audio: the clip; Qwen2.5-Omni: each chunk, 0
    between chunks); its row means are `cls_attention` before pooling."""
    seen, maps, frames = recorded(family, MapRecorder())
    got = {t.count: t.encoder_attention[0] for t in seen}
    pooled = expected(family, maps, frames)  # cls_attention, read from the same maps here
    for clip, n in enumerate(PLACED[family]):
        t = next(t for t in seen if t.count == n)
        torch.testing.assert_close(t.cls_attention[0].float(), pooled[clip], rtol=1e-5, atol=1e-7)
    if family == "qwen2_audio":
        want = [maps[0][c, :, : n // 2 * 2, : n // 2 * 2] for c, n in enumerate(frames)]
    else:
        chunks, want = iter(w[0] for w in maps), []
        for n in frames:
            parts = [next(chunks)]
            while sum(p.shape[-1] for p in parts) < n:
                parts.append(next(chunks))
            whole = torch.stack([torch.block_diag(*[p[h] for p in parts]) for h in range(parts[0].shape[0])])
            want.append(whole[:, : n // 2 * 2, : n // 2 * 2])
        assert len(maps) > len(frames)  # several chunks: the off-chunk blocks are zeros
    for clip, n in enumerate(PLACED[family]):
        torch.testing.assert_close(got[n].float(), want[clip].float(), rtol=1e-5, atol=1e-7)
