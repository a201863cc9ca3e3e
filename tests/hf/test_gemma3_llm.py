"""The llm stage in Gemma 3: layers >= K run as Gemma 3 would run on the kept rows, each layer
with its own type's mask (full: causal, kept image tokens of one image bidirectional; sliding:
that within a window of 8 counted over the kept rows) and its own type's rotary embeddings; the
attention read at layer K - 1 follows that layer's mask. The hand-run below builds those masks
from their definition, not from the adapter's mask functions."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hf_helpers import language_model_inputs
from torch import Tensor, nn
from transformers import DynamicCache

from reproductions import Compression, Method, Tokens
from reproductions.hf import compress
from reproductions.hf.tiny import IMAGE, gemma3
from reproductions.ops import select, top_k


@dataclass
class RowsTopK(Method):
    """Keep the `keep` media tokens that the query rows attend to most at layer K - 1 (heads and
    rows averaged), in positional order."""

    keep: int = 5
    layer: int = 2

    stage = "llm"
    modality = ("image",)
    needs = ("attention", "text")

    def compress(self, tokens: Tokens) -> Compression:
        return select(tokens, top_k(tokens.attention.float().mean((1, 2)), min(self.keep, tokens.count)))


@dataclass
class MediaRowsTopK(RowsTopK):
    """RowsTopK over the media rows' own attention too (FitPrune's rows): at a full-attention
    layer, each image token's row sees the whole image."""

    attention_rows = "media"


def masks(ids: Tensor, window: int, dtype: torch.dtype, block: bool = True, typed: bool = True) -> dict[str, Tensor]:
    """Gemma 3's eager masks over the rows `ids` (L,) by definition: full = causal or same image
    (image tokens in one run); sliding = that and within the last `window` rows. `block` False:
    no bidirectional image block; `typed` False: the full mask for both types."""
    i = torch.arange(len(ids))
    image = ids == IMAGE
    run = torch.cumsum(image & ~torch.cat([torch.zeros(1, dtype=torch.bool), image[:-1]]), 0)
    same = image[:, None] & image[None, :] & (run[:, None] == run[None, :]) & block
    full = (i[None, :] <= i[:, None]) | same
    sliding = full & (i[None, :] > i[:, None] - window) if typed else full

    def eager(allowed: Tensor) -> Tensor:
        return torch.where(allowed, 0.0, torch.finfo(dtype).min).to(dtype)[None, None]

    return {"full_attention": eager(full), "sliding_attention": eager(sliding)}


def run_layers(lm: nn.Module, layers: range, h: Tensor, pos: Tensor, mask: dict, cache, typed: bool = True) -> Tensor:
    """Layers `layers` of Gemma 3's decoder by hand, each with its own type's mask and rotary
    embeddings at `pos` (`typed` False: the full-attention ones everywhere)."""
    for j in layers:
        kind = lm.config.layer_types[j] if typed else "full_attention"
        pe = lm.rotary_emb(h, pos, layer_type=kind)
        h = lm.layers[j](h, attention_mask=mask[kind], position_embeddings=pe, position_ids=pos, cache=cache)
    return h


def hand_run(model: nn.Module, one: dict, method: RowsTopK, step: bool = False, **wrong: bool):
    """Row 0's prefill logits (and, `step`: the first greedy decoding step's) as Gemma 3 runs
    on the kept rows from layer K on, and the kept rows; `wrong` breaks one semantic."""
    lm, k = model.model.language_model, method.layer
    window = lm.config.sliding_window
    ids = one["input_ids"][0]
    n = len(ids)
    cache = DynamicCache(config=lm.config) if step else None
    with torch.no_grad():
        h = language_model_inputs(model, one)["inputs_embeds"]
        pos = torch.arange(n)[None]
        h = run_layers(lm, range(k - 1), h, pos, masks(ids, window, h.dtype), cache)
        previous = lm.layers[k - 1]
        kind = lm.config.layer_types[k - 1]
        x = previous.input_layernorm(h)
        pe = lm.rotary_emb(x, pos, layer_type=kind)
        seen = masks(ids, window, h.dtype, wrong.get("block", True), wrong.get("typed", True))[kind]
        _, weights = previous.self_attn(x, position_embeddings=pe, attention_mask=seen)
        h = run_layers(lm, range(k - 1, k), h, pos, masks(ids, window, h.dtype), cache)
        media = (ids == IMAGE).nonzero()[:, 0]
        rows = torch.arange(int(media.max()) + 1, n)
        asking = torch.cat([media, rows]) if method.attention_rows == "media" else rows
        attention = weights[:, :, asking][:, :, :, media]
        comp = method(Tokens(features=h[:, media], attention=attention, text=h[:, rows]))
        kept = torch.cat([torch.arange(n)[ids != IMAGE], media[comp.positions[0]]]).sort().values
        own = masks(ids[kept], window, h.dtype, block=wrong.get("block", True), typed=wrong.get("typed", True))
        h = run_layers(lm, range(k, len(lm.layers)), h[:, kept], kept[None], own, cache, wrong.get("typed", True))
        logits = model.lm_head(lm.norm(h))
        if not step:
            return logits, kept
        token = logits[:, -1].argmax(-1)
        h = model.model.get_input_embeddings()(token[:, None])
        for j, layer in enumerate(lm.layers):  # cached: every row below K, the kept from K on,
            kind = lm.config.layer_types[j]  # a sliding layer its last window - 1 of them
            cached = n if j < k else len(kept)
            cached = min(cached, window - 1) if kind == "sliding_attention" else cached
            mask = torch.zeros(1, 1, 1, cached + 1, dtype=h.dtype)  # the step sees every cached row
            pe = lm.rotary_emb(h, torch.tensor([[n]]), layer_type=kind)
            h = layer(h, attention_mask=mask, position_embeddings=pe, position_ids=torch.tensor([[n]]), cache=cache)
        return logits, kept, model.lm_head(lm.norm(h))


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[nn.Module, dict]]:
    out = {}
    for attn in ("eager", "sdpa"):
        model, inputs = gemma3(attn=attn)
        out[attn] = (model, {key: value[:1] for key, value in inputs.items()})
    return out


def test_hand_run_keeping_every_row_is_the_model(models):
    """The hand-run's masks and rotary embeddings are Gemma 3's: kept all, it is the model."""
    model, one = models["eager"]
    expected, kept = hand_run(model, one, RowsTopK(keep=16))
    assert len(kept) == one["input_ids"].shape[1]
    with torch.no_grad():
        torch.testing.assert_close(model(**one).logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("layer", [2, 3])
def test_prefill_is_gemma_on_the_kept_rows(models, layer):
    """K = 2 reads a full-attention layer, K = 3 a sliding one; layers >= K mix both types."""
    method = RowsTopK(keep=5, layer=layer)
    eager, one = models["eager"]
    expected, kept = hand_run(eager, one, method)
    for attn, tol in (("eager", 1e-5), ("sdpa", 1e-4)):
        model, _ = models[attn]
        with compress(model, method) as report, torch.no_grad():
            logits = model(**one).logits
        assert report.records[0].media_after == [5] and logits.shape[1] == len(kept)
        torch.testing.assert_close(logits, expected, rtol=0, atol=tol)
    # each semantic matters here: one mask and one rotary embedding for every layer, or image
    # tokens without their bidirectional block, give other logits
    for wrong in ({"typed": False}, {"block": False}):
        other, _ = hand_run(eager, one, method, **wrong)
        assert other.shape != logits.shape or (other - logits).abs().max() > 1e-3, wrong


def test_attention_at_a_sliding_layer_follows_its_window(models):
    """At K = 3 the query rows see only the last 8 rows at layer 2: causal attention over the
    whole prompt would keep other image tokens."""
    eager, one = models["eager"]
    _, kept = hand_run(eager, one, RowsTopK(keep=5, layer=3))
    _, causal = hand_run(eager, one, RowsTopK(keep=5, layer=3), typed=False)
    assert not torch.equal(kept, causal)


def test_media_rows_attention_follows_the_image_block(models):
    """K = 2 reads layer 1, full attention: the image rows attend to the whole image."""
    method = MediaRowsTopK(keep=5, layer=2)
    eager, one = models["eager"]
    expected, kept = hand_run(eager, one, method)
    _, causal = hand_run(eager, one, method, block=False)
    assert not torch.equal(kept, causal)
    with compress(eager, method), torch.no_grad():
        torch.testing.assert_close(eager(**one).logits, expected, rtol=0, atol=1e-5)


def test_first_decoding_step_is_gemma_with_its_cache(models):
    """Layers < K cache every row, layers >= K the kept ones, sliding layers their last 7."""
    method = RowsTopK(keep=5, layer=2)
    eager, one = models["eager"]
    prefill, kept, step = hand_run(eager, one, method, step=True)
    assert len(kept) > eager.config.text_config.sliding_window  # the window cuts the cache
    for attn, tol in (("eager", 1e-5), ("sdpa", 1e-4)):
        model, _ = models[attn]
        with compress(model, method), torch.no_grad():
            out = model.generate(**one, max_new_tokens=2, do_sample=False, output_logits=True,
                                 return_dict_in_generate=True)
        torch.testing.assert_close(out.logits[0], prefill[:, -1], rtol=0, atol=tol)
        torch.testing.assert_close(out.logits[1], step[:, -1], rtol=0, atol=tol)


def test_keeping_every_token_is_the_unpatched_model(models):
    model, inputs = gemma3(attn="sdpa")
    with torch.no_grad():
        plain = model(**inputs).logits
        tokens = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        with compress(model, RowsTopK(keep=16, layer=2)):
            assert torch.equal(model(**inputs).logits, plain)
            assert torch.equal(model.generate(**inputs, max_new_tokens=3, do_sample=False), tokens)


def test_pruning_the_earlier_cache_is_refused(models):
    """Gemma 3's sliding layers < K cache only their last rows, so there is no earlier cache of
    every row to hide the dropped ones in."""

    @dataclass
    class Earlier(RowsTopK):
        decoding_rows = "kept"

    model, _ = models["sdpa"]
    with pytest.raises(ValueError, match="sliding-window layers"), compress(model, Earlier()):
        pass
    assert not any(layer._forward_pre_hooks for layer in model.model.language_model.layers)
