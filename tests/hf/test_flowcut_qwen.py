"""`flowcut_qwen` inside Qwen2-VL equals its official port (`FlowCut_Qwen/modeling_qwen2_vl_flowcut.py`)
run by hand, one unpadded prompt row at a time (the port runs batch size 1):

- the ViT (`Qwen2VisionTransformerPretrainedModel_forward`), on whole 2x2 merge units: every
  block in full; then, while more than 2K units remain, each unit's attention from the image's
  mean query (rotated queries and keys, softmax per head, head mean) times the L1 norm of its
  head-mean values, both summed over the unit's patches, averaged half and half into the running
  score; pruning where the blocks left after this one are even (the last block cuts to 2K);
- the LLM (`Qwen2VLSdpaAttention_forward`'s "prune" branch in layer 1, `Qwen2VLModel_forward`):
  layers 0 and 1 on every row; from layer 1's eager attention and values, the last prompt row's
  attention to the media rows renormalised over them per head, plus per head the softmax over
  the media rows of v_last . v_j / sqrt(head_dim), head means, times the L1 norm of the head-mean
  value; the top K media rows in order and every text row run layers 2 and 3."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import transformers as tf
from hf_helpers import language_model_inputs, tiny

from reproductions.hf import compress, why_unsupported
from reproductions.hf.tiny.parts import END, IMAGE, START, prompts
from reproductions.hf.tiny.qwen import qwen2_vl
from reproductions.image.flowcut_qwen import FlowCutQwenLLM

UNIT, SIDE, DEPTH, S = 4, 8, 6, 2000  # 16 merge units per image; blocks 1, 3 cut adaptively, 5 to 2K
UNITS = SIDE * SIDE // UNIT


def deep_qwen2_vl(attn: str):
    """The tiny Qwen2-VL with a 6-block ViT whose queries are scaled up 2000-fold (a peaked mean-query
    attention, whose entropy lets the adaptive cuts remove units) and decoder layer 1's 40-fold (a
    peaked last-row attention, so that the relation term decides against the others); the same
    weights whatever `attn`. Two left-padded prompts of one 8 x 8-patch image each."""
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
        query = model.model.language_model.layers[1].self_attn.q_proj
        query.weight.mul_(40)
        query.bias.mul_(40)
    g = torch.Generator().manual_seed(0)
    ids, mask = prompts([[(START, 1), (IMAGE, UNITS), (END, 1)]] * 2, [7, 5], g)
    return model, {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": torch.randn(2 * SIDE * SIDE, 3 * 2 * 4 * 4, generator=g),
        "image_grid_thw": torch.tensor([[1, SIDE, SIDE]] * 2),
        "mm_token_type_ids": (ids == IMAGE).long(),
    }


def projections(attn, x, rotary):
    """(L, heads, head_dim) rotated queries and keys and values, as the port's ViT attention has them."""
    q, k, v = attn.qkv(x).view(x.shape[0], 3, attn.num_heads, -1).unbind(1)
    cos, sin = (r[:, None] for r in rotary)

    def rotate(t):
        half = t.shape[-1] // 2
        return t * cos + torch.cat([-t[..., half:], t[..., :half]], dim=-1) * sin

    return rotate(q), rotate(k), v


def vit_by_hand(visual, h, rotary, target):
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


def llm_by_hand(model, h, positions, media, keep, kept=None):
    """Decoder layers run by hand on one unpadded row `h` (1, L, D) at M-RoPE `positions` (3, 1, L),
    causal: layers 0 and 1 on every row; at layer 1 (eager) the port's score of the `media` rows,
    unless `kept` fixes them; layers 2 and 3 on the text rows and the `keep` best media rows.
    Returns the logits of those rows, the kept media rows, and the rows FastV's relation term
    alone would keep (to show the test tells the two apart)."""
    lm = model.model.language_model

    def attend(h, positions):
        n = h.shape[1]
        mask = torch.where(torch.ones(n, n, dtype=torch.bool).tril(), 0.0, torch.finfo(h.dtype).min)[None, None]
        return mask, lm.rotary_emb(h, positions)

    mask, pe = attend(h, positions)
    relation_only = None
    for i, layer in enumerate(lm.layers):
        if i == 2:
            rows = torch.tensor([j for j in range(h.shape[1]) if j not in set(media.tolist()) or j in set(kept.tolist())])
            h, positions = h[:, rows], positions[..., rows]
            mask, pe = attend(h, positions)
        if i == 1 and kept is None:
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            weights = attn(x, attention_mask=mask, position_embeddings=pe)[1][0]  # (heads, L, L), eager
            v = attn.v_proj(x).view(h.shape[1], -1, attn.head_dim).transpose(0, 1)
            v = v.repeat_interleave(attn.num_key_value_groups, dim=0)  # the port's repeat_kv
            last = weights[:, -1, media]
            relation = (last / last.sum(-1, keepdim=True)).mean(0)
            semantic = ((v[:, media] @ v[:, -1, :, None])[..., 0] / math.sqrt(attn.head_dim)).softmax(-1).mean(0)
            score = (relation + semantic) * v[:, media].mean(0).abs().sum(-1)
            kept = media[score.topk(keep).indices.sort().values]
            relation_only = media[relation.topk(keep).indices.sort().values]
        h = layer(h, attention_mask=mask, position_embeddings=pe)
    return model.lm_head(lm.norm(h)), kept, relation_only


def vit_inputs(model, inputs):
    """The first ViT block's input and rotary embeddings, and what the unpatched model hands its
    language model."""
    seen = {}
    handle = model.model.visual.blocks[0].register_forward_pre_hook(
        lambda m, a, k: seen.update(h=a[0], **k), with_kwargs=True)
    try:
        lm = language_model_inputs(model, inputs)
    finally:
        handle.remove()
    return seen, lm


def row_sequence(inputs, lm, row, vit=None):
    """Row `row` of the language model's input without its padding: embeddings (1, L, D), M-RoPE
    positions (3, 1, L) and the media rows; with `vit` = (tokens, kept units), its image span
    replaced by those tokens at their units' positions."""
    real = inputs["attention_mask"][row].bool()
    ids, embeds, positions = inputs["input_ids"][row][real], lm["inputs_embeds"][row][real], lm["position_ids"][:, row][:, real]
    start = int((ids == IMAGE).nonzero()[0])
    if vit is not None:
        tokens, kept = vit
        embeds = torch.cat([embeds[:start], tokens, embeds[start + UNITS :]])
        positions = torch.cat([positions[:, :start], positions[:, start + kept], positions[:, start + UNITS :]], dim=1)
    count = UNITS if vit is None else len(vit[1])
    return embeds[None], positions[:, None], torch.arange(start, start + count)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_the_llm_part_equals_layer_one_scored_by_hand(attn):
    """Breaks if the part read layer 2's attention and values (K's own instead of K - 1's), left out
    the renormalisation over the media columns, the semantic term, the 1 / sqrt(head_dim) or the
    value norm, or read the first query row's attention."""
    keep = 5
    eager, inputs = deep_qwen2_vl("eager")
    model, _ = deep_qwen2_vl(attn)
    _, lm = vit_inputs(eager, inputs)
    with torch.no_grad(), compress(model, FlowCutQwenLLM(keep=keep)) as report:
        logits = model(**inputs).logits
    assert [r.media_after for r in report.records] == [[keep, keep]]
    differs = False
    with torch.no_grad():
        for row in range(2):
            h, positions, media = row_sequence(inputs, lm, row)
            expected, kept, relation_only = llm_by_hand(eager, h, positions, media, keep)
            differs |= not torch.equal(kept, relation_only)
            torch.testing.assert_close(logits[row, -expected.shape[1] :], expected[0], rtol=0, atol=1e-5)
    assert differs  # the relation term alone (FastV's) keeps other rows here


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_flowcut_qwen_cuts_2k_units_in_the_vit_then_k_rows_at_layer_two(attn):
    """The whole method in one context: breaks if the ViT part kept K units (not 2K), the LLM part
    cut at another layer or from the ViT's own counts, layers 0-1 lost rows, or the ViT scores
    were wrong (the LLM input differs)."""
    keep = 2
    eager, inputs = deep_qwen2_vl("eager")
    model, _ = deep_qwen2_vl(attn)
    seen, lm = vit_inputs(eager, inputs)
    lengths: dict[int, int] = {}

    def record(i, module, args, kwargs):
        lengths[i] = (args[0] if args else kwargs["hidden_states"]).shape[1]

    layers = model.model.language_model.layers
    with torch.no_grad(), compress(model, "flowcut_qwen", keep=keep) as report:
        hooks = [layer.register_forward_pre_hook(partial(record, i), with_kwargs=True) for i, layer in enumerate(layers)]
        try:  # after the context's own hooks: each layer's rows as it runs them
            logits = model(**inputs).logits
        finally:
            for hook in hooks:
                hook.remove()
    assert [(r.stage, r.media_before, r.media_after) for r in report.records] == [
        ("encoder", [UNITS] * 2, [2 * keep] * 2), ("llm", [2 * keep] * 2, [keep] * 2)]
    width = inputs["input_ids"].shape[1] - UNITS + 2 * keep  # the LLM input after the ViT cut
    assert [lengths[i] for i in range(4)] == [width, width, width - keep, width - keep]
    per = SIDE * SIDE
    with torch.no_grad():
        for row in range(2):
            rows = slice(row * per, (row + 1) * per)
            tokens, units, counts = vit_by_hand(
                eager.model.visual, seen["h"][rows], tuple(r[rows] for r in seen["position_embeddings"]), 2 * keep)
            assert UNITS > counts[1] > counts[3] > counts[5] == 2 * keep, counts  # both adaptive cuts cut
            h, positions, media = row_sequence(inputs, lm, row, (tokens, units))
            expected, _, _ = llm_by_hand(eager, h, positions, media, keep)
            torch.testing.assert_close(logits[row, -expected.shape[1] :], expected[0], rtol=0, atol=1e-5)


def test_generation_with_a_cache_continues_the_hand_run():
    """Decoding steps see every row at layers 0-1 and the kept rows from layer 2 on (the port's
    cache after its prefill): breaks if decoding saw the dropped rows at layers >= 2, or lost them
    at layers 0-1, or if a step re-scored the rows."""
    keep, steps = 2, 3
    model, inputs = deep_qwen2_vl("eager")
    one = {k: v[:1] for k, v in inputs.items() if k not in ("pixel_values", "image_grid_thw")}
    one |= {"pixel_values": inputs["pixel_values"][: SIDE * SIDE], "image_grid_thw": inputs["image_grid_thw"][:1]}
    seen, lm = vit_inputs(model, one)
    with torch.no_grad(), compress(model, "flowcut_qwen", keep=keep):
        out = model.generate(**one, max_new_tokens=steps, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
    with torch.no_grad():
        tokens, units, _ = vit_by_hand(model.model.visual, seen["h"], seen["position_embeddings"], 2 * keep)
        h, positions, media = row_sequence(one, lm, 0, (tokens, units))
        kept, embed = None, model.get_input_embeddings()
        for step in range(steps):
            logits, kept, _ = llm_by_hand(model, h, positions, media, keep, kept)
            torch.testing.assert_close(out.logits[step][0], logits[0, -1], rtol=0, atol=1e-5)
            token = out.sequences[0, one["input_ids"].shape[1] + step]
            assert int(token) == int(logits[0, -1].argmax())
            h = torch.cat([h, embed(token)[None, None]], dim=1)
            positions = torch.cat([positions, positions[..., -1:] + 1], dim=-1)


@pytest.mark.parametrize("keep", [UNITS + 1, 1.0])
def test_a_budget_of_every_unit_changes_no_bit(keep):
    """Breaks if the ViT part cut an image of at most 2K units, or the LLM part cut or refused fewer
    than K rows (the port leaves both as they are)."""
    model, inputs = deep_qwen2_vl("sdpa")
    with torch.no_grad():
        plain = model(**inputs).logits
        with compress(model, "flowcut_qwen", keep=keep) as report:
            kept = model(**inputs).logits
    assert torch.equal(kept, plain)
    assert [r.media_after for r in report.records] == [[UNITS] * 2, [UNITS] * 2]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "qwen2_5_omni_image", "llava", "gemma3"])
def test_the_other_families_are_refused(family):
    """The port patches Qwen2-VL only: windowed blocks and DeepStack taps give no mean-query
    `cls_attention`, nor do encoders without one of any kind; an encoder with a [CLS] is
    `flowcut`'s (breaks if the ViT part ran on CLIP with its [CLS] as a patch)."""
    model, _ = tiny(family)
    reason = why_unsupported(model, "flowcut_qwen")
    assert reason is not None and reason.startswith("flowcut_qwen.encoder")
    assert ("[CLS]" if family == "llava" else "cls_attention") in reason
    with pytest.raises(ValueError, match="flowcut_qwen.encoder"), compress(model, "flowcut_qwen", keep=4):
        pass


def test_flowcut_itself_needs_a_cls():
    """`flowcut` stays LLaVA's: in Qwen2-VL's ViT it has no [CLS] attention."""
    model, _ = tiny("qwen2_vl")
    assert "cls_attention" in why_unsupported(model, "flowcut")
    assert why_unsupported(model, "flowcut_qwen") is None
