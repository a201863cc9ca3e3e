"""MustDrop in the tiny LLaVA: the encoder part merges 2x2 cells of the CLIP grid after layer 0
(the encoder stage hands it the grid), and the llm part filters, at each of its layers, the
merged tokens the encoder part handed on, never dropping the key set the encoder's last layer
picked; the first decoding step sees the cache the released code leaves (every token before the
first read layer, the kept ones from it on); the model leaves the context unchanged."""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from hf_helpers import Capture, hook_count, run_layers, tiny

from reproductions import get
from reproductions.hf import compress
from reproductions.image.mustdrop import MustDropFilter, MustDropKeys, MustDropMerge

#: every cell merges (threshold -1); the filter keeps a token whose total or peak attention is
#: at least average (individual 1: every peak is below it, so the total alone decides)
PARAMS = {"threshold": -1.0, "window": 2, "key_layer": 2, "key_fraction": 0.25, "layers": (1, 3),
          "global_threshold": 0.2, "individual_threshold": 1.0}


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
    merged = MustDropMerge(threshold=-1.0, window=2, key_layer=2)
    with compress(model, merged) as report, Capture(model.model.language_model) as capture:
        model(**inputs)
    handed = capture.calls[0]["inputs_embeds"]
    assert report.records[0].media_after == [4, 8]  # 16 patches -> 4 cells per image
    with (
        compress(model, get("mustdrop", **PARAMS)) as report,
        Capture(model.model.language_model) as capture,
    ):
        model(**inputs)
    encoder, first, second = report.records
    assert (encoder.stage, first.stage, second.stage) == ("encoder", "llm", "llm")
    assert torch.equal(capture.calls[0]["inputs_embeds"], handed)  # the encoder part's sequence
    assert first.media_before == encoder.media_after == [4, 8]
    assert seen[:2] == [4, 8]  # at layer 1, each row's merged tokens (one image, two images)
    assert second.media_before == first.media_after and sum(first.media_after) < 12
    assert sum(second.media_after) <= sum(second.media_before)
    assert hook_count(model) == hooks
    assert torch.equal(model(**inputs).logits, before)


#: sharper attention (q and k x 6) so the filter tells the 4 merged tokens apart: at layer 1
#: their shares of the prompt's attention are (0.34, 0.27, 0.23, 0.16), peaks (0.16, 0.14, 0.13,
#: 0.08); the key set (a quarter: one token) is the last, the lowest in both
SHARP = {"threshold": -1.0, "window": 2, "key_layer": 2, "key_fraction": 0.25, "layers": (2, 3),
         "global_threshold": 0.31, "individual_threshold": 0.14}


def sharp_row():
    """Row 0 of the tiny LLaVA batch (one image), its padding removed, on a copy of the model,
    eager attention, with its decoder's queries and keys scaled by 6."""
    model, inputs = tiny("llava", "eager")
    model = copy.deepcopy(model)
    for layer in model.model.language_model.layers:
        layer.self_attn.q_proj.weight.data.mul_(6.0)
        layer.self_attn.k_proj.weight.data.mul_(6.0)
    ids = inputs["input_ids"][:1, inputs["attention_mask"][0].bool()]
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": inputs["pixel_values"][:1]}


@torch.no_grad()
def test_the_key_set_of_the_last_encoder_layer_survives_the_filter(monkeypatch):
    model, inputs = sharp_row()
    keys, steps = [], []
    pick, drop = MustDropKeys.compress, MustDropFilter.compress

    def spy_keys(self, tokens):
        out = pick(self, tokens)
        keys.append(out.scores)
        return out

    def spy_filter(self, tokens):
        out = drop(self, tokens)
        bare = drop(self, replace(tokens, scores=torch.zeros_like(tokens.scores)))
        steps.append((tokens.scores, out.positions, bare.positions))
        return out

    monkeypatch.setattr(MustDropKeys, "compress", spy_keys)
    monkeypatch.setattr(MustDropFilter, "compress", spy_filter)
    with compress(model, get("mustdrop", **SHARP)) as report:
        model(**inputs)
    assert len(keys) == 1 and keys[0].shape == (1, 5)  # layer 2, on the [CLS] and 4 merged tokens
    scores, kept, bare = steps[0]
    assert torch.equal(scores[0], keys[0][0, 1:])  # the key set, carried to the llm part
    assert scores[0].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert bare.tolist() == [[0, 1]] and kept.tolist() == [[0, 1, 3]]  # token 3 stays only as a key
    assert [r.media_after for r in report.records] == [[4], [3], [3]]


@torch.no_grad()
def test_the_first_decoding_step_sees_the_released_cache():
    """Prefill: layers 0-1 on every token, layer 2 on the tokens layer 1's attention kept, layer
    3 on those layer 2's kept. The released cache then holds every token at layer 0 (before the
    first read layer 1) and only the finally kept ones from layer 1 on."""
    model, inputs = sharp_row()
    method = get("mustdrop", **SHARP)
    lm = model.model.language_model
    with compress(model, method.parts()[0]), Capture(lm) as capture:
        model(**inputs)
    h0, pos0 = capture.calls[0]["inputs_embeds"], capture.calls[0]["position_ids"]
    n, start = h0.shape[1], int((inputs["input_ids"][0] == model.config.image_token_id).nonzero()[0])
    media = torch.arange(start, start + 4)  # the 4 merged tokens, at the image's start
    kept = media[[0, 1, 3]]  # as the test above finds (both steps keep them)
    keep = torch.cat([torch.arange(start), kept, torch.arange(start + 4, n)])
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    h = run_layers(lm, h0, pos0, lm.layers[:2], causal)
    short = torch.ones(len(keep), len(keep), dtype=torch.bool).tril()
    h = run_layers(lm, h[:, keep], pos0[:, keep], lm.layers[2:], short)
    with compress(model, method):
        out = model.generate(**inputs, max_new_tokens=2, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
    torch.testing.assert_close(out.logits[0][0], model.lm_head(lm.norm(h))[0, -1], rtol=0, atol=1e-5)

    token = out.sequences[:, -2:-1]
    h = torch.cat([h0, lm.embed_tokens(token)], dim=1)
    pos = torch.cat([pos0, torch.tensor([[inputs["input_ids"].shape[1]]])], dim=1)
    dropped = media[~torch.isin(media, kept)]
    rows = torch.cat([keep, torch.tensor([n])])

    def step(cut_from: int):
        """The decoding step with the cache of layers >= `cut_from` (< 2) holding the kept only."""
        x = h
        for j in range(2):
            allowed = torch.ones(n + 1, n + 1, dtype=torch.bool).tril()
            allowed[n, dropped] = j < cut_from
            x = run_layers(lm, x, pos, lm.layers[j : j + 1], allowed)
        x = run_layers(lm, x[:, rows], pos[:, rows], lm.layers[2:], torch.ones(len(rows), len(rows), dtype=torch.bool).tril())
        return model.lm_head(lm.norm(x))[0, -1]

    released = step(1)
    torch.testing.assert_close(out.logits[1][0], released, rtol=0, atol=1e-5)
    for other in (step(0), step(2)):  # every layer cut (PruneVid's), or only the segments' own
        assert not torch.allclose(released, other, atol=1e-5), "the cut must matter at layers 0 and 1"
