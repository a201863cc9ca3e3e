"""The analytic FLOPs of `reproductions.flops` against torch's own counter on tiny real models.

`FlopCounterMode` counts matmuls; it does not see the CPU's fused SDPA kernel, so the models run
eager attention, whose QK^T and attention x V are plain matmuls it counts.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    CLIPVisionConfig,
    DynamicCache,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    WhisperConfig,
)
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from reproductions.flops import (
    DecoderShape,
    EncoderShape,
    ModelShape,
    decode_flops,
    decoder_layer_flops,
    encoder_flops,
    fastv_formula,
    prefill_flops,
    stage_flops,
    token_schedule,
)

TOLERANCE = 0.02


def llama_config(**override) -> LlamaConfig:
    """A tiny LLaMA with grouped-query attention (4 query heads, 2 key/value heads) and SwiGLU."""
    sizes = dict(
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        attn_implementation="eager",
    )
    return LlamaConfig(**{**sizes, **override})


def counted(fn) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def close(analytic: int, measured: int) -> bool:
    return abs(analytic - measured) <= TOLERANCE * measured


@pytest.fixture(scope="module")
def llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(llama_config()).eval()


def test_shape_reads_gqa_and_swiglu_from_the_config(llama):
    shape = DecoderShape.from_config(llama.config)
    assert (shape.heads, shape.kv_heads, shape.head_dim) == (4, 2, 16)
    assert shape.gated_mlp and shape.layers == 3 and shape.vocab == 128


@pytest.mark.parametrize("tokens", [1, 7, 40])
def test_prefill_matches_flop_counter(llama, tokens):
    ids = torch.randint(0, 128, (1, tokens))
    measured = counted(lambda: llama(ids))  # a plain forward computes logits at every position
    analytic = prefill_flops(DecoderShape.from_config(llama.config), tokens, logits=tokens)
    assert close(analytic, measured), (analytic, measured)


def test_prefill_with_one_logit_matches_generate_style_forward(llama):
    ids = torch.randint(0, 128, (1, 30))
    measured = counted(lambda: llama(ids, logits_to_keep=1))
    assert close(prefill_flops(DecoderShape.from_config(llama.config), 30), measured)


def test_decode_step_with_kv_cache_matches_flop_counter(llama):
    ids = torch.randint(0, 128, (1, 25))
    with torch.no_grad():
        cache = llama(ids, use_cache=True).past_key_values
    step = torch.randint(0, 128, (1, 1))
    measured = counted(lambda: llama(step, cache=cache, use_cache=True))
    assert close(decode_flops(DecoderShape.from_config(llama.config), 25), measured)


def run_with_schedule(model: LlamaForCausalLM, embeds: torch.Tensor, drops: dict[int, int]):
    """Prefill that keeps the first drops[K] tokens from layer K on (FastV-style), filling a KV
    cache, then one decode step on that cache: returns (prefill FLOPs, decode FLOPs)."""
    inner, cache = model.model, DynamicCache(config=model.config)

    def prefill():
        hidden = embeds
        positions = torch.arange(hidden.shape[1])[None]
        for index, layer in enumerate(inner.layers):
            if index in drops:
                hidden, positions = hidden[:, : drops[index]], positions[:, : drops[index]]
            rotary = inner.rotary_emb(hidden, positions)
            hidden = layer(
                hidden, position_embeddings=rotary, cache=cache, use_cache=True
            )
        model.lm_head(inner.norm(hidden)[:, -1:])

    def decode():
        hidden = embeds[:, :1]
        for layer in inner.layers:
            rotary = inner.rotary_emb(hidden, torch.tensor([[embeds.shape[1]]]))
            hidden = layer(
                hidden, position_embeddings=rotary, cache=cache, use_cache=True
            )
        model.lm_head(inner.norm(hidden))

    return counted(prefill), counted(decode)


def test_layerwise_schedule_matches_flop_counter(llama):
    shape = DecoderShape.from_config(llama.config)
    embeds = torch.randn(1, 48, 64)
    schedule = token_schedule(shape.layers, 48, {1: 20, 2: 9})
    assert schedule == [48, 20, 9]
    measured_prefill, measured_decode = run_with_schedule(llama, embeds, {1: 20, 2: 9})
    assert close(prefill_flops(shape, schedule), measured_prefill)
    assert close(decode_flops(shape, schedule), measured_decode)
    assert prefill_flops(shape, schedule) < prefill_flops(shape, 48)


def test_llava_stages_match_flop_counter():
    torch.manual_seed(0)
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=28,
        patch_size=7,
        attn_implementation="eager",
    )
    config = LlavaConfig(vision_config=vision, text_config=llama_config(), image_token_index=127)
    config.vision_config._attn_implementation = "eager"
    config.text_config._attn_implementation = "eager"
    model = LlavaForConditionalGeneration(config).eval()
    shape = ModelShape.from_config(config)
    assert shape.encoder.tokens == 17 and shape.dropped == 1 and shape.projector == (32, 64, 64)
    ids = torch.cat([torch.full((1, 16), 127), torch.randint(0, 100, (1, 10))], dim=1)
    pixels = torch.randn(1, 3, 28, 28)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids, pixel_values=pixels, logits_to_keep=1)
    by_module = counter.get_flop_counts()

    def module(name: str) -> int:
        return sum(by_module[f"LlavaForConditionalGeneration.model.{name}"].values())

    stages = stage_flops(shape, visual_tokens=16, text_tokens=10)
    assert close(stages["vision_encoder"], module("vision_tower"))
    assert close(stages["projector"], module("multi_modal_projector"))
    assert close(stages["total_prefill"], counter.get_total_flops())


def test_whisper_encoder_matches_flop_counter():
    config = WhisperConfig(
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        num_mel_bins=8,
        max_source_positions=12,
        attn_implementation="eager",
    )
    encoder = WhisperEncoder(config).eval()
    features = torch.randn(1, 8, 24)
    measured = counted(lambda: encoder(features))
    assert close(encoder_flops(EncoderShape.from_config(config)), measured)


@pytest.mark.parametrize(("n", "d", "m"), [(640, 4096, 11008), (37, 64, 176), (1, 8, 8)])
def test_reduces_to_the_fastv_formula(n, d, m):
    """Multi-head attention, a two-matrix MLP and no LM head give 2x FastV's multiply-adds."""
    mha = DecoderShape(
        hidden=d,
        intermediate=m,
        layers=1,
        heads=8 if d % 8 == 0 else 1,
        kv_heads=8 if d % 8 == 0 else 1,
        head_dim=d // 8 if d % 8 == 0 else d,
        vocab=0,
        gated_mlp=False,
    )
    assert prefill_flops(mha, n, logits=0) == 2 * fastv_formula(n, d, m)
    # what the formula leaves out: SwiGLU's gate matrix adds n*d*m multiply-adds per layer,
    gated = DecoderShape(**{**mha.__dict__, "gated_mlp": True})
    assert decoder_layer_flops(gated, n) - decoder_layer_flops(mha, n) == 2 * n * d * m
    # and grouped-query attention shrinks the K and V projections it counts in full.
    if mha.heads == 8:
        gqa = DecoderShape(**{**mha.__dict__, "kv_heads": 2})
        saved = 2 * 2 * n * d * (d - 2 * mha.head_dim)
        assert decoder_layer_flops(mha, n) - decoder_layer_flops(gqa, n) == saved


def test_fastv_reduction_on_llava_13b_shape():
    """FastV's K=2, R=50% on LLaVA-1.5-13B (40 layers, d=5120, m=13824, 576 image + ~64 text
    tokens): by its own formula the saving is (1 - 2/40) * (1 - cost(n/2)/cost(n)) = 0.43 (the paper quotes 45%)."""
    n, kept = 640, 640 - 288
    full = 40 * fastv_formula(n, 5120, 13824)
    pruned = 2 * fastv_formula(n, 5120, 13824) + 38 * fastv_formula(kept, 5120, 13824)
    mha = DecoderShape(
        hidden=5120,
        intermediate=13824,
        layers=40,
        heads=40,
        kv_heads=40,
        head_dim=128,
        vocab=0,
        gated_mlp=False,
    )
    schedule = token_schedule(40, n, {2: kept})
    assert prefill_flops(mha, schedule, logits=0) == 2 * pruned
    assert 0.40 < 1 - pruned / full < 0.47


def test_bad_inputs_raise_clear_errors():
    shape = DecoderShape.from_config(llama_config())
    with pytest.raises(ValueError, match="one token count per layer"):
        prefill_flops(shape, [10, 10])
    with pytest.raises(ValueError, match="non-positive"):
        prefill_flops(shape, [10, 0, 5])
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        DecoderShape(hidden=64, intermediate=8, layers=1, heads=4, kv_heads=3, head_dim=16, vocab=0)
    with pytest.raises(ValueError, match="outside"):
        token_schedule(3, 10, {3: 5})
    with pytest.raises(ValueError, match="CLIP / SigLIP"):
        EncoderShape.from_config(llama_config())
    with pytest.raises(ValueError, match="decoder config"):
        DecoderShape.from_config(CLIPVisionConfig())


@pytest.mark.parametrize("keep", [16, 4])
def test_fastv_schedule_matches_flop_counter_inside_the_hf_integration(keep):
    """FastV run by `reproductions.hf.compress` on a tiny LLaVA: the per-layer schedule built
    from the integration's own report (all tokens before layer 2, the kept ones from it on)
    gives the counted FLOPs; the gap is the attention the integration recomputes at layer 1."""
    from reproductions.hf import compress
    from reproductions.hf.tiny import llava

    model, inputs = llava(attn="eager", images_per_row=(1,))
    shape = ModelShape.from_config(model.config)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter, compress(model, "fastv", keep=keep) as report:
        model(**inputs, logits_to_keep=1)
    (record,) = report.records
    assert record.media_after == [keep]
    before, after = record.tokens_before[0], record.tokens_after[0]
    schedule = token_schedule(shape.decoder.layers, before, {2: after})
    media = record.media_before[0]
    analytic = stage_flops(
        shape, visual_tokens=media, text_tokens=before - media, schedule=schedule
    )
    assert close(analytic["total_prefill"], counter.get_total_flops())


def test_audio_llm_and_unsupported_encoders():
    """Qwen2-Audio: a Whisper encoder read as the audio stage and a one-linear projector;
    encoders the module cannot read say so instead of guessing."""
    from transformers import Qwen2AudioConfig, Qwen2VLConfig

    shape = ModelShape.from_config(Qwen2AudioConfig())
    assert shape.modality == "audio" and shape.encoder.tokens == 1500
    assert shape.projector == (1280, shape.decoder.hidden)
    with pytest.raises(ValueError, match="build EncoderShape"):
        ModelShape.from_config(Qwen2VLConfig())
