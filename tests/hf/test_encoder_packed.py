"""ToMe inside the Qwen ViTs (Qwen2-VL, Qwen2.5-VL, Qwen2.5-Omni, Qwen3-VL) equals ToMe run by
hand on whole merge units: each unit's patches concatenated, keys (rotated, as the attention
uses them) averaged over heads and patches, within each image; the ViT run by hand with dense
masks (same image, or same original window in Qwen2.5-VL's windowed blocks), proportional
attention and the kept patches' rotary embeddings; the merger on the kept units; each image's
kept tokens at their units' places in the LLM input (grid order, their M-RoPE ids), Qwen3-VL's
DeepStack features folded into them. Videos pass untouched."""

from __future__ import annotations

import copy

import pytest
import torch
from hf_helpers import hook_count, language_model_inputs, reference_sequence, tiny
from transformers.vision_utils import get_vision_window_index

from reproductions import Tokens, get
from reproductions.hf import compress
from reproductions.hf.tiny import IMAGE

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen2_5_omni_image", "qwen3_vl"]
UNIT = 4  # spatial_merge_size² patches per merge unit in every tiny Qwen ViT


def projections(attn, x, rotary):
    """(L, heads, head_dim) queries and keys (rotated) and values of a Qwen ViT attention, by hand."""
    n = x.shape[0]
    if hasattr(attn, "qkv"):
        q, k, v = attn.qkv(x).view(n, 3, attn.num_heads, -1).unbind(1)
    else:
        q, k, v = (p(x).view(n, attn.num_heads, -1) for p in (attn.q, attn.k, attn.v))
    cos, sin = (r[:, None] for r in rotary)

    def rotate(t):
        half = t.shape[-1] // 2
        return t * cos + torch.cat([-t[..., half:], t[..., :half]], dim=-1) * sin

    return rotate(q), rotate(k), v


def block_to_grid(visual, grid) -> torch.Tensor:
    """The grid-order index of each merge unit in the order the blocks see them."""
    if hasattr(visual, "window_size"):
        return get_vision_window_index(grid, visual.spatial_merge_size, visual.window_size, visual.patch_size)[0]
    return torch.arange(int(grid.prod(-1).sum()) // UNIT)


def first_block_inputs(model, inputs, index=0):
    seen = {}
    block = model.model.visual.blocks[index]
    handle = block.register_forward_pre_hook(lambda m, a, k: seen.update(h=a[0], **k), with_kwargs=True)
    try:
        lm = language_model_inputs(model, inputs)
    finally:
        handle.remove()
    return seen, lm


def llm_logits(model, lm, mask, replaced, stack_rows):
    """The plain language model on the hand-built sequence (Qwen3-VL: each kept token's DeepStack
    features the mean of the rows it stands for)."""
    embeds, new_mask, new_pos = reference_sequence(lm["inputs_embeds"], lm["position_ids"], mask, replaced)
    extra = {}
    if "deepstack_visual_embeds" in lm:
        visual = torch.zeros_like(new_mask, dtype=torch.bool)
        for row, _, _, kept, _ in replaced:
            visual[row] = (embeds[row][:, None] == kept[None]).all(-1).any(-1)
        extra = {"visual_pos_masks": visual, "deepstack_visual_embeds": [
            torch.stack([layer[rows].mean(0) for rows in stack_rows]) for layer in lm["deepstack_visual_embeds"]]}
    with torch.no_grad():
        hidden = model.model.language_model(inputs_embeds=embeds, attention_mask=new_mask, position_ids=new_pos,
                                            use_cache=False, **extra).last_hidden_state
        return model.lm_head(hidden), new_mask.bool()


@pytest.mark.parametrize("family", FAMILIES)
def test_the_last_block_run_by_hand(family):
    """Merges in the last block only (its input is the unpatched model's): ToMe on its units by
    hand, the MLP and merger on the kept units, each image's kept tokens placed in grid order;
    on Qwen3-VL the DeepStack layers, tapped before the merge, are averaged over each kept
    token's units."""
    model, inputs = tiny(family, "eager")
    visual, r = model.model.visual, 3
    seen, lm = first_block_inputs(model, inputs, index=-1)
    block, grid = visual.blocks[-1], inputs["image_grid_thw"]
    images = len(grid)
    with torch.no_grad():
        x = block.norm1(seen["h"])
        h = seen["h"] + block.attn(x, cu_seqlens=seen["cu_seqlens"], position_embeddings=seen["position_embeddings"])
        _, k, _ = projections(block.attn, x, seen["position_embeddings"])
        d = h.shape[-1]
        keys = k.mean(1).view(images, -1, UNIT, k.shape[-1]).mean(2)
        comp = get("tome", r=r)(Tokens(features=h.view(images, -1, UNIT * d), keys=keys))
        merged = comp.features.reshape(-1, d)
        merged = merged + block.mlp(block.norm2(merged))
        tokens = visual.merger(merged).view(images, comp.count, -1)
    per = keys.shape[1]
    local = block_to_grid(visual, grid).view(images, per) - torch.arange(images)[:, None] * per
    ids = inputs["input_ids"]
    replaced, stack_rows = [], []
    flat = lm["visual_pos_masks"].flatten().long().cumsum(0).view_as(ids) - 1 if "visual_pos_masks" in lm else None
    for row in range(images):  # one image per row
        start = int((ids[row] == IMAGE).nonzero()[0])
        at = local[row, comp.positions[row]]
        order = torch.argsort(at)
        replaced.append((row, start, per, tokens[row, order], at[order]))
        for slot in order.tolist():  # the grid units each kept token stands for
            members = local[row, (comp.source[row] == slot).nonzero().flatten()]
            stack_rows.append(flat[row, start + members] if flat is not None else None)
    expected, valid = llm_logits(model, lm, inputs["attention_mask"], replaced, stack_rows)
    schedule = [0] * (len(visual.blocks) - 1) + [r]
    with compress(model, "tome", r=r, schedule=schedule) as report, torch.no_grad():
        logits = model(**inputs).logits
    assert report.records[0].media_after == [comp.count] * images
    torch.testing.assert_close(logits[valid], expected[valid], rtol=0, atol=1e-5)


def deeper(family, attn):
    """The tiny model with a third ViT block; Qwen2.5-VL / Omni: full attention in the last only,
    so a windowed block follows a merge."""
    model, inputs = tiny(family, attn)
    config = copy.deepcopy(model.config)
    config.vision_config.depth = 3
    if hasattr(config.vision_config, "fullatt_block_indexes"):
        config.vision_config.fullatt_block_indexes = [2]
    torch.manual_seed(1)
    return type(model)(config).eval(), inputs


def vit_by_hand(visual, seen, grid, schedule):
    """The ViT from its first block's input: dense masks, proportional attention, ToMe per image
    (images batched); every tap and the merger's output unmerged to the call's units."""
    h, rotary = seen["h"], seen["position_embeddings"]
    images, units = len(grid), h.shape[0] // UNIT
    per = units // images
    image = torch.arange(units) // per
    window = image
    if hasattr(visual, "window_size"):
        bounds = get_vision_window_index(grid, visual.spatial_merge_size, visual.window_size, visual.patch_size)[1]
        window = torch.searchsorted(bounds[1:] // UNIT, torch.arange(units), right=True)
    kept, owner, sizes, taps = torch.arange(units).view(images, per), torch.arange(units), None, []
    deepstack = getattr(visual, "deepstack_visual_indexes", [])
    for i, block in enumerate(visual.blocks):
        full = i in getattr(visual, "fullatt_block_indexes", range(len(visual.blocks)))
        group = (image if full else window)[kept.flatten()].repeat_interleave(UNIT)
        patches = (kept.flatten()[:, None] * UNIT + torch.arange(UNIT)).flatten()
        x = block.norm1(h)
        q, k, v = projections(block.attn, x, tuple(r[patches] for r in rotary))
        scores = torch.einsum("qhd,khd->hqk", q, k) * block.attn.scaling
        if sizes is not None:
            scores = scores + sizes.flatten().log().repeat_interleave(UNIT)
        scores = scores.masked_fill(group[:, None] != group[None, :], float("-inf"))
        out = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(x.shape[0], -1)
        h = h + block.attn.proj(out)
        count, d = kept.shape[1], h.shape[-1]
        keys = k.mean(1).view(images, count, UNIT, -1).mean(2)
        comp = get("tome", r=schedule[i])(Tokens(features=h.view(images, count, UNIT * d), keys=keys, sizes=sizes))
        owner = owner // count * comp.count + comp.source.flatten()[owner]
        h, sizes, kept = comp.features.reshape(-1, d), comp.sizes, kept.gather(1, comp.positions)
        h = h + block.mlp(block.norm2(h))
        if i in deepstack:
            taps.append(visual.deepstack_merger_list[deepstack.index(i)](h)[owner])
    out = visual.merger(h)[owner]
    return out[torch.argsort(block_to_grid(visual, grid))], taps, kept


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_block_run_by_hand(family, attn):
    """Merges in every block of a three-block ViT: the merger's and DeepStack mergers' outputs
    (each unit holding the token of the unit it went into) equal the ViT run by hand; in
    Qwen2.5-VL / Omni a windowed block after a merge attends within the kept units' windows."""
    model, inputs = deeper(family, attn)
    seen, _ = first_block_inputs(model, inputs)
    schedule = [2, 1, 1]
    with torch.no_grad():
        expected, taps, kept = vit_by_hand(model.model.visual, seen, inputs["image_grid_thw"], schedule)
    outputs = []
    with compress(model, "tome", r=2, schedule=schedule) as report, torch.no_grad():
        handle = model.model.visual.register_forward_hook(  # before the model splits them per image
            lambda m, a, o: outputs.append((o.pooler_output, getattr(o, "deepstack_features", []))))
        try:
            model(**inputs)
        finally:
            handle.remove()
    pooled, stacked = outputs[0]
    torch.testing.assert_close(pooled, expected, rtol=0, atol=1e-5)
    for got, tap in zip(stacked, taps, strict=True):
        torch.testing.assert_close(got, tap, rtol=0, atol=1e-5)
    assert len(taps) == len(getattr(model.model.visual, "deepstack_visual_indexes", []))
    assert report.records[0].media_after == [kept.shape[1]] * kept.shape[0] == [4, 4]


@pytest.mark.parametrize("family", ["qwen2_vl_video", "qwen3_vl_video", "qwen2_5_omni"])
def test_videos_pass_untouched(family):
    """ToMe is an image method: a video (Qwen3-VL encodes it through its image features) runs
    through the ViT as it does without compress, and nothing of the model is left patched."""
    model, inputs = tiny(family)
    with torch.no_grad():
        expected = model(**inputs).logits
    hooks = hook_count(model)
    with pytest.warns(UserWarning, match="compressed nothing"), compress(model, "tome", r=2), torch.no_grad():
        logits = model(**inputs).logits
    assert torch.equal(logits, expected)
    assert hook_count(model) == hooks
    assert not any("forward" in vars(block) for block in model.model.visual.blocks)
    assert not {"get_image_features", "get_video_features"} & set(vars(model.model))


@pytest.mark.parametrize("family", FAMILIES)
def test_images_of_one_call_merge_on_their_own(family):
    """Images of different sizes in one ViT call (packed one after the other) give what each
    gives alone: attention and merges stay within each image."""
    model, _ = tiny(family)
    g = torch.Generator().manual_seed(0)
    grids = [torch.tensor([[1, 4, 8]]), torch.tensor([[1, 8, 4]]), torch.tensor([[1, 4, 4]])]
    pixels = [torch.randn(int(grid.prod()), 3 * 2 * 4 * 4, generator=g) for grid in grids]
    with compress(model, "tome", r=2) as report, torch.no_grad():
        together = model.model.get_image_features(torch.cat(pixels), torch.cat(grids)).pooler_output
        alone = [model.model.get_image_features(p, grid).pooler_output[0] for p, grid in zip(pixels, grids, strict=True)]
    assert report.calls == 0  # no LLM call: the ViT alone
    for got, expected in zip(together, alone, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    expected = []
    for units in (8, 8, 4):  # ToMe's count: r = 2 per block, at most half the units
        for _ in model.model.visual.blocks:
            units -= min(2, units // 2)
        expected.append(units)
    assert [len(x.unique(dim=0)) for x in together] == expected
