"""Compressed logits equal references built by hand: the compressed input embeddings and
position ids run through the plain language model (projector stage), or layers < K in full and
layers >= K on the kept rows (llm stage); Qwen2-VL's kept tokens keep their 3-D M-RoPE ids;
a left-padded batch equals its rows run one by one."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch
from hf_helpers import (
    Capture,
    LastRowTopK,
    causal_mask,
    language_model_inputs,
    logits_from,
    reference_sequence,
    tiny,
)

from reproductions import Tokens, get, methods
from reproductions.hf import compress
from reproductions.hf.tiny import IMAGE

PROJECTOR_METHODS = {
    "random": {"keep": 7},
    "pool": {"stride": 2, "mode": "avg"},
}


@pytest.mark.parametrize("name", sorted(PROJECTOR_METHODS))
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_llava_projector_stage_equals_hand_built_sequence(name, attn):
    model, inputs = tiny("llava", attn)
    method = get(name, **PROJECTOR_METHODS[name])
    with torch.no_grad():
        # the method on the features the projector reads (penultimate layer, [CLS] dropped)
        vision = model.model.vision_tower(inputs["pixel_values"], output_hidden_states=True)
        features = vision.hidden_states[-2][:, 1:]
        comp = method(Tokens(features=features, layout=(4, 4)))
        projected = model.model.multi_modal_projector(comp.features)
        lm = language_model_inputs(model, inputs)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    replaced, item = [], 0
    for row in range(ids.shape[0]):
        starts = [
            j
            for j in range(ids.shape[1])
            if ids[row, j] == IMAGE and (j == 0 or ids[row, j - 1] != IMAGE)
        ]
        for start in starts:
            replaced.append((row, start, 16, projected[item], comp.positions[item]))
            item += 1
    positions = torch.arange(ids.shape[1]).expand_as(ids)  # what LLaVA uses without position_ids
    embeds, new_mask, new_pos = reference_sequence(lm["inputs_embeds"], positions, mask, replaced)
    expected = logits_from(model, embeds, new_mask, new_pos)
    with compress(model, method) as report, torch.no_grad():
        logits = model(**inputs).logits
    valid = new_mask.bool()
    torch.testing.assert_close(logits[valid], expected[valid], rtol=0, atol=1e-6)
    assert report.records[0].media_after == [comp.count, 2 * comp.count]


def test_qwen2_vl_kept_tokens_keep_their_3d_position_ids():
    model, inputs = tiny("qwen2_vl")
    method = get("random", keep=3)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        original, _ = model.model.get_rope_index(
            ids,
            inputs["mm_token_type_ids"],
            image_grid_thw=inputs["image_grid_thw"],
            attention_mask=mask,
        )
        lm = language_model_inputs(model, inputs)
    media = lm["inputs_embeds"][ids == IMAGE].view(2, 8, -1)
    comp = method(Tokens(features=media, layout=(2, 4)))
    with compress(model, method), Capture(model.model.language_model) as capture, torch.no_grad():
        logits = model(**inputs).logits
    got = capture.calls[0]["position_ids"]
    replaced = []
    for row in range(2):
        start = int((ids[row] == IMAGE).nonzero()[0])
        replaced.append((row, start, 8, comp.features[row], comp.positions[row]))
    embeds, new_mask, new_pos = reference_sequence(lm["inputs_embeds"], original, mask, replaced)
    valid = new_mask.bool()
    for row in range(2):
        start = int((ids[row] == IMAGE).nonzero()[0])
        kept = start + comp.positions[row]
        # the kept image tokens carry the original (t, h, w) ids of their placeholders
        rows = got[:, row][:, valid[row]]
        assert any(
            torch.equal(rows[:, j : j + 3], original[:, row, kept])
            for j in range(rows.shape[1] - 2)
        )
    assert torch.equal(got[:, valid], new_pos[:, valid])
    expected = logits_from(model, embeds, new_mask, new_pos)
    torch.testing.assert_close(logits[valid], expected[valid], rtol=0, atol=1e-6)


def layer_keys(attn, normed, pe):
    """(1, n, kv heads * head_dim) keys of a decoder attention module after RoPE, by hand."""
    k = attn.k_proj(normed).view(1, normed.shape[1], -1, attn.head_dim).transpose(1, 2)
    cos, sin = (x.unsqueeze(1) for x in pe)
    half = k.shape[-1] // 2
    rotated = torch.cat([-k[..., half:], k[..., :half]], dim=-1)
    k = k * cos + rotated * sin
    return k.transpose(1, 2).reshape(1, normed.shape[1], -1)


def _llm_methods():
    found = [("last_row_topk", lambda: LastRowTopK(keep=5, layer=2))]
    for name, cls in methods().items():
        if (
            cls.stage == "llm"
            and not cls.trainable
            and any(f == "keep" for f in cls.__dataclass_fields__)
        ):
            params = {**cls.example, "keep": 5}
            if "layer" in cls.__dataclass_fields__:
                params["layer"] = 2
            found.append((name, lambda cls=cls, params=params: cls(**params)))
        elif cls.stage == "llm" and [f.name for f in fields(cls)] == ["layer"]:  # VTW: keeps none
            found.append((name, lambda cls=cls: cls(layer=2)))
    return found


@pytest.mark.parametrize("name,build", _llm_methods(), ids=[n for n, _ in _llm_methods()])
def test_llm_stage_equals_layers_run_by_hand(name, build):
    """Row 1 of the tiny LLaVA batch (two images, no padding): layers < K on every token,
    the method on eager attention of layer K - 1, layers >= K on the kept rows."""
    method = build()
    k = getattr(method, "layer", 2)  # compress's default K for methods without one
    eager, inputs = tiny("llava", "eager")
    sdpa, _ = tiny("llava", "sdpa")
    one = {key: value[1:] if key != "pixel_values" else value[1:] for key, value in inputs.items()}
    one["pixel_values"] = inputs["pixel_values"][1:]
    lm = eager.model.language_model
    with torch.no_grad():
        h = language_model_inputs(eager, one)["inputs_embeds"]
        embeds = h  # SparseVLM reads its raters from the query rows' input embeddings
        n = h.shape[1]
        pos = torch.arange(n)[None]
        pe = lm.rotary_emb(h, pos)
        full_mask = causal_mask(lm, h, pos)
        for layer in lm.layers[: k - 1]:
            h = layer(h, attention_mask=full_mask, position_embeddings=pe, position_ids=pos)
        last = lm.layers[k - 1]
        _, weights = last.self_attn(
            last.input_layernorm(h), position_embeddings=pe, attention_mask=full_mask
        )
        keys = layer_keys(last.self_attn, last.input_layernorm(h), pe)  # as layer K - 1 caches them
        h = last(h, attention_mask=full_mask, position_embeddings=pe, position_ids=pos)
        media = (one["input_ids"][0] == IMAGE).nonzero()[:, 0]
        rows = torch.arange(int(media.max()) + 1, n)
        attention = weights[:, :, rows][:, :, :, media]
        scored = lm.norm(h) if method.hidden_from == "final_norm" else h  # DART scores normed
        text_states = embeds if method.text_from == "embeddings" else scored
        signals = {"keys": keys[:, media], "text_keys": keys[:, rows]}
        signals = {name: value for name, value in signals.items() if name in method.needs}
        comp = method(
            Tokens(features=scored[:, media], attention=attention, text=text_states[:, rows], **signals)
        )
        text = torch.tensor([j for j in range(n) if j not in set(media.tolist())])
        where = torch.cat([text, media[comp.positions[0]]])
        kept_media = h[0, media[comp.positions[0]]] if scored is not h else comp.features[0]
        feats = torch.cat([h[0, text], kept_media])
        order = where.argsort()
        kept, h = where[order], feats[order][None]
        cos, sin = pe
        pe_kept = (cos[:, kept], sin[:, kept])
        kept_mask = causal_mask(lm, h, kept[None])
        for layer in lm.layers[k:]:
            h = layer(
                h, attention_mask=kept_mask, position_embeddings=pe_kept, position_ids=kept[None]
            )
        expected = eager.lm_head(lm.norm(h))
        # with a cache, layer K - 1's keys come from it; without, they are projected again
        for model, tol, use_cache in (
            (eager, 1e-6, True),
            (eager, 1e-6, False),
            (sdpa, 1e-4, True),
        ):
            with compress(model, method) as report:
                logits = model(**one, use_cache=use_cache).logits
            assert report.records[0].media_after == [comp.count]
            torch.testing.assert_close(logits, expected, rtol=0, atol=tol)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
@pytest.mark.parametrize("stage", ["projector", "llm"])
def test_left_padded_batch_equals_rows_one_by_one(family, stage):
    model, inputs = tiny(family)
    method = get("random", keep=5) if stage == "projector" else LastRowTopK(keep=5)
    mask = inputs["attention_mask"]
    batch = dict(inputs)
    if family == "llava":  # LLaVA numbers positions from 0 at the first pad unless told
        batch["position_ids"] = (mask.cumsum(-1) - 1).clamp_min(0)
    with compress(model, method), torch.no_grad():
        logits = model(**batch).logits
        tokens = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    images = [1, 2] if family == "llava" else [1, 1]
    for row in range(2):
        real = mask[row].bool()
        one = {
            "input_ids": inputs["input_ids"][row : row + 1, real],
            "attention_mask": mask[row : row + 1, real],
        }
        if family == "llava":
            first = sum(images[:row])
            one["pixel_values"] = inputs["pixel_values"][first : first + images[row]]
        else:
            one["pixel_values"] = inputs["pixel_values"].view(
                2, -1, inputs["pixel_values"].shape[-1]
            )[row]
            one["image_grid_thw"] = inputs["image_grid_thw"][row : row + 1]
            one["mm_token_type_ids"] = inputs["mm_token_type_ids"][row : row + 1, real]
        with compress(model, method), torch.no_grad():
            alone = model(**one).logits
            alone_tokens = model.generate(**one, max_new_tokens=3, do_sample=False)
        width = alone.shape[1]
        torch.testing.assert_close(logits[row, -width:], alone[0], rtol=0, atol=1e-5)
        assert torch.equal(tokens[row, -3:], alone_tokens[0, -3:])


@pytest.mark.parametrize("schedule", [None, [2, 4, 0]], ids=["constant", "schedule"])
@pytest.mark.parametrize("family", ["llava", "llava_siglip"])
def test_encoder_stage_equals_tome_run_by_hand(family, schedule):
    """ToMe's functional core applied layer by layer to the LLaVA model's encoder (CLIP with its
    [CLS], or SigLIP without), with proportional attention, then the projector and the plain
    language model."""
    from reproductions.image.tome import bipartite_soft_matching, proportional_attention_bias

    model, inputs = tiny(family, "eager")
    r = 3
    vision = model.model.vision_tower
    cls = 1 if family == "llava" else 0
    pixels = inputs["pixel_values"]
    with torch.no_grad():
        h = vision.embeddings(pixels)
        if cls:
            h = vision.pre_layrnorm(h)
        b = h.shape[0]
        sizes, positions = None, torch.arange(h.shape[1]).expand(b, -1)
        for i, layer in enumerate(vision.encoder.layers[:2]):  # LLaVA reads layer -2's output
            x = layer.layer_norm1(h)
            bias = None if sizes is None else proportional_attention_bias(sizes)
            h = h + layer.self_attn(x, attention_mask=bias)[0]
            keys = layer.self_attn.k_proj(x).view(b, x.shape[1], 4, -1).mean(2)
            matching = bipartite_soft_matching(
                keys, r if schedule is None else schedule[i], special=cls
            )
            h = matching.merge(h, sizes)
            sizes = matching.sizes(sizes)
            positions = positions.gather(1, matching.positions)
            h = h + layer.mlp(layer.layer_norm2(h))
        projected = model.model.multi_modal_projector(
            h[:, cls:]
        )  # the default strategy drops [CLS]
        kept = positions[:, cls:] - cls  # placeholder index of each kept patch
        lm = language_model_inputs(model, inputs)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    replaced, item = [], 0
    for row in range(ids.shape[0]):
        for start in [
            j
            for j in range(ids.shape[1])
            if ids[row, j] == IMAGE and (j == 0 or ids[row, j - 1] != IMAGE)
        ]:
            replaced.append((row, start, 16, projected[item], kept[item]))
            item += 1
    embeds, new_mask, new_pos = reference_sequence(
        lm["inputs_embeds"], torch.arange(ids.shape[1]).expand_as(ids), mask, replaced
    )
    expected = logits_from(model, embeds, new_mask, new_pos)
    with compress(model, "tome", r=r, schedule=schedule) as report, torch.no_grad():
        logits = model(**inputs).logits
    valid = new_mask.bool()
    torch.testing.assert_close(logits[valid], expected[valid], rtol=0, atol=1e-5)
    per_image = [sum(1 for x in replaced if x[0] == row) * projected.shape[1] for row in range(2)]
    assert report.records[0].media_after == per_image


def test_renumbered_positions_number_the_shorter_sequence():
    """positions='renumbered' (what LLaVA's official code of projector methods does): the
    prefill counts 0, 1, ... over the kept real tokens, and decoding continues from there."""
    model, inputs = tiny("llava")
    method = get("random", keep=7)
    with (
        compress(model, method, positions="renumbered") as report,
        Capture(model.model.language_model) as capture,
        torch.no_grad(),
    ):
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
    prefill, step = capture.calls[0], capture.calls[1]
    valid = prefill["attention_mask"].bool()
    for row in range(2):
        count = int(valid[row].sum())
        assert count == report.records[0].tokens_after[row]
        assert torch.equal(prefill["position_ids"][row][valid[row]], torch.arange(count))
        assert int(step["position_ids"][row, -1]) == count
    with (
        pytest.raises(ValueError, match="renumbered"),
        compress(tiny("qwen2_vl")[0], method, positions="renumbered"),
    ):
        pass


def test_cache_stage_equals_a_decoding_step_run_by_hand():
    """dycoke_cache on Qwen2-VL video, first decoding step: the method scores the video cache
    entries on layer K - 1's attention of the new token (eager weights), and layers >= K attend
    to the kept video entries only; the rest of the cache as usual."""
    import copy

    from reproductions.hf.tiny import VIDEO

    model, inputs = tiny("qwen2_vl_video", "eager")
    one = {
        k: v[:1] for k, v in inputs.items() if k not in ("pixel_values_videos", "video_grid_thw")
    }
    one["pixel_values_videos"] = inputs["pixel_values_videos"].view(
        2, -1, inputs["pixel_values_videos"].shape[-1]
    )[0]
    one["video_grid_thw"] = inputs["video_grid_thw"][:1]
    k = 2
    with torch.no_grad():
        prefill = model(**one, use_cache=True)
        token = prefill.logits[:, -1].argmax(-1, keepdim=True)
        mask = torch.cat([one["attention_mask"], torch.ones(1, 1, dtype=torch.long)], dim=1)
        # the decoding step's M-RoPE ids, as generate passes them (text position + rope delta)
        step = (torch.tensor([[mask.shape[1] - 1]]) + model.model.rope_deltas).expand(3, 1, 1)
        probe = model(
            input_ids=token,
            attention_mask=mask,
            position_ids=step,
            cache=copy.deepcopy(prefill.past_key_values),
            output_attentions=True,
        )
        video = (one["input_ids"][0] == VIDEO).nonzero()[:, 0]
        attention = probe.attentions[k - 1][:, :, -1:, video]
        keys = prefill.past_key_values.layers[k].keys[:, :, video]  # (1, kv heads, N, hd)
        method = get("dycoke_cache", layer=k, prune_ratio=0.5)
        comp = method(
            Tokens(features=keys.transpose(1, 2).flatten(2), attention=attention, layout=(2, 2, 2))
        )
        dropped = video[comp.source[0] < 0]
        bias = torch.zeros(1, 1, 1, mask.shape[1])
        bias[..., dropped] = torch.finfo(torch.float32).min
        layers = model.model.language_model.layers
        handles = [
            layer.register_forward_pre_hook(
                lambda module, args, kwargs: (args, {**kwargs, "attention_mask": bias}),
                with_kwargs=True,
            )
            for layer in layers[k:]
        ]
        try:
            expected = model(
                input_ids=token,
                attention_mask=mask,
                position_ids=step,
                cache=prefill.past_key_values,
            ).logits[:, -1]
        finally:
            for handle in handles:
                handle.remove()
        with compress(model, "dycoke_cache", layer=k, prune_ratio=0.5) as report:
            out = model.generate(
                **one,
                max_new_tokens=2,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
            )
    assert len(dropped) == 4 and report.records[0].media_after == [4]
    torch.testing.assert_close(out.logits[1], expected, rtol=0, atol=1e-5)


def test_llm_stage_cache_keeps_every_token_below_k_and_the_kept_from_k():
    model, inputs = tiny("qwen2_vl")
    k = 2
    with compress(model, LastRowTopK(keep=3, layer=k)) as report, torch.no_grad():
        out = model(**inputs, use_cache=True)
    lengths = [layer.keys.shape[2] for layer in out.past_key_values.layers]
    full, kept = inputs["input_ids"].shape[1], out.logits.shape[1]
    assert kept < full and report.records[0].media_after == [3, 3]
    assert lengths == [full] * k + [kept] * (len(lengths) - k)


def test_text_and_frames_at_the_llm_input():
    """frame_select on Qwen2-VL video: `text` is the row's real non-video tokens and `frames`
    each frame's mean token, both from the LLM input; the kept frame is the one they choose."""
    from reproductions.hf.tiny import VIDEO

    model, inputs = tiny("qwen2_vl_video")
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    embeds = language_model_inputs(model, inputs)["inputs_embeds"]
    with (
        compress(model, "frame_select", frames=1),
        Capture(model.model.language_model) as capture,
        torch.no_grad(),
    ):
        model(**inputs)
    got = capture.calls[0]["inputs_embeds"]
    for row in range(2):
        video = ids[row] == VIDEO
        text = embeds[row, mask[row].bool() & ~video].mean(0)
        frames = embeds[row, video].view(2, 4, -1)  # (T, H * W, D), layout (2, 2, 2)
        best = torch.nn.functional.cosine_similarity(frames.mean(1), text[None], dim=-1).argmax()
        start = int(video.nonzero()[0])
        offset = got.shape[1] - (ids.shape[1] - 4)  # the row shrank by one frame of 4 tokens
        assert torch.equal(got[row, start + offset : start + offset + 4], frames[best])


@pytest.mark.parametrize(
    "family,name,params",
    [
        ("idefics3", "pool", {"stride": 2, "mode": "avg"}),  # each tile a 4x4 grid -> 2x2
        ("internvl", "pool", {"stride": 2, "mode": "avg"}),  # row 1's run of two tiles: two items
        ("llava_next", "random", {"keep": 10}),  # anyres: one item per image, no grid
    ],
)
def test_llm_input_items_equal_hand_built_sequence(family, name, params):
    """Families whose projector stage compresses the LLM input: each tile (or image) is one
    item, compressed on its own grid, every kept token at its placeholder's position id."""
    model, inputs = tiny(family)
    method = get(name, **params)
    lm = language_model_inputs(model, inputs)
    embeds, ids, mask = lm["inputs_embeds"], inputs["input_ids"], inputs["attention_mask"]
    size = {"idefics3": 16, "internvl": 16, "llava_next": None}[family]
    replaced = []
    for row in range(ids.shape[0]):
        starts = [j for j in range(ids.shape[1]) if ids[row, j] == IMAGE and (j == 0 or ids[row, j - 1] != IMAGE)]
        for start in starts:
            end = start
            while end < ids.shape[1] and ids[row, end] == IMAGE:
                end += 1
            step = size or end - start
            for tile in range(start, end, step):
                rows = embeds[row, tile : tile + step][None]
                layout = (4, 4) if size else None
                comp = method(Tokens(features=rows, layout=layout))
                replaced.append((row, tile, step, comp.features[0], comp.positions[0]))
    positions = lm.get("position_ids")
    positions = positions if positions is not None else (mask.cumsum(-1) - 1).clamp(min=0)
    expected_embeds, new_mask, new_pos = reference_sequence(embeds, positions, mask, replaced)
    expected = logits_from(model, expected_embeds, new_mask, new_pos)
    with compress(model, method), torch.no_grad():
        logits = model(**inputs).logits
    valid = new_mask.bool()
    torch.testing.assert_close(logits[valid], expected[valid], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name,params", [("divprune", {"keep": 4}), ("pool", {"stride": 2, "mode": "avg"})])
def test_qwen3_vl_deepstack_features_follow_the_kept_tokens(name, params):
    """Qwen3-VL adds DeepStack features to the visual tokens after its first decoder layers: the
    compressed run equals the language model run by hand on the kept tokens, each with its own
    DeepStack features (a pooled token: the mean of its window's)."""
    model, inputs = tiny("qwen3_vl")
    method = get(name, **params)
    lm = language_model_inputs(model, inputs)
    embeds, ids, mask = lm["inputs_embeds"], inputs["input_ids"], inputs["attention_mask"]
    old_mask, stacks = lm["visual_pos_masks"], lm["deepstack_visual_embeds"]
    flat = old_mask.flatten().long().cumsum(0).view_as(old_mask) - 1
    replaced, new_stack_rows = [], []
    for row in range(ids.shape[0]):
        where = (ids[row] == IMAGE).nonzero().flatten()
        start, length = int(where[0]), len(where)
        comp = method(Tokens(features=embeds[row, start : start + length][None], layout=(2, 4)))
        replaced.append((row, start, length, comp.features[0], comp.positions[0]))
        for k in range(comp.count):  # the DeepStack rows each kept token stands for, in order
            members = (comp.source[0] == k).nonzero().flatten() + start
            new_stack_rows.append(flat[row, members])
    new_embeds, new_mask, new_pos = reference_sequence(embeds, lm["position_ids"], mask, replaced)
    visual = torch.zeros_like(new_mask, dtype=torch.bool)
    for row in range(ids.shape[0]):  # the kept visual tokens: rows of new_embeds equal to a kept feature
        kept = replaced[row][3]
        for j in range(new_embeds.shape[1]):
            visual[row, j] = bool((new_embeds[row, j] == kept).all(-1).any())
    new_stacks = [torch.stack([layer[rows].mean(0) for rows in new_stack_rows]) for layer in stacks]
    with torch.no_grad():
        hidden = model.model.language_model(
            inputs_embeds=new_embeds, attention_mask=new_mask, position_ids=new_pos, use_cache=False,
            visual_pos_masks=visual, deepstack_visual_embeds=new_stacks,
        ).last_hidden_state
        expected = model.lm_head(hidden)
        with compress(model, method):
            logits = model(**inputs).logits
    valid = new_mask.bool()
    torch.testing.assert_close(logits[valid], expected[valid], rtol=0, atol=1e-5)


def test_gemma3_kept_image_tokens_still_attend_to_each_other_both_ways():
    """Gemma 3's image tokens attend bidirectionally: the compressed run equals Gemma 3's own
    forward on the shortened prompt (its embeddings, its token types, its position ids), whose
    masks the model builds itself; a plain causal mask (what a naive adapter passes) differs."""
    model, inputs = tiny("gemma3")
    method = get("divprune", keep=8)
    lm = language_model_inputs(model, inputs)
    embeds, ids, mask = lm["inputs_embeds"], inputs["input_ids"], inputs["attention_mask"]
    replaced = []
    for row in range(ids.shape[0]):
        where = (ids[row] == IMAGE).nonzero().flatten()
        start = int(where[0])
        comp = method(Tokens(features=embeds[row, start : start + 16][None], layout=(4, 4)))
        replaced.append((row, start, 16, comp.features[0], comp.positions[0]))
    positions = lm["position_ids"] if lm.get("position_ids") is not None else torch.arange(ids.shape[1]).expand_as(ids)
    new_embeds, new_mask, new_pos = reference_sequence(embeds, positions, mask, replaced)
    types = torch.zeros_like(new_mask)
    for row, start, _, feats, _ in replaced:
        offset = new_embeds.shape[1] - int(new_mask[row].sum())
        first = offset + int(mask[row, :start].sum())  # the kept image tokens follow the row's text
        types[row, first : first + feats.shape[0]] = 1
    with torch.no_grad():
        hidden = model.model(inputs_embeds=new_embeds, attention_mask=new_mask, position_ids=new_pos,
                             token_type_ids=types, use_cache=False).last_hidden_state
        expected = model.lm_head(hidden)
        causal = model.lm_head(model.model.language_model(
            inputs_embeds=new_embeds, attention_mask=new_mask, position_ids=new_pos, use_cache=False
        ).last_hidden_state)
        with compress(model, method):
            logits = model(**inputs).logits
    valid = new_mask.bool()
    torch.testing.assert_close(logits[valid], expected[valid], rtol=0, atol=1e-5)
    assert (causal[valid] - expected[valid]).abs().max() > 1e-3  # the semantics the test guards


def test_qwen3_vl_video_frames_are_one_clip_and_kept_tokens_stay_in_their_frames():
    """Qwen3-VL writes a video frame by frame (timestamp, vision start, tokens, vision end): the
    method sees the clip's frames as one (T, H, W) grid, and each kept token stays inside its
    own frame's run, between that frame's timestamp and vision end, with its own position ids."""
    from reproductions.hf.tiny import VIDEO

    model, inputs = tiny("qwen3_vl_video")
    method = get("divprune", keep=3)
    lm = language_model_inputs(model, inputs)
    embeds, ids, pos = lm["inputs_embeds"], inputs["input_ids"], lm["position_ids"]
    with (
        compress(model, method),
        torch.no_grad(),
        Capture(model.model.language_model) as capture,  # after compress's hook: sees its output
    ):
        model(**inputs)
    got = capture.calls[0]
    for row in range(ids.shape[0]):
        columns = (ids[row] == VIDEO).nonzero().flatten()
        assert len(columns) == 8 and not bool((columns.diff() == 1).all())  # two runs of 4
        comp = method(Tokens(features=embeds[row, columns][None], layout=(2, 2, 2)))
        kept = columns[comp.positions[0]]
        where = []
        for j in range(ids.shape[1]):
            if not inputs["attention_mask"][row, j]:
                continue
            if ids[row, j] != VIDEO:
                where.append(j)
            elif j == 0 or ids[row, j - 1] != VIDEO:  # a frame's run starts: its kept tokens
                run = columns[(columns >= j) & (columns < j + 4)]
                where += [int(k) for k in kept if k in run]
        where = torch.tensor(where)
        real = got["attention_mask"][row].bool()
        assert int(real.sum()) == int(inputs["attention_mask"][row].sum()) - 5
        torch.testing.assert_close(got["inputs_embeds"][row, real], embeds[row, where])
        assert torch.equal(got["position_ids"][..., row, :][..., real], pos[..., row, where])


@pytest.mark.parametrize("family", ["gemma3", "idefics3"])
def test_encoder_tome_in_a_pooled_grid_merges_whole_units(family):
    """Gemma 3 and Idefics3 pool fixed blocks of patches into each LLM token, so ToMe merges whole
    blocks (units). With merges in the last encoder layer only: that layer run by hand with ToMe
    on the units (patches concatenated, keys averaged), put back on the grid, post-normed and
    projected, gives the projector's output, and each image hands the LLM its kept units' tokens."""
    from reproductions.hf.models import adapter_for
    from reproductions.hf.tiny import IMAGE

    model, inputs = tiny(family)
    adapter = adapter_for(model)
    layers, units = adapter.encoder_layers, adapter.tap.units
    entering = []
    hook = layers[-1].register_forward_pre_hook(lambda m, a, k: entering.append(a[0] if a else k["hidden_states"]),
                                                with_kwargs=True)
    try:
        lm = language_model_inputs(model, inputs)
    finally:
        hook.remove()
    layer, h = layers[-1], entering[0]
    b, n, d = h.shape
    k = units.shape[1]
    with torch.no_grad():
        x = layer.layer_norm1(h)
        hidden = h + layer.self_attn(hidden_states=x)[0]
        keys = layer.self_attn.k_proj(x).view(b, n, layer.self_attn.num_heads, -1).mean(2)[:, units.flatten()]
        tokens = Tokens(features=hidden[:, units.flatten()].reshape(b, -1, k * d),
                        keys=keys.view(b, -1, k, keys.shape[-1]).mean(2))
        comp = get("tome", r=3)(tokens)
        merged = comp.features.reshape(b, -1, d)
        merged = merged + layer.mlp(layer.layer_norm2(merged))
        grid = torch.empty_like(h)
        grid[:, units.flatten()] = merged.view(b, -1, k, d).gather(
            1, comp.source[:, :, None, None].expand(-1, -1, k, d)).reshape(b, -1, d)
        tower = model.model.vision_tower if family == "gemma3" else model.model.vision_model
        tower = getattr(tower, "vision_model", tower)
        placed = adapter.tap.output(tower.post_layernorm(grid))
    schedule = [0] * (len(layers) - 1) + [3]
    with (
        compress(model, "tome", r=3, schedule=schedule) as report,
        torch.no_grad(),
        Capture(adapter.language_model) as capture,
    ):
        model(**inputs)
    got, ids = capture.calls[0]["inputs_embeds"], inputs["input_ids"]
    units_per_item = units.shape[0]
    assert report.records[0].media_after == [
        int((ids[r] == IMAGE).sum()) // units_per_item * comp.count for r in range(ids.shape[0])
    ]
    item = 0
    for r in range(ids.shape[0]):
        rows = [placed[item + t][comp.positions[item + t]] for t in range(int((ids[r] == IMAGE).sum()) // units_per_item)]
        item += len(rows)
        expected = torch.cat(rows)
        assert all(any(torch.allclose(e, g, atol=1e-5) for g in got[r]) for e in expected)
    assert lm["inputs_embeds"].shape[1] > got.shape[1]
