"""FlowCut inside LLaVA's CLIP encoder equals the official per-layer loop run by hand: each layer
in full, then (while more than T tokens remain) that layer's [CLS] attention and values scored,
the running score updated, and the tokens pruned where the layers left before the last pruning
layer are even; the projector reads the kept tokens."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from hf_helpers import language_model_inputs, logits_from, reference_sequence

from reproductions.hf import compress
from reproductions.hf.tiny.parts import IMAGE, VISION, prompts, text_config

PATCHES = 36  # a 48 x 48 image of 8 x 8 patches


def deep_llava(attn: str):
    """A tiny LLaVA-1.5 whose CLIP has 6 layers (the projector reads layer 4: layers 0-3 step,
    1 prunes adaptively, 3 cuts to T) and 36 patches; the queries are scaled up so that the
    [CLS] attention is peaked (the random model's is near uniform, whose entropy removes none).
    A batch of three images: one in row 0, two in row 1."""
    torch.manual_seed(0)
    config = tf.LlavaConfig(
        vision_config=tf.CLIPVisionConfig(projection_dim=32, **{**VISION, "num_hidden_layers": 6, "image_size": 48}),
        text_config=tf.LlamaConfig(**text_config()),
        image_token_id=IMAGE,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        attn_implementation=attn,
    )
    model = tf.LlavaForConditionalGeneration(config).eval()
    vision = model.model.vision_tower
    with torch.no_grad():
        for layer in getattr(vision, "vision_model", vision).encoder.layers:
            layer.self_attn.q_proj.weight.mul_(30)
    g = torch.Generator().manual_seed(0)
    ids, mask = prompts([[(IMAGE, PATCHES)], [(IMAGE, PATCHES)] * 2], [7, 5], g)
    return model, {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.randn(3, 3, 48, 48, generator=g)}


def official_by_hand(model, pixels: torch.Tensor, target: int):
    """The official loop (`CLIPEncoder_forward` with select_layer = depth - 2, the layer LLaVA
    reads): the projected tokens of every image, each kept patch's placeholder index, and the
    token count after each layer."""
    vision = model.model.vision_tower
    vision = getattr(vision, "vision_model", vision)
    layers = vision.encoder.layers
    select = len(layers) - 2
    h = vision.pre_layrnorm(vision.embeddings(pixels))
    b = h.shape[0]
    kept, running, counts = torch.arange(h.shape[1]).expand(b, -1), None, []
    for idx, layer in enumerate(layers[: select + 1]):
        rpl = select - idx - 1
        attn, x = layer.self_attn, layer.layer_norm1(h)
        q, k, v = (p(x).view(b, x.shape[1], attn.num_heads, -1).transpose(1, 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        weights = (q * attn.scale @ k.transpose(-1, -2)).softmax(-1)
        h = h + attn.out_proj((weights @ v).transpose(1, 2).reshape(h.shape))
        h = h + layer.mlp(layer.layer_norm2(h))
        if h.shape[1] > target:
            cls_attention = weights[:, :, 0, 1:].mean(1)
            semantic = (v[:, :, :1] @ v.transpose(-1, -2)).softmax(-1).squeeze(2).mean(1)[:, 1:]
            scores = (cls_attention / cls_attention.sum(-1, keepdim=True) + semantic / semantic.sum(-1, keepdim=True))
            scores = scores * v.mean(1)[:, 1:].abs().sum(-1)
            running = scores if running is None else 0.5 * running + 0.5 * scores
            if rpl % 2 == 0:
                n = cls_attention.shape[-1]
                p = cls_attention / cls_attention.sum(-1, keepdim=True)
                ratio = -(p * p.log()).sum(-1) / torch.log(torch.tensor(n))
                prune = int(((n - (target - 1)) / rpl**0.5 * (1 - ratio**2)).max().round()) if rpl else h.shape[1]
                top = running.topk(max(h.shape[1] - prune, target) - 1, dim=1).indices.sort(dim=1).values
                running = running.gather(1, top)
                h = torch.cat([h[:, :1], h[:, 1:].gather(1, top[..., None].expand(-1, -1, h.shape[2]))], 1)
                kept = torch.cat([kept[:, :1], kept[:, 1:].gather(1, top)], 1)
        counts.append(h.shape[1])
    return model.model.multi_modal_projector(h[:, 1:]), kept[:, 1:] - 1, counts


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_flowcut_in_llava_equals_the_official_loop_run_by_hand(attn):
    target = 10  # the [CLS] and 9 patches
    model, inputs = deep_llava(attn)
    with torch.no_grad():
        projected, kept, counts = official_by_hand(model, inputs["pixel_values"], target)
        lm = language_model_inputs(model, inputs)
        plain = model(**inputs).logits
    assert PATCHES + 1 > counts[1] > counts[3] == target  # layer 1 cut some, layer 3 the rest
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    replaced, item = [], 0
    for row in range(ids.shape[0]):
        for start in [j for j in range(ids.shape[1]) if ids[row, j] == IMAGE and (j == 0 or ids[row, j - 1] != IMAGE)]:
            replaced.append((row, start, PATCHES, projected[item], kept[item]))
            item += 1
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    embeds, new_mask, new_pos = reference_sequence(lm["inputs_embeds"], positions, mask, replaced)
    expected = logits_from(model, embeds, new_mask, new_pos)
    with compress(model, "flowcut", keep=target) as report, torch.no_grad():
        logits = model(**inputs).logits
    valid = new_mask.bool()
    torch.testing.assert_close(logits[valid], expected[valid], rtol=0, atol=1e-5)
    assert report.records[0].media_after == [target - 1, 2 * (target - 1)]
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, plain)  # the context left nothing behind
