"""ToMe inside InternVL's InternViT equals ToMe run by hand on the 2x2 units the model's pixel
shuffle pools into each LLM token (their patches concatenated, keys averaged), with the [CLS]
leading as a special token that never merges: every layer run by hand (layer scales, the
proportional attention of [CLS] and units), the units put back on the grid, the [CLS] dropped,
the model's pixel shuffle and projector, each tile's kept tokens at their units' placeholders."""

from __future__ import annotations

import copy

import pytest
import torch
from hf_helpers import language_model_inputs, logits_from, reference_sequence, tiny

from reproductions import Tokens, get
from reproductions.hf import compress
from reproductions.hf.models import adapter_for
from reproductions.hf.tiny import IMAGE


def internvit_by_hand(model, h, units, schedule):
    """The tiles' projected tokens (T, 16, D) from the first layer's input `h`, and each tile's
    kept units (T, K) in grid order."""
    layers = model.model.vision_tower.encoder.layer
    t, _, d = h.shape
    k = units.shape[1]
    current = units.expand(t, -1, -1)  # (T, U, k): the patches of each current unit
    source, sizes = torch.arange(units.shape[0]).expand(t, -1), torch.ones(t, 1 + units.shape[0])
    h = torch.cat([h[:, :1], h[:, 1:].gather(1, current.reshape(t, -1, 1).expand(-1, -1, d))], 1)
    for layer, r in zip(layers, schedule, strict=True):
        x = layer.layernorm_before(h)
        bias = torch.cat([sizes[:, :1], sizes[:, 1:].repeat_interleave(k, 1)], 1).log()[:, None, None, :]
        h = h + layer.lambda_1 * layer.attention(x, attention_mask=bias)[0]
        attn = layer.attention
        keys = attn.k_norm(attn.k_proj(x)).view(t, x.shape[1], attn.num_heads, -1).mean(2)
        keys = torch.cat([keys[:, :1], keys[:, 1:].reshape(t, -1, k, keys.shape[-1]).mean(2)], 1)
        features = torch.cat([h[:, :1].repeat(1, 1, k), h[:, 1:].reshape(t, -1, k * d)], 1)
        comp = get("tome", r=r)(Tokens(features=features, keys=keys, sizes=sizes, special=1))
        h = torch.cat([h[:, :1], comp.features[:, 1:].reshape(t, -1, d)], 1)
        sizes, current = comp.sizes, current.gather(1, (comp.positions[:, 1:, None] - 1).expand(-1, -1, k))
        source = comp.source[:, 1:].gather(1, source) - 1
        h = h + layer.lambda_2 * layer.mlp(layer.layernorm_after(h))
    merged = h[:, 1:].reshape(t, -1, k, d)
    grid = torch.empty(t, units.numel(), d)
    grid[:, units.flatten()] = merged.gather(1, source[..., None, None].expand(-1, -1, k, d)).reshape(t, -1, d)
    side = int(units.numel() ** 0.5)
    shuffled = model.model.pixel_shuffle(grid.view(t, side, side, d), scale_factor=model.config.downsample_ratio)
    placed = model.model.multi_modal_projector(shuffled.reshape(t, -1, shuffled.shape[-1]))
    kept = torch.stack([(units == row).all(-1).nonzero()[0, 0] for tile in current for row in tile])
    return placed, kept.view(t, -1).sort(-1).values


def with_qk_norm():
    """The tiny InternVL with InternViT-6B's q / k RMSNorms, their weights random (at ones they
    would scale each key as a whole, which no cosine similarity sees)."""
    model, inputs = tiny("internvl", "eager")
    config = copy.deepcopy(model.config)
    config.vision_config.use_qk_norm = True
    torch.manual_seed(1)
    model = type(model)(config).eval()
    with torch.no_grad():
        for layer in model.model.vision_tower.encoder.layer:
            layer.attention.k_norm.weight.uniform_(0.0, 2.0)
    return model, inputs


@pytest.mark.parametrize("qk_norm", [False, True], ids=["plain", "qk_norm"])
@pytest.mark.parametrize("schedule", [[0, 3], [3, 3]], ids=["last", "every"])
def test_internvit_layers_run_by_hand(schedule, qk_norm):
    model, inputs = with_qk_norm() if qk_norm else tiny("internvl", "eager")
    layers, units = model.model.vision_tower.encoder.layer, adapter_for(model).tap.units
    seen = {}
    handle = layers[0].register_forward_pre_hook(lambda m, a, kw: seen.update(h=a[0]), with_kwargs=True)
    try:
        lm = language_model_inputs(model, inputs)
    finally:
        handle.remove()
    with torch.no_grad():
        placed, kept = internvit_by_hand(model, seen["h"], units, schedule)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    replaced, tile = [], 0
    for row in range(ids.shape[0]):
        where = (ids[row] == IMAGE).nonzero().flatten()
        for start in range(int(where[0]), int(where[-1]) + 1, units.shape[0]):  # an image's tiles: one run
            replaced.append((row, start, units.shape[0], placed[tile, kept[tile]], kept[tile]))
            tile += 1
    positions = lm.get("position_ids")
    positions = positions if positions is not None else (mask.cumsum(-1) - 1).clamp(min=0)
    embeds, new_mask, new_pos = reference_sequence(lm["inputs_embeds"], positions, mask, replaced)
    expected = logits_from(model, embeds, new_mask, new_pos)
    with compress(model, "tome", r=3, schedule=schedule) as report, torch.no_grad():
        logits = model(**inputs).logits
    per_tile = kept.shape[1]
    assert report.records[0].media_after == [per_tile, 2 * per_tile]
    valid = new_mask.bool()
    torch.testing.assert_close(logits[valid], expected[valid], rtol=0, atol=1e-5)


def test_a_model_reading_another_layer_is_refused():
    """Merging runs up to the layer the model reads, which must be InternViT's last."""
    from reproductions.hf import why_unsupported

    model, _ = tiny("internvl")
    config = copy.deepcopy(model.config)
    config.vision_feature_layer = -2
    reason = why_unsupported(type(model)(config), "tome")
    assert reason is not None and "reads layer -2" in reason
