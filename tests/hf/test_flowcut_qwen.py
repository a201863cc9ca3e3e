"""FlowCut inside Qwen2-VL's ViT equals its official Qwen2-VL port (`FlowCut_Qwen`,
`Qwen2VisionTransformerPretrainedModel_forward`) run by hand, one image per call as the port
runs it, on whole 2x2 merge units: every block in full; then, while more than T units remain,
the block's score, each unit's attention from the image's mean query (rotated queries and keys,
softmax per head, head-mean) times the L1 norm of its head-mean values, both summed over the
unit's patches, averaged half and half into the running score; pruning where the blocks left
after this one are even (the last block cuts to T); the merger on the kept units."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from hf_helpers import language_model_inputs, reference_sequence

from reproductions.hf import compress
from reproductions.hf.tiny.parts import END, IMAGE, START, prompts
from reproductions.hf.tiny.qwen import qwen2_vl

UNIT, SIDE, DEPTH, S = 4, 8, 6, 2000  # 16 merge units per image; blocks 1, 3 cut adaptively, 5 to T


def deep_qwen2_vl(attn: str):
    """The tiny Qwen2-VL with a 6-block ViT whose queries are scaled up 2000-fold (a peaked mean-query
    attention, whose entropy lets the adaptive cuts remove units), two prompts of one 8 x 8-patch
    image each."""
    model, _ = qwen2_vl(attn)
    config = model.config
    config.vision_config.depth = DEPTH
    torch.manual_seed(1)
    model = tf.Qwen2VLForConditionalGeneration(config).eval()
    with torch.no_grad():
        for block in model.model.visual.blocks:
            third = block.attn.qkv.weight.shape[0] // 3
            block.attn.qkv.weight[:third].mul_(S)
            block.attn.qkv.bias[:third].mul_(S)
    g = torch.Generator().manual_seed(0)
    units = SIDE * SIDE // UNIT
    ids, mask = prompts([[(START, 1), (IMAGE, units), (END, 1)]] * 2, [7, 5], g)
    return model, {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": torch.randn(2 * SIDE * SIDE, 3 * 2 * 4 * 4, generator=g),
        "image_grid_thw": torch.tensor([[1, SIDE, SIDE]] * 2),
        "mm_token_type_ids": (ids == IMAGE).long(),
    }


def projections(attn, x, rotary):
    """(L, heads, head_dim) rotated queries and keys and values, as the port's attention has them."""
    q, k, v = attn.qkv(x).view(x.shape[0], 3, attn.num_heads, -1).unbind(1)
    cos, sin = (r[:, None] for r in rotary)

    def rotate(t):
        half = t.shape[-1] // 2
        return t * cos + torch.cat([-t[..., half:], t[..., :half]], dim=-1) * sin

    return rotate(q), rotate(k), v


def official_by_hand(visual, h, rotary, target):
    """One image through the port's ViT loop: the merger's tokens, the kept units, the unit
    count after each block."""
    kept, running, counts = torch.arange(h.shape[0] // UNIT), None, []
    for idx, block in enumerate(visual.blocks):
        remain = len(visual.blocks) - idx - 1
        patches = (kept[:, None] * UNIT + torch.arange(UNIT)).flatten()
        x = block.norm1(h)
        q, k, v = projections(block.attn, x, tuple(r[patches] for r in rotary))
        weights = (torch.einsum("qhd,khd->hqk", q, k) * block.attn.scaling).softmax(-1)
        h = h + block.attn.proj(torch.einsum("hqk,khd->qhd", weights, v).reshape(x.shape[0], -1))
        h = h + block.mlp(block.norm2(h))
        n = kept.numel()
        if n > target:
            mean_q = q.mean(0)  # the port's global_q: (heads, d)
            attention = (torch.einsum("hd,khd->hk", mean_q, k) * block.attn.scaling).softmax(-1).mean(0)
            attention = attention.view(n, UNIT).sum(-1)
            score = attention * v.mean(1).abs().sum(-1).view(n, UNIT).sum(-1)
            running = score if running is None else 0.5 * running + 0.5 * score
            if remain % 2 == 0:
                if remain:
                    ratio = -(attention * attention.log()).sum() / torch.log(torch.tensor(float(n)))
                    prune = int(((n - target) / remain**0.5 * (1 - ratio**2)).round())
                else:
                    prune = n
                top = running.topk(max(n - prune, target)).indices.sort().values
                running, kept = running[top], kept[top]
                h = h.view(n, UNIT, -1)[top].reshape(-1, h.shape[-1])
        counts.append(kept.numel())
    return visual.merger(h), kept, counts


def first_block_inputs(model, inputs):
    seen = {}
    handle = model.model.visual.blocks[0].register_forward_pre_hook(
        lambda m, a, k: seen.update(h=a[0], **k), with_kwargs=True)
    try:
        lm = language_model_inputs(model, inputs)
    finally:
        handle.remove()
    return seen, lm


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_flowcut_in_qwen2_vl_equals_the_port_run_by_hand(attn):
    target = 4
    model, inputs = deep_qwen2_vl(attn)
    seen, lm = first_block_inputs(model, inputs)
    per = SIDE * SIDE
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    replaced = []
    with torch.no_grad():
        for row in range(2):  # the port runs one image per call
            rows = slice(row * per, (row + 1) * per)
            tokens, kept, counts = official_by_hand(
                model.model.visual, seen["h"][rows], tuple(r[rows] for r in seen["position_embeddings"]), target)
            assert per // UNIT > counts[1] > counts[3] > counts[5] == target, counts  # both adaptive cuts cut
            assert counts[0] == per // UNIT and counts[2] == counts[1] and counts[4] == counts[3]  # odd: score only
            replaced.append((row, int((ids[row] == IMAGE).nonzero()[0]), per // UNIT, tokens, kept))
        embeds, new_mask, new_pos = reference_sequence(lm["inputs_embeds"], lm["position_ids"], mask, replaced)
        hidden = model.model.language_model(inputs_embeds=embeds, attention_mask=new_mask, position_ids=new_pos,
                                            use_cache=False).last_hidden_state
        expected = model.lm_head(hidden)
        plain = model(**inputs).logits
        with compress(model, "flowcut", keep=target) as report:
            logits = model(**inputs).logits
        assert torch.equal(model(**inputs).logits, plain)  # the context left nothing behind
    valid = new_mask.bool()
    torch.testing.assert_close(logits[valid], expected[valid], rtol=0, atol=1e-5)
    assert report.records[0].media_after == [target, target]


def test_a_budget_of_every_unit_changes_no_bit():
    model, inputs = deep_qwen2_vl("sdpa")
    with torch.no_grad():
        plain = model(**inputs).logits
        with compress(model, "flowcut", keep=1.0) as report:
            kept = model(**inputs).logits
    assert torch.equal(kept, plain)
    assert report.records[0].media_after == [SIDE * SIDE // UNIT] * 2


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "qwen2_5_omni_image"])
def test_the_other_qwen_vits_are_refused(family):
    """The port covers Qwen2-VL's full-attention blocks only: windowed blocks and DeepStack taps
    have no mean-query `cls_attention`."""
    from hf_helpers import tiny

    model, _ = tiny(family)
    with pytest.raises(ValueError, match="cls_free_query"), compress(model, "flowcut", keep=4):
        pass
