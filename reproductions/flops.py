"""Analytic FLOPs of a multimodal LLM, stage by stage, for any number of tokens per layer.

Token compression is sold on FLOPs, so the project counts them one way for every method:

- **What is counted**: the matrix multiplications (linear layers, QK^T, attention x V,
  convolutional stems, the LM head), at 2 FLOPs per multiply-accumulate. This is exactly what
  `torch.utils.flop_counter.FlopCounterMode` counts for eager attention (the tests check
  agreement on tiny transformers models), so analytic and measured counts are comparable.
- **What is not**: element-wise work (norms, softmax, RoPE, activations, residual adds, bias adds),
  embedding look-ups, and the saving a causal kernel may make by skipping the masked half of
  QK^T: attention over n queries and c keys counts all n * c scores, as the counters do.

Stages (`stage_flops`): the vision (or audio) encoder, the projector, the LLM prefill over the
whole prompt, and one decode step with a KV cache. Token counts may vary per layer (a
*schedule*): FastV keeps all n tokens in layers < K and n' from layer K on, so its prefill is
`prefill_flops(shape, token_schedule(layers, n, {K: n'}))`, and its decode step attends to a
cache of n entries in the first K layers and n' in the rest.

Grouped-query attention (fewer key/value heads), SwiGLU MLPs (three matrices: gate, up, down)
and per-layer schedules are all covered. The FastV paper's per-layer formula,
4nd^2 + 2n^2d + 2ndm (`fastv_formula`), is the special case of one layer of multi-head attention
with a two-matrix MLP counted in multiply-accumulates; see its docstring for what it leaves out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: a token count for every layer, or one count for all layers
Schedule = int | Sequence[int]

#: audio encoders built like Whisper's: two convolutions, then a transformer over 1500 frames
WHISPER_LIKE = frozenset({"whisper", "qwen2_audio_encoder"})

#: decoder families whose MLP has two matrices (up, down); LLaMA, Qwen, Mistral, Gemma... gate it
TWO_MATRIX_MLP = frozenset({"gpt2", "gpt_bigcode", "gpt_neox", "opt", "phi", "bloom", "falcon"})


def linear_flops(tokens: int, fan_in: int, fan_out: int) -> int:
    """FLOPs of a linear layer applied to `tokens` rows: 2 * tokens * fan_in * fan_out."""
    return 2 * tokens * fan_in * fan_out


def attention_flops(queries: int, keys: int, heads: int, head_dim: int) -> int:
    """FLOPs of QK^T and attention x V for `queries` rows over `keys` columns, every head."""
    return 2 * 2 * queries * keys * heads * head_dim


@dataclass(frozen=True)
class DecoderShape:
    """The sizes of a decoder-only LLM that its FLOPs depend on.

    `kv_heads` < `heads` is grouped-query attention; `gated_mlp` is a SwiGLU / GeGLU MLP with
    three matrices (gate, up, down) instead of two.
    """

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    gated_mlp: bool = True

    def __post_init__(self) -> None:
        _check_positive(self, ("hidden", "intermediate", "layers", "heads", "kv_heads", "head_dim"))
        if self.vocab < 0:
            raise ValueError(
                f"vocab={self.vocab}: pass the vocabulary size (0 to leave out the LM head)"
            )
        if self.heads % self.kv_heads:
            raise ValueError(
                f"heads={self.heads} is not a multiple of kv_heads={self.kv_heads}: grouped-query "
                "attention shares each key/value head among a whole number of query heads"
            )

    @classmethod
    def from_config(cls, config: Any) -> DecoderShape:
        """Read a transformers config (a text config, or a multimodal one with a text config)."""
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        names = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        names += ("vocab_size",)  # encoders (CLIPVisionConfig) have every size but this one
        missing = [name for name in names if getattr(text, name, None) is None]
        if missing:
            raise ValueError(
                f"{type(text).__name__} has no {', '.join(missing)}: pass a decoder config "
                "(LlamaConfig, Qwen2Config, MistralConfig, ...) or build DecoderShape(...) directly"
            )
        heads = text.num_attention_heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        return cls(
            hidden=text.hidden_size,
            intermediate=text.intermediate_size,
            layers=text.num_hidden_layers,
            heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            vocab=text.vocab_size,
            gated_mlp=getattr(text, "model_type", "") not in TWO_MATRIX_MLP,
        )


@dataclass(frozen=True)
class EncoderShape:
    """The sizes of a ViT / Whisper-style encoder: multi-head attention, two-matrix MLP.

    `tokens` is the sequence length every layer sees without compression (CLIP-L/336: 577 with
    the [CLS]); `stem` the FLOPs of the front end that makes the tokens from the input (patch
    embedding, convolutions), per input.
    """

    hidden: int
    intermediate: int
    layers: int
    heads: int
    head_dim: int
    tokens: int
    stem: int = 0
    gated_mlp: bool = False

    def __post_init__(self) -> None:
        _check_positive(self, ("hidden", "intermediate", "layers", "heads", "head_dim", "tokens"))

    @classmethod
    def from_config(cls, config: Any) -> EncoderShape:
        """Read a CLIP / SigLIP vision config or a Whisper-style audio encoder config (Whisper,
        Qwen2-Audio's encoder)."""
        kind = getattr(config, "model_type", "")
        if kind in WHISPER_LIKE:
            d = config.d_model
            frames = 2 * config.max_source_positions  # mel frames in; conv2 halves them
            stem = 2 * frames * config.num_mel_bins * 3 * d + 2 * (frames // 2) * d * 3 * d
            return cls(
                hidden=d,
                intermediate=config.encoder_ffn_dim,
                layers=config.encoder_layers,
                heads=config.encoder_attention_heads,
                head_dim=d // config.encoder_attention_heads,
                tokens=config.max_source_positions,
                stem=stem,
            )
        if (
            getattr(config, "patch_size", None) is None
            or getattr(config, "image_size", None) is None
        ):
            raise ValueError(
                f"cannot read an encoder from {type(config).__name__} (model_type={kind!r}): pass a "
                "CLIP / SigLIP vision config or a Whisper config, or build EncoderShape(...) directly"
            )
        d = config.hidden_size
        patches = (config.image_size // config.patch_size) ** 2
        channels = getattr(config, "num_channels", 3)
        # CLIP prepends a [CLS] token; SigLIP does not.
        cls_token = 1 if kind in {"clip_vision_model", "clip"} else 0
        return cls(
            hidden=d,
            intermediate=config.intermediate_size,
            layers=config.num_hidden_layers,
            heads=config.num_attention_heads,
            head_dim=d // config.num_attention_heads,
            tokens=patches + cls_token,
            stem=linear_flops(patches, channels * config.patch_size**2, d),
        )


@dataclass(frozen=True)
class ModelShape:
    """A whole multimodal LLM: an optional encoder, the projector's linear sizes, the decoder.

    `projector` lists the widths the projector's linear layers map through, e.g. LLaVA-1.5's
    two-layer MLP (1024, 4096, 4096); empty for none. `dropped` is how many leading encoder
    tokens do not reach the projector (LLaVA drops the [CLS]); `modality` what the encoder reads.
    """

    decoder: DecoderShape
    encoder: EncoderShape | None = None
    projector: tuple[int, ...] = ()
    dropped: int = 0
    modality: str = "image"

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """Read a transformers config: a decoder alone, LLaVA-style (CLIP / SigLIP encoder, a
        two-layer MLP projector, the LM) or Qwen2-Audio-style (Whisper encoder, one linear).
        Encoders of other families raise `ValueError`; build `ModelShape(...)` for them."""
        decoder = DecoderShape.from_config(config)
        vision = getattr(config, "vision_config", None) or getattr(config, "audio_config", None)
        if vision is None:
            return cls(decoder=decoder)
        encoder = EncoderShape.from_config(vision)
        if getattr(vision, "model_type", "") in WHISPER_LIKE:
            projector = (encoder.hidden, decoder.hidden)
            return cls(decoder=decoder, encoder=encoder, projector=projector, modality="audio")
        layers = getattr(config, "vision_feature_layer", -1)
        width = encoder.hidden * (1 if isinstance(layers, int) else len(layers))
        dropped = 1 if getattr(config, "vision_feature_select_strategy", "full") == "default" else 0
        return cls(
            decoder=decoder,
            encoder=encoder,
            projector=(width, decoder.hidden, decoder.hidden),
            dropped=dropped,
        )


def token_schedule(layers: int, tokens: int, drops: Mapping[int, int] | None = None) -> list[int]:
    """Tokens per layer when `tokens` enter and, for each layer K in `drops`, drops[K] remain
    from layer K on (FastV with K=2: token_schedule(32, 640, {2: 128}))."""
    if layers <= 0 or tokens <= 0:
        raise ValueError(f"layers={layers}, tokens={tokens}: pass positive counts")
    drops = dict(drops or {})
    bad = [k for k in drops if not 0 <= k < layers]
    if bad:
        raise ValueError(f"drop layers {bad} lie outside [0, {layers}): pass layer indices")
    schedule, current = [], tokens
    for layer in range(layers):
        current = drops.get(layer, current)
        if current <= 0:
            raise ValueError(f"layer {layer} would keep {current} tokens: keep at least one")
        schedule.append(current)
    return schedule


def decoder_layer_flops(shape: DecoderShape, tokens: int, context: int | None = None) -> int:
    """FLOPs of one decoder layer for `tokens` new tokens attending to `context` keys (default:
    the same tokens, as in prefill; during decoding, cache + new tokens)."""
    context = tokens if context is None else context
    d, q_width, kv_width = (
        shape.hidden,
        shape.heads * shape.head_dim,
        shape.kv_heads * shape.head_dim,
    )
    projections = linear_flops(tokens, d, q_width) + 2 * linear_flops(tokens, d, kv_width)
    projections += linear_flops(tokens, q_width, d)
    mlp = (3 if shape.gated_mlp else 2) * linear_flops(tokens, d, shape.intermediate)
    return projections + attention_flops(tokens, context, shape.heads, shape.head_dim) + mlp


def prefill_flops(shape: DecoderShape, schedule: Schedule, logits: int = 1) -> int:
    """FLOPs of the LLM prefill: every layer over its scheduled tokens, plus the LM head on
    `logits` positions (1, as `generate` computes; the sequence length for a plain forward)."""
    counts = _per_layer(schedule, shape.layers)
    body = sum(decoder_layer_flops(shape, n) for n in counts)
    return body + linear_flops(logits, shape.hidden, shape.vocab)


def decode_flops(shape: DecoderShape, cache: Schedule, steps: int = 1) -> int:
    """FLOPs of generating `steps` tokens, one at a time, after a prefill that left `cache`
    entries in each layer's KV cache (a schedule: per layer, or one count for all)."""
    if steps <= 0:
        raise ValueError(f"steps={steps}: pass a positive number of decode steps")
    counts = _per_layer(cache, shape.layers)
    total = 0
    for step in range(steps):
        total += sum(decoder_layer_flops(shape, 1, n + step + 1) for n in counts)
        total += linear_flops(1, shape.hidden, shape.vocab)
    return total


def encoder_flops(shape: EncoderShape, schedule: Schedule | None = None) -> int:
    """FLOPs of the encoder on one input: the stem plus every layer over its scheduled tokens
    (default: all `shape.tokens` in every layer; ToMe merges shrink the count layer by layer)."""
    counts = _per_layer(shape.tokens if schedule is None else schedule, shape.layers)
    d, width = shape.hidden, shape.heads * shape.head_dim
    total = shape.stem
    for n in counts:
        total += 2 * linear_flops(n, d, width) + 2 * linear_flops(n, width, d)  # q, k, v, out
        total += attention_flops(n, n, shape.heads, shape.head_dim)
        total += (3 if shape.gated_mlp else 2) * linear_flops(n, d, shape.intermediate)
    return total


def projector_flops(widths: Sequence[int], tokens: int) -> int:
    """FLOPs of a projector of linear layers mapping through `widths`, on `tokens` tokens."""
    return sum(linear_flops(tokens, a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))


def stage_flops(
    shape: ModelShape,
    visual_tokens: int,
    text_tokens: int,
    schedule: Schedule | None = None,
    encoder_schedule: Schedule | None = None,
    projected: int | None = None,
    logits: int = 1,
) -> dict[str, int]:
    """FLOPs per stage for one prompt of `visual_tokens` + `text_tokens` entering the LLM.

    `schedule` (tokens per decoder layer, default the whole prompt in every layer) describes
    LLM-stage methods; `encoder_schedule` encoder-stage ones; `projected` is how many tokens go
    through the projector (default `visual_tokens`; a method acting after the projector keeps
    it at the uncompressed count). The decode step is one token after this prefill, its KV cache
    holding what each layer kept. Stages a model lacks count 0.
    """
    prompt = visual_tokens + text_tokens
    schedule = prompt if schedule is None else schedule
    encoder = 0 if shape.encoder is None else encoder_flops(shape.encoder, encoder_schedule)
    projector = projector_flops(shape.projector, visual_tokens if projected is None else projected)
    prefill = prefill_flops(shape.decoder, schedule, logits)
    return {
        "vision_encoder": encoder,
        "projector": projector,
        "llm_prefill": prefill,
        "decode_per_token": decode_flops(shape.decoder, schedule),
        "total_prefill": encoder + projector + prefill,
    }


def fastv_formula(n: int, d: int, m: int) -> int:
    """FastV's per-layer cost 4nd^2 + 2n^2d + 2ndm (n tokens, hidden d, MLP width m).

    It equals `decoder_layer_flops(...) / 2` for one layer of multi-head attention
    (kv_heads = heads, heads * head_dim = d) with a two-matrix MLP, because it counts
    multiply-accumulates. What it leaves out, and `prefill_flops` / `stage_flops` include:
    the factor 2 FLOPs per multiply-accumulate; the third (gate) matrix of LLaMA's SwiGLU MLP
    (+ndm per layer, about a third of the MLP); grouped-query attention's smaller K/V
    projections (it overcounts those models); the LM head; the vision encoder and projector;
    decoding with a KV cache; and, like every counter here, element-wise operations and causal
    masking.
    """
    return 4 * n * d * d + 2 * n * n * d + 2 * n * d * m


def _per_layer(schedule: Schedule, layers: int) -> list[int]:
    if isinstance(schedule, int):
        counts = [schedule] * layers
    else:
        counts = [int(n) for n in schedule]
        if len(counts) != layers:
            raise ValueError(
                f"the schedule has {len(counts)} entries for {layers} layers: pass one token "
                "count per layer, or a single int for all"
            )
    if any(n <= 0 for n in counts):
        raise ValueError(f"schedule {counts} has a non-positive count: every layer sees a token")
    return counts


def _check_positive(shape: object, names: Sequence[str]) -> None:
    for name in names:
        value = getattr(shape, name)
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{type(shape).__name__}.{name}={value!r}: pass a positive int")
