"""The llm stage with a method that acts at several decoder layers (PyramidDrop): each step ranks
the media rows still present with that layer's own attention, and each segment of layers runs
on its own kept rows, in prefill and while decoding."""

from __future__ import annotations

from functools import partial

import torch
from hf_helpers import causal_mask, language_model_inputs, tiny

from reproductions import get
from reproductions.hf import compress, why_unsupported
from reproductions.hf.stages.base import cache_of
from reproductions.hf.tiny import IMAGE


def test_pdrop_equals_its_stages_run_by_hand():
    """Row 1 of the tiny LLaVA batch, pdrop at layers 1 and 2: layer 0 on every token; before
    layer 1 and before layer 2 the media rows left are ranked by the last prompt row's
    attention in that layer (heads averaged) and int(N / 2), then int(N / 4) stay."""
    method = get("pdrop", layers=(1, 2), ratio=0.5)
    eager, inputs = tiny("llava", "eager")
    one = {key: value[1:] for key, value in inputs.items()}
    lm = eager.model.language_model
    with torch.no_grad():
        h = language_model_inputs(eager, one)["inputs_embeds"]
        n = h.shape[1]
        kept = torch.arange(n)
        cos, sin = lm.rotary_emb(h, kept[None])
        media = set((one["input_ids"][0] == IMAGE).nonzero()[:, 0].tolist())
        counts = [len(media) // 2, len(media) // 4]
        h = lm.layers[0](
            h, attention_mask=causal_mask(lm, h, kept[None]), position_embeddings=(cos, sin)
        )
        for stage, layer in enumerate(lm.layers[1:], start=1):
            pe = (cos[:, kept], sin[:, kept])
            if stage <= 2:
                _, weights = layer.self_attn(
                    layer.input_layernorm(h),
                    position_embeddings=pe,
                    attention_mask=causal_mask(lm, h, kept[None]),
                )
                is_media = torch.tensor([int(j) in media for j in kept])
                scores = weights[0, :, -1].mean(0)[is_media]
                top = scores.topk(counts[stage - 1]).indices
                chosen = is_media.nonzero()[:, 0][top]
                stay = ~is_media
                stay[chosen] = True
                h, kept = h[:, stay], kept[stay]
                pe = (cos[:, kept], sin[:, kept])
            h = layer(
                h,
                attention_mask=causal_mask(lm, h, kept[None]),
                position_embeddings=pe,
                position_ids=kept[None],
            )
        expected = eager.lm_head(lm.norm(h))
    with compress(eager, method) as report, torch.no_grad():
        logits = eager(**one).logits
    assert [r.media_after for r in report.records] == [[counts[0]], [counts[1]]]
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


def test_pdrop_decodes_every_segment_over_its_own_cache():
    model, inputs = tiny("qwen2_vl")
    lm = model.model.language_model
    seen: dict[int, list[tuple[int, int]]] = {j: [] for j in range(4)}

    def record(j, module, args, kwargs):
        cache = cache_of(kwargs)
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[1] == 1:  # a decoding step: the mask spans the layer's cache + the token
            seen[j].append((kwargs["attention_mask"].shape[-1], cache.layers[j].keys.shape[2] + 1))

    with compress(model, "pdrop", layers=(1, 3), ratio=0.5), torch.no_grad():
        handles = [
            layer.register_forward_pre_hook(partial(record, j), with_kwargs=True)
            for j, layer in enumerate(lm.layers)
            if j
        ]
        try:
            model.generate(**inputs, max_new_tokens=3, do_sample=False)
        finally:
            for handle in handles:
                handle.remove()
    assert all(len(seen[j]) == 2 for j in (1, 2, 3))
    assert all(mask == cached for j in (1, 2, 3) for mask, cached in seen[j])
    assert seen[3][0][1] < seen[1][0][1]  # layers >= 3 cache fewer rows than layers 1-2


def test_layers_of_a_several_layer_method_are_its_own():
    model, _ = tiny("llava")
    assert "not with layer=" in why_unsupported(model, get("pdrop", layers=(1, 2)), layer=2)
    assert "K in [0, 3]" in why_unsupported(model, get("pdrop", layers=(1, 8)))
