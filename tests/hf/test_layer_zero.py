"""The llm stage at K = 0: the method acts on the decoder's input, with the attention layer 0
computes over the full input, and every layer runs on the kept rows (FrameFusion's first merge)."""

from __future__ import annotations

import torch
from hf_helpers import LastRowTopK, causal_mask, language_model_inputs, tiny

from reproductions import Tokens, get
from reproductions.hf import compress, why_unsupported
from reproductions.hf.tiny import IMAGE


def test_layer_zero_equals_every_layer_run_on_the_kept_rows():
    """Row 1 of the tiny LLaVA batch: the method on the input embeddings and layer 0's eager
    attention over them, then all layers on the kept rows."""
    method = LastRowTopK(keep=5, layer=0)
    eager, inputs = tiny("llava", "eager")
    sdpa, _ = tiny("llava", "sdpa")
    one = {key: value[1:] for key, value in inputs.items()}
    lm = eager.model.language_model
    with torch.no_grad():
        h = language_model_inputs(eager, one)["inputs_embeds"]
        n = h.shape[1]
        pos = torch.arange(n)[None]
        pe = lm.rotary_emb(h, pos)
        mask = causal_mask(lm, h, pos)
        first = lm.layers[0]
        _, weights = first.self_attn(
            first.input_layernorm(h), position_embeddings=pe, attention_mask=mask
        )
        media = (one["input_ids"][0] == IMAGE).nonzero()[:, 0]
        rows = torch.arange(int(media.max()) + 1, n)
        comp = method(
            Tokens(
                features=h[:, media], attention=weights[:, :, rows][:, :, :, media], text=h[:, rows]
            )
        )
        text = torch.tensor([j for j in range(n) if j not in set(media.tolist())])
        where = torch.cat([text, media[comp.positions[0]]])
        order = where.argsort()
        kept = where[order]
        h = torch.cat([h[0, text], comp.features[0]])[order][None]
        pe_kept = (pe[0][:, kept], pe[1][:, kept])
        kept_mask = causal_mask(lm, h, kept[None])
        for layer in lm.layers:
            h = layer(
                h, attention_mask=kept_mask, position_embeddings=pe_kept, position_ids=kept[None]
            )
        expected = eager.lm_head(lm.norm(h))
        for model, tol in ((eager, 1e-6), (sdpa, 1e-4)):
            with compress(model, method) as report:
                logits = model(**one).logits
            assert report.records[0].media_after == [comp.count] and comp.count < len(media)
            torch.testing.assert_close(logits, expected, rtol=0, atol=tol)


def test_framefusion_acts_before_layer_zero_by_default():
    model, inputs = tiny("qwen2_vl_video")
    assert get("framefusion").layer == 0
    assert why_unsupported(model, "framefusion") is None
    seen: list[int] = []
    with compress(model, "framefusion", cost=0.5) as report, torch.no_grad():
        # registered after compress's own hook, so it sees what layer 0 really gets
        handle = model.model.language_model.layers[0].register_forward_pre_hook(
            lambda module, args, kwargs: seen.append(
                (args or [kwargs["hidden_states"]])[0].shape[1]
            ),
            with_kwargs=True,
        )
        try:
            model.generate(**inputs, max_new_tokens=2, do_sample=False)
        finally:
            handle.remove()
    record = report.records[0]
    assert record.media_after[0] < record.media_before[0]
    assert seen[0] == max(record.tokens_after)  # layer 0 already runs on the kept rows
