"""`python -m tools bench`: FLOPs, latency and memory of every registered method on one footing.

For every registered method and a sweep of budgets (images 576 -> 192, 128, 64; video 32x196
tokens; audio 1500 frames) on one decoder LLM, it measures the method's own time, the LLM
prefill, the time to first token, the decode time per token, peak memory and the KV cache, and
counts FLOPs per stage with `reproductions.flops`. Timings use warm-up runs and report the median
and p95 over repeats. Each run writes one JSON file and its plots, and prints the held figure:
for pre-LLM methods at the smallest image budget, measured prefill speed-up / FLOP-ratio
speed-up (>= 0.85), and every method's own time as a share of the uncompressed prefill (< 3%).

    python -m tools bench                      # the default sweep on `llava-cpu` (make bench)
    python -m tools bench --model tiny         # seconds: the smoke test's configuration
    python -m tools bench --config path/to/config.json --device cuda --dtype bfloat16
    python -m tools bench --checkpoint path/to/local/model --methods fastv,visionzip

Presets are built from configs with random weights (no download): `llava-cpu` is LLaVA-1.5
(CLIP-L/336 encoder shape, Vicuna-style decoder: multi-head attention, SwiGLU, 32000 words)
with the decoder scaled to a CPU (hidden 2048, MLP 5504, 16 heads, 4 layers) so that prefill
stays compute-bound at 128 tokens and measured and FLOP speed-ups are comparable.

Clocks: CUDA events on a GPU. On a CPU, torch runs one thread (`--threads`) and the default
clock is this process's CPU time (`--clock process`): with one thread it is the compute time of
the call, which other work on a shared machine barely moves; `--clock wall` takes wall-clock
time (the two agree on an idle machine).

What is timed, and why this way
-------------------------------
The method runs on `Tokens` of the scenario's real shape (random features and signals of the
right shapes: timing does not depend on the values). The LLM then prefills the prompt
`text[: T/2] + visual + text[T/2 :]` where `visual` holds the tokens the method kept (their
original positions keep their RoPE ids), by running the decoder layers one by one so that a
method acting inside the LLM (`stage == "llm"`) drops tokens at its layer K (the method's
`layer` field, else 2, FastV's choice): prefill runs the uncompressed prompt in layers < K and
the kept tokens from K on. `cache` methods prefill everything and decode over the kept cache.
`encoder` methods (ToMe) are applied once per encoder layer, as they run inside the encoder.
The vision / audio encoder and the projector themselves are not run (on CPU they would
dominate and are unchanged by projector methods); their FLOPs are analytic, for image prompts
(the model's vision encoder). End-to-end timing through `reproductions.hf.compress` inside a
`LlavaForConditionalGeneration` (FastV's attention recompute included) is
`benchmarks/prefill.py`'s job.

Each job (one method at one budget) runs `--warmup` untimed and `--repeats` timed repeats; a
job that has spent 30 s stops after two timed repeats (`samples` shows how many ran).

A method with a `keep` field gets the budget directly. Otherwise its numeric hyperparameter
whose output count lands nearest to the budget is chosen (pooling stride, ToMe's r, ...); the
record keeps the parameters and the real output count. A method whose count depends on the data
(`output_count` is None, e.g. PruMerge's adaptive ratio) runs once with its paper defaults.

JSON format (`benchmarks/results/<UTC time>-<model>-<device>.json`; `format` 1, kept stable)
----------------------------------------------------------------------------------------------
    {
      "format": 1,
      "created": "2026-11-24T12:03:00Z",
      "command": "python -m tools bench ...",
      "environment": {"python", "torch", "transformers", "platform", "device", "device_name",
                      "threads", "dtype", "git_commit"},
      "model": {"name": "llava-cpu", "source": "preset" | "config:<path>" | "checkpoint:<path>",
                "decoder": {DecoderShape fields}, "encoder": {EncoderShape fields} | null,
                "projector": [widths]},
      "settings": {"repeats", "warmup", "decode_tokens", "text_tokens", "batch",
                   "clock": "wall" | "process" | "cuda_events"},
      "scenarios": [{"modality": "image", "layout": [24, 24], "tokens": 576,
                     "budgets": [192, 128, 64], "measured_prefill": true,
                     "baseline": <record of method "none">}],
      "results": [<record>, ...],
      "summary": {"budget": 64, "thresholds": {"efficiency": 0.85, "overhead": 0.03},
                  "rows": [{"method", "stage", "tokens_out", "measured_speedup",
                            "flops_speedup", "efficiency", "overhead", "trainable"}],
                  "min_efficiency", "max_overhead", "holds": true | false,
                  "failing": ["resampler: overhead 6.44% (trainable module)", ...]}
    }

A record (one method at one budget on one modality):

    {"method": "pool", "stage": "projector", "trainable": false, "modality": "image",
     "params": {"stride": 3},
     "budget": 64 | null, "tokens_in": 576, "tokens_out": 64,
     "schedule": [prompt rows (text + media) per LLM layer during prefill],
     "method_time_s": T, "prefill_time_s": T | null, "ttft_s": T | null,
     "decode_time_per_token_s": T | null,     # T = {"median", "p95", "samples": [...]}
     "peak_memory_bytes": int | null, "peak_memory_kind": "cuda_allocated" | "cpu_rss" | null,
     "kv_cache_bytes": int,
     "flops": {"vision_encoder", "projector", "llm_prefill", "decode_per_token", "total_prefill"},
                                              # encoder, projector, total: null off images
     "speedup": {"measured": x | null, "flops": y, "efficiency": x / y | null},
     "overhead": method median / uncompressed prefill median | null,
     "error": null | "what went wrong"}

`budget` is the target of the sweep (null: the method's own adaptive count); `tokens_out` the
media tokens the LLM actually gets (from layer K on for `llm` methods; in the decoding cache for
`cache` methods). A record with an `error` holds only the fields up to `tokens_in`.
Times are seconds. `speedup` compares the LLM prefill with the scenario's uncompressed prompt
(FLOPs: `llm_prefill` ratio). Peak memory is the growth over the memory in use before the
prefill and one decode step, on an extra untimed run (CUDA: allocated bytes; CPU: the process's
peak resident set with large blocks returned to the system on free; null where neither works).
The KV cache bytes are those of the real cache after prefill (analytic when the prefill is not
timed: video and audio on a CPU without --long-prefill). Fields may be added, never renamed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import reproductions
from reproductions.examples import example_tokens
from reproductions.flops import DecoderShape, ModelShape, stage_flops
from reproductions.interface import Method, Tokens

FORMAT = 1
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
#: the figure the default run must hold, for pre-LLM methods at the smallest image budget
EFFICIENCY_FLOOR = 0.85
OVERHEAD_CEILING = 0.03
PRE_LLM = ("encoder", "projector")
#: wall-clock seconds after which a job stops repeating (it keeps at least two timed repeats)
JOB_SECONDS = 30.0


@dataclass(frozen=True)
class Scenario:
    """One modality's token grid and the budgets swept on it."""

    modality: str
    layout: tuple[int, ...]
    budgets: tuple[int, ...]
    measured_prefill: bool = True
    #: layers of the encoder that produces these tokens: ToMe-style methods (an `r` field, the
    #: tokens merged per layer) run once per layer
    encoder_layers: int = 1

    @property
    def tokens(self) -> int:
        return math.prod(self.layout)


@dataclass(frozen=True)
class Preset:
    """A model built from configs with random weights, plus the sweep that suits its size."""

    text: dict[str, Any]
    vision: dict[str, Any] | None
    scenarios: tuple[Scenario, ...]
    text_tokens: int
    repeats: int
    warmup: int
    decode_tokens: int


#: LLaVA-1.5's CLIP-L/336 vision tower: its shape sets the method inputs and encoder FLOPs.
CLIP_L_336 = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
)

PRESETS: dict[str, Preset] = {
    # LLaVA-1.5 (Vicuna: multi-head attention, SwiGLU at 2.7x, 32000 words) scaled to a CPU:
    # hidden 2048 keeps every matmul compute-bound at 128 tokens, so measured and FLOP
    # speed-ups are comparable.
    "llava-cpu": Preset(
        text=dict(
            hidden_size=2048,
            intermediate_size=5504,
            num_hidden_layers=4,
            num_attention_heads=16,
            num_key_value_heads=16,
            vocab_size=32000,
        ),
        vision=CLIP_L_336,
        scenarios=(
            Scenario("image", (24, 24), (192, 128, 64), encoder_layers=24),
            Scenario("video", (32, 14, 14), (1568, 784), False, encoder_layers=24),
            # Whisper-large's 32 encoder layers (Qwen2-Audio)
            Scenario("audio", (1500,), (750, 375), False, encoder_layers=32),
        ),
        text_tokens=64,
        repeats=5,
        warmup=1,
        decode_tokens=2,
    ),
    # The smoke test's model: seconds for the whole sweep.
    "tiny": Preset(
        text=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=128,
        ),
        vision=dict(
            CLIP_L_336,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=48,
            patch_size=8,
        ),
        scenarios=(
            Scenario("image", (12, 12), (48, 16), encoder_layers=2),
            Scenario("video", (8, 6, 6), (96,), encoder_layers=2),
            Scenario("audio", (100,), (50,), encoder_layers=2),
        ),
        text_tokens=8,
        repeats=2,
        warmup=1,
        decode_tokens=2,
    ),
}


# ----------------------------------------------------------------------------- timing


class Clock:
    """Timing of a callable: CUDA events on a GPU; on a CPU wall-clock time (perf_counter) or,
    with `kind="process"`, this process's CPU time, which other work on a shared machine barely
    moves (with one thread it is the compute time of the call)."""

    def __init__(self, device: torch.device, kind: str = "wall") -> None:
        self.cuda = device.type == "cuda"
        self.kind = "cuda_events" if self.cuda else kind
        self.now = time.process_time if kind == "process" else time.perf_counter

    def time(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000.0, result
        begin = self.now()
        result = fn()
        return self.now() - begin, result


def summary(samples: Sequence[float]) -> dict[str, Any] | None:
    """Median, p95 (nearest rank) and the samples themselves; None for no samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {"median": statistics.median(ordered), "p95": p95, "samples": list(samples)}


class PeakMemory:
    """Peak memory growth over a block: CUDA allocated bytes, or the CPU process's peak RSS.

    On CPU, glibc keeps freed blocks resident, so the peak resident set only grows with new
    allocations when freed memory goes back to the system: inside the block, every allocation
    above 64 KiB is its own mmap (returned on free), and the peak RSS is reset on entry
    (/proc/self/clear_refs). Used on an extra, untimed run so that timings keep glibc's defaults.
    """

    MMAP_THRESHOLD = -3  # mallopt's M_MMAP_THRESHOLD

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind: str | None = "cuda_allocated" if device.type == "cuda" else "cpu_rss"
        self.start = 0
        self.libc: Any = None

    def __enter__(self) -> PeakMemory:
        if self.kind == "cuda_allocated":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            return self
        try:
            import ctypes

            self.libc = ctypes.CDLL("libc.so.6")
            self.libc.mallopt(self.MMAP_THRESHOLD, 64 * 1024)
            self.libc.malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.start = _status_kib("VmRSS") * 1024
        except (OSError, AttributeError):
            self.kind = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.libc is not None:  # glibc's largest dynamic threshold, as after warm-up
            self.libc.mallopt(self.MMAP_THRESHOLD, 32 * 1024 * 1024)

    def peak(self) -> int | None:
        if self.kind == "cuda_allocated":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated(self.device) - self.start
        if self.kind == "cpu_rss":
            return max(0, _status_kib("VmHWM") * 1024 - self.start)
        return None


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {key}")


# ----------------------------------------------------------------------------- the model


@dataclass
class Decoder:
    """The parts of a transformers decoder LLM that a layer-by-layer prefill needs."""

    model: torch.nn.Module
    layers: Sequence[torch.nn.Module]
    rotary: torch.nn.Module
    norm: torch.nn.Module
    head: torch.nn.Module
    embed: torch.nn.Module
    config: Any

    @classmethod
    def wrap(cls, model: torch.nn.Module) -> Decoder:
        inner = model.get_decoder() if hasattr(model, "get_decoder") else model.model
        needed = ("layers", "rotary_emb", "norm", "embed_tokens")
        missing = [name for name in needed if not hasattr(inner, name)]
        if missing or not hasattr(model, "lm_head"):
            raise ValueError(
                f"{type(model).__name__} lacks {missing or ['lm_head']}: the bench runs LLaMA-style "
                "decoders (LLaMA, Qwen2, Mistral, LLaVA's language model); pass one of those"
            )
        config = model.config.get_text_config()
        return cls(
            model,
            inner.layers,
            inner.rotary_emb,
            inner.norm,
            model.lm_head,
            inner.embed_tokens,
            config,
        )

    def prefill(
        self, embeds: torch.Tensor, positions: torch.Tensor, drops: dict[int, torch.Tensor]
    ):
        """Run the prompt through every layer, keeping only the rows `drops[K]` from layer K on;
        returns (the KV cache, the first generated token id)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.config)
        hidden = embeds
        for index, layer in enumerate(self.layers):
            if index in drops:
                hidden, positions = hidden[:, drops[index]], positions[:, drops[index]]
            rotary = self.rotary(hidden, positions)
            hidden = layer(
                hidden, position_embeddings=rotary, past_key_values=cache, use_cache=True
            )
        logits = self.head(self.norm(hidden[:, -1:]))
        return cache, logits.argmax(-1)

    def decode(self, cache: Any, token: torch.Tensor, position: int) -> torch.Tensor:
        """One decode step on `cache`; returns the next token id."""
        hidden = self.embed(token)
        positions = torch.full_like(token, position)
        rotary = self.rotary(hidden, positions)
        for layer in self.layers:
            hidden = layer(
                hidden, position_embeddings=rotary, past_key_values=cache, use_cache=True
            )
        return self.head(self.norm(hidden)).argmax(-1)


def cache_bytes(cache: Any) -> int:
    """Bytes held by the keys and values of a transformers cache."""
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


def build_model(args: argparse.Namespace, preset: Preset, device: torch.device, dtype: torch.dtype):
    """(model, ModelShape, source) for a preset, a config file, or a local checkpoint."""
    import transformers as tf

    if args.checkpoint:
        config = tf.AutoConfig.from_pretrained(args.checkpoint)
        auto = (
            tf.AutoModelForImageTextToText
            if hasattr(config, "vision_config")
            else tf.AutoModelForCausalLM
        )
        model = auto.from_pretrained(args.checkpoint, dtype=dtype)
        source = f"checkpoint:{args.checkpoint}"
    else:
        if args.config:
            config = tf.AutoConfig.from_pretrained(args.config)
            source = f"config:{args.config}"
        else:
            text = tf.LlamaConfig(**preset.text, max_position_embeddings=16384)
            if preset.vision is None:
                config = text
            else:
                config = tf.LlavaConfig(
                    vision_config=tf.CLIPVisionConfig(**preset.vision), text_config=text
                )
            source = "preset"
        torch.manual_seed(0)
        text_config = config.get_text_config()
        text_config._attn_implementation = args.attention
        model = tf.AutoModelForCausalLM.from_config(text_config, dtype=dtype)
    model.config.get_text_config()._attn_implementation = args.attention
    try:
        shape = ModelShape.from_config(config)
    except ValueError as error:  # an encoder reproductions.flops cannot read: the LLM alone
        print(f"note: encoder FLOPs left out ({error})", file=sys.stderr)
        shape = ModelShape(decoder=DecoderShape.from_config(config))
    return model.to(device).eval(), shape, source


# ----------------------------------------------------------------------------- methods


def candidates(method_cls: type[Method], base: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """The numeric hyperparameters that may set a method's budget, with values to try (typed by
    the default, or by the declared benchmark value where the default is None)."""
    found = []
    for f in dataclasses.fields(method_cls):
        default = base.get(f.name, f.default) if f.default is None else f.default
        if f.name == "seed" or isinstance(default, bool) or not isinstance(default, int | float):
            continue
        if isinstance(default, int):
            values = sorted({*range(1, 65), *(round(2 ** (e / 4)) for e in range(24, 60))})
        else:
            values = [i / 200 for i in range(1, 201)]
        found.append((f.name, values))
    return found


def count_after(method: Method, tokens: Tokens, passes: int) -> int | None:
    """Output count after `passes` applications (encoder methods run once per layer)."""
    count = method.output_count(tokens)
    for _ in range(passes - 1):
        if count is None or count == tokens.special:
            break
        dummy = Tokens(features=torch.zeros(1, count, 1), special=tokens.special)
        count = method.output_count(dummy)
    return count


@dataclass
class Fit:
    """A method's parameters for one target budget, and the count they give (None: adaptive)."""

    params: dict[str, Any]
    count: int | None
    budget: int | None


def declared(method_cls: type[Method], modality: str) -> dict[str, Any]:
    """The method's `benchmark` ClassVar (shared with `benchmarks.methods`): parameters fixed
    for benchmarking (widths of trainable methods), one dict or one per modality."""
    params = getattr(method_cls, "benchmark", None) or {}
    if any(isinstance(value, dict) for value in params.values()):
        return dict(params.get(modality, {}))
    return dict(params)


def fit_budgets(
    method_cls: type[Method], tokens: Tokens, budgets: Sequence[int], passes: int, modality: str
) -> list[Fit]:
    """Parameters per budget: `keep` when there is one, else the numeric hyperparameter value
    whose count lands nearest; trainable methods and methods with data-dependent counts run
    once with their declared or default parameters. Duplicates are merged."""
    base = declared(method_cls, modality)
    names = {f.name for f in dataclasses.fields(method_cls)}
    special = tokens.special
    if "keep" in names:
        return [Fit({**base, "keep": b + special}, b + special, b) for b in budgets]
    default = method_cls(**base)
    count = count_after(default, tokens, passes)
    if count is None or method_cls.trainable:
        return [Fit(base, count, None)]
    options: list[tuple[dict[str, Any], int]] = []
    for name, values in candidates(method_cls, base):
        for value in values:
            try:
                count = count_after(method_cls(**{**base, name: value}), tokens, passes)
            except (ValueError, TypeError, ZeroDivisionError):
                continue
            if count is not None and 0 < count <= tokens.count:
                options.append(({**base, name: value}, count))
    if not options:
        return [Fit(base, count_after(default, tokens, passes), None)]

    def miss(fit_count: int, budget: int) -> int:
        return abs(fit_count - special - budget)

    def runs(params: dict[str, Any]) -> bool:  # output_count may accept what compress refuses
        try:
            apply(method_cls(**params), tokens, passes)
        except ValueError:
            return False
        return True

    fits: dict[str, Fit] = {}
    for budget in budgets:
        ranked = sorted(options, key=lambda option: miss(option[1], budget))
        params, count = next((o for o in ranked[:20] if runs(o[0])), ranked[0])
        key = json.dumps(params, sort_keys=True)
        if key not in fits or miss(fits[key].count, fits[key].budget) > miss(count, budget):
            fits[key] = Fit(params, count, budget)
    # a knob that cannot come within half of a budget does not stand for it (keep the best one)
    near = [fit for fit in fits.values() if 2 * miss(fit.count, fit.budget) <= fit.budget]
    chosen = near or [min(fits.values(), key=lambda fit: miss(fit.count, fit.budget) / fit.budget)]
    return sorted(chosen, key=lambda fit: -fit.count)


def llm_layer(method: Method, layers: int) -> int:
    """The decoder layer K where an LLM-stage method drops tokens (its `layer` field, else 2)."""
    layer = getattr(method, "layer", None)
    layer = 2 if not isinstance(layer, int) else layer
    return max(1, min(layer, layers - 1))


def special_tokens(method_cls: type[Method] | Method, shape: ModelShape) -> int:
    """Leading special tokens the method sees: the encoder's [CLS] inside the encoder (LLaVA
    drops it before the projector), none after it; or what the method insists on."""
    wanted = shape.dropped if method_cls.stage == "encoder" else 0
    allowed = method_cls.special_tokens
    return wanted if allowed is None or wanted in allowed else allowed[0]


def bench_tokens(
    method: Method,
    scenario: Scenario,
    special: int,
    dim: int,
    heads: int,
    queries: int,
    device: torch.device,
    dtype: torch.dtype,
) -> Tokens:
    """Random tokens of the scenario's grid with every signal the method reads."""
    return example_tokens(
        method,
        batch=1,
        dim=dim,
        layout=scenario.layout,
        special=special,
        heads=heads,
        queries=queries,
        audio_tokens=queries,
        dtype=dtype,
        device=device,
    )


def passes_for(method_cls: type[Method], scenario: Scenario) -> int:
    """How many times the method runs: once per encoder layer for ToMe-style merging (an `r`
    field: tokens merged per layer), once otherwise."""
    per_layer = method_cls.stage == "encoder" and "r" in {
        f.name for f in dataclasses.fields(method_cls)
    }
    return scenario.encoder_layers if per_layer else 1


def next_tokens(tokens: Tokens, out: Any) -> Tokens:
    """The input of the next pass: the output tokens with their sizes, and each signal of the
    previous pass taken at the output positions (a merged token keeps its representative's)."""
    idx = out.positions
    signals: dict[str, torch.Tensor] = {}
    if tokens.keys is not None:
        signals["keys"] = tokens.keys.gather(
            1, idx[..., None].expand(-1, -1, tokens.keys.shape[-1])
        )
    if tokens.cls_attention is not None:
        a = tokens.cls_attention
        signals["cls_attention"] = a.gather(2, idx[:, None].expand(-1, a.shape[1], -1))
    if tokens.attention is not None:
        a = tokens.attention
        signals["attention"] = a.gather(
            3, idx[:, None, None].expand(-1, a.shape[1], a.shape[2], -1)
        )
    return Tokens(
        features=out.features,
        special=tokens.special,
        sizes=out.sizes,
        text=tokens.text,
        frames=tokens.frames,
        audio=tokens.audio,
        **signals,
    )


def apply(method: Method, tokens: Tokens, passes: int) -> Any:
    """Run the method `passes` times, each pass on the previous pass's output (with its sizes);
    the returned Compression maps the original tokens to the last pass's slots."""
    out = step = method(tokens)
    current = tokens
    for _ in range(passes - 1):
        if step.count <= tokens.special + 1:
            break
        current = next_tokens(current, step)
        step = method(current)
        source = torch.where(out.source >= 0, step.source.gather(1, out.source.clamp_min(0)), -1)
        positions = out.positions.gather(1, step.positions)
        out = dataclasses.replace(step, source=source, positions=positions)
    return out


# ----------------------------------------------------------------------------- one run


@dataclass
class Job:
    method: str
    cls: type[Method] | None
    scenario: Scenario
    fit: Fit | None
    error: str | None = None


@dataclass
class Context:
    """What every measurement shares."""

    decoder: Decoder
    shape: ModelShape
    clock: Clock
    device: torch.device
    dtype: torch.dtype
    repeats: int
    warmup: int
    decode_tokens: int
    text_tokens: int
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)


def prompt(ctx: Context, visual: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Random prompt embeddings (1, T + visual, d), positions, and where the visual span starts."""
    g = torch.Generator().manual_seed(1)
    total = ctx.text_tokens + visual
    d = ctx.shape.decoder.hidden
    embeds = (torch.randn(1, total, d, generator=g) * 0.02).to(ctx.device, ctx.dtype)
    return embeds, torch.arange(total, device=ctx.device)[None], ctx.text_tokens // 2


def measure(ctx: Context, job: Job) -> dict[str, Any]:
    """Time one method at one budget (or the uncompressed baseline when job.cls is None)."""
    scenario, shape = job.scenario, ctx.shape
    n, layers = scenario.tokens, shape.decoder.layers
    record: dict[str, Any] = {
        "method": job.method,
        "stage": None if job.cls is None else job.cls.stage,
        "trainable": job.cls is not None and job.cls.trainable,
        "modality": scenario.modality,
        "params": {} if job.fit is None else job.fit.params,
        "budget": None if job.fit is None else job.fit.budget,
        "tokens_in": n,
        "error": job.error,
    }
    if job.error:
        return record
    method = tokens = None
    passes = 1
    if job.cls is not None:
        method = job.cls(**job.fit.params)
        stage = job.cls.stage
        passes = passes_for(job.cls, scenario)
        dim = shape.decoder.hidden if stage in ("llm", "cache") else _feature_dim(shape)
        dim = job.fit.params.get("dim", dim)  # trainable methods declare their input width
        tokens = bench_tokens(
            method,
            scenario,
            special_tokens(method, shape),
            dim,
            shape.decoder.heads,
            ctx.text_tokens,
            ctx.device,
            ctx.dtype,
        )
    embeds, positions, start = prompt(ctx, n)
    text_rows = torch.cat([torch.arange(start), torch.arange(start + n, n + ctx.text_tokens)])

    def kept_rows(out: Any) -> torch.Tensor:
        """Prompt rows the method keeps: text, and the visual rows at its output positions
        (topped up with unused rows where outputs do not map to one, as omni methods' audio)."""
        special = tokens.special
        count = min(n, out.count - special)
        visual = out.positions[0].to("cpu") - special
        visual = visual[(visual >= 0) & (visual < n)].unique()
        if visual.numel() < count:
            unused = torch.ones(n, dtype=torch.bool)
            unused[visual] = False
            visual = (
                torch.cat([visual, unused.nonzero()[:, 0][: count - visual.numel()]]).sort().values
            )
        rows = torch.cat([text_rows[:start], visual[:count] + start, text_rows[start:]])
        return rows.to(ctx.device)

    method_times, prefill_times, ttfts, decode_times = [], [], [], []
    kept = None
    drops: dict[int, torch.Tensor] = {}
    cache = None
    started = time.perf_counter()
    for run in range(ctx.warmup + ctx.repeats):
        if run >= ctx.warmup + 2 and time.perf_counter() - started > JOB_SECONDS:
            break  # a slow job keeps two timed repeats, so that the sweep ends in minutes
        method_time, out = (0.0, None)
        if method is not None:
            method_time, out = ctx.clock.time(lambda: apply(method, tokens, passes))
        if out is not None and kept is None:
            kept = kept_rows(out)
            if job.cls.stage == "llm":
                drops = {llm_layer(method, layers): kept}
            elif job.cls.stage in PRE_LLM:
                drops = {0: kept}
        measured = scenario.measured_prefill
        if measured:
            prefill_time, (cache, token) = ctx.clock.time(
                lambda drops=drops: ctx.decoder.prefill(embeds, positions, drops)
            )
            if job.cls is not None and job.cls.stage == "cache":
                _keep_cache(cache, kept)
            steps = []
            for step in range(ctx.decode_tokens):
                elapsed, token = ctx.clock.time(
                    lambda token=token, step=step, cache=cache: ctx.decoder.decode(
                        cache, token, embeds.shape[1] + step
                    )
                )
                steps.append(elapsed)
        if run < ctx.warmup:
            continue
        method_times.append(method_time)
        if measured:
            prefill_times.append(prefill_time)
            ttfts.append(method_time + prefill_time)
            decode_times.extend(steps)

    tokens_out = n if kept is None else kept.numel() - ctx.text_tokens
    schedule = _schedule(drops, embeds.shape[1], layers)
    peak = kind = None
    kv = _kv_bytes(shape.decoder, schedule, job, kept, ctx)
    if scenario.measured_prefill:
        with PeakMemory(ctx.device) as memory:
            cache, token = ctx.decoder.prefill(embeds, positions, drops)
            if job.cls is not None and job.cls.stage == "cache":
                _keep_cache(cache, kept)
            ctx.decoder.decode(cache, token, embeds.shape[1])
            peak, kind = memory.peak(), memory.kind
        kv = cache_bytes(cache) - _kv_step_bytes(shape.decoder, ctx)
    stage = None if job.cls is None else job.cls.stage
    flops = scenario_flops(
        ctx,
        scenario,
        stage,
        tokens_out,
        schedule,
        _encoder_schedule(method, tokens, shape) if passes > 1 else None,
    )
    record.update(
        tokens_out=tokens_out,
        schedule=schedule,
        method_time_s=summary(method_times) if method is not None else None,
        prefill_time_s=summary(prefill_times),
        ttft_s=summary(ttfts),
        decode_time_per_token_s=summary(decode_times),
        peak_memory_bytes=peak,
        peak_memory_kind=kind,
        kv_cache_bytes=kv,
        flops=flops,
    )
    baseline = ctx.baselines.get(scenario.modality)
    record["speedup"], record["overhead"] = _compare(record, baseline)
    return record


def _feature_dim(shape: ModelShape) -> int:
    return shape.encoder.hidden if shape.encoder is not None else shape.decoder.hidden


def _schedule(drops: dict[int, torch.Tensor], total: int, layers: int) -> list[int]:
    counts, current = [], total
    for layer in range(layers):
        if layer in drops:
            current = drops[layer].numel()
        counts.append(current)
    return counts


def _keep_cache(cache: Any, kept: torch.Tensor) -> None:
    """Keep only the `kept` rows of every layer's keys and values (a cache-stage method)."""
    for layer in cache.layers:
        layer.keys = layer.keys[:, :, kept]
        layer.values = layer.values[:, :, kept]


def _kv_step_bytes(decoder: DecoderShape, ctx: Context) -> int:
    """Bytes one decode step adds to the cache (the peak-memory run decodes one token)."""
    element = torch.empty((), dtype=ctx.dtype).element_size()
    return 2 * decoder.layers * decoder.kv_heads * decoder.head_dim * element


def _kv_bytes(decoder: DecoderShape, schedule: list[int], job: Job, kept: Any, ctx: Context) -> int:
    """Analytic KV cache bytes after prefill (when the prefill is not run)."""
    per_layer = schedule
    if job.cls is not None and job.cls.stage == "cache" and kept is not None:
        per_layer = [kept.numel()] * decoder.layers
    element = torch.empty((), dtype=ctx.dtype).element_size()
    return sum(2 * decoder.kv_heads * decoder.head_dim * count * element for count in per_layer)


def _encoder_schedule(method: Method, tokens: Tokens, shape: ModelShape) -> list[int] | None:
    """Encoder tokens per layer when the method merges after every layer (ToMe's r)."""
    if shape.encoder is None:
        return None
    counts, current = [], shape.encoder.tokens
    for _ in range(shape.encoder.layers):
        counts.append(current)
        dummy = Tokens(features=torch.zeros(1, current, 1), special=min(tokens.special, current))
        nxt = method.output_count(dummy)
        current = current if nxt is None else max(1, nxt)
    return counts


def scenario_flops(
    ctx: Context,
    scenario: Scenario,
    stage: str | None,
    tokens_out: int,
    schedule: list[int],
    encoder_schedule: list[int] | None,
) -> dict[str, int | None]:
    """FLOPs per stage of one record. The encoder and projector count for prompts of the
    modality the model's encoder reads (None for the others: LLaVA's CLIP is not a video or
    audio encoder here)."""
    shape, n, text = ctx.shape, scenario.tokens, ctx.text_tokens
    pre = stage in PRE_LLM
    encoded = scenario.modality == shape.modality and shape.encoder is not None
    model = shape if encoded else dataclasses.replace(shape, encoder=None, projector=())
    flops: dict[str, int | None] = dict(
        stage_flops(
            model,
            visual_tokens=tokens_out if pre else n,
            text_tokens=text,
            schedule=schedule,
            encoder_schedule=encoder_schedule,
            projected=tokens_out if pre else n,
        )
    )
    if stage == "cache":  # decoding reads only the kept cache entries
        flops["decode_per_token"] = stage_flops(model, tokens_out, text)["decode_per_token"]
    if not encoded:
        flops["vision_encoder"] = flops["projector"] = flops["total_prefill"] = None
    return flops


def _compare(record: dict[str, Any], baseline: dict[str, Any] | None):
    if baseline is None or record.get("flops") is None:
        return {"measured": None, "flops": 1.0, "efficiency": None}, None
    flops = baseline["flops"]["llm_prefill"] / record["flops"]["llm_prefill"]
    measured = efficiency = overhead = None
    base_prefill = baseline.get("prefill_time_s")
    if base_prefill and record.get("prefill_time_s"):
        measured = base_prefill["median"] / record["prefill_time_s"]["median"]
        efficiency = measured / flops
    if base_prefill and record.get("method_time_s"):
        overhead = record["method_time_s"]["median"] / base_prefill["median"]
    return {"measured": measured, "flops": flops, "efficiency": efficiency}, overhead


# ----------------------------------------------------------------------------- the sweep


def warm_up(ctx: Context) -> None:
    """One untimed prefill and decode step, so the first job does not pay for first touches."""
    embeds, positions, _ = prompt(ctx, 1)
    cache, token = ctx.decoder.prefill(embeds, positions, {})
    ctx.decoder.decode(cache, token, embeds.shape[1])


def plan(
    selected: Sequence[str], scenarios: Sequence[Scenario], shape: ModelShape, text_tokens: int
) -> list[Job]:
    """Every (method, budget) job of the sweep, with the baselines first per modality."""
    jobs: list[Job] = []
    registry = reproductions.methods()
    for scenario in scenarios:
        jobs.append(Job("none", None, scenario, None))
        for name in selected:
            cls = registry[name]
            if scenario.modality not in cls.modality:
                continue
            if scenario.modality == "audio" and "audio" in cls.needs:
                continue  # omni methods read audio as a signal beside their video tokens
            try:
                method = cls(**declared(cls, scenario.modality))
                passes = passes_for(cls, scenario)
                tokens = bench_tokens(
                    method,
                    scenario,
                    special_tokens(cls, shape),
                    4,
                    2,
                    text_tokens,
                    torch.device("cpu"),
                    torch.float32,
                )
                fits = fit_budgets(cls, tokens, scenario.budgets, passes, scenario.modality)
            except Exception as error:  # a method that cannot run here is reported, not fatal
                jobs.append(
                    Job(
                        name, cls, scenario, Fit({}, None, None), f"{type(error).__name__}: {error}"
                    )
                )
                continue
            jobs.extend(Job(name, cls, scenario, fit) for fit in fits)
    return jobs


def progress(jobs: Sequence[Job], enabled: bool) -> Iterator[Job]:
    try:
        from tqdm import tqdm
    except ImportError:  # the bench extra is missing: a plain counter on stderr
        for index, job in enumerate(jobs):
            if enabled:
                print(
                    f"[{index + 1}/{len(jobs)}] {job.scenario.modality} {job.method}",
                    file=sys.stderr,
                )
            yield job
        return
    bar = tqdm(jobs, disable=not enabled, unit="run", dynamic_ncols=True)
    for job in bar:
        bar.set_description(f"{job.scenario.modality} {job.method}")
        yield job


def run(args: argparse.Namespace) -> dict[str, Any]:
    preset = PRESETS[args.model]
    device = torch.device(
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    dtype = getattr(torch, args.dtype)
    if device.type == "cpu" or args.threads:
        # one thread by default on a CPU: timings then do not swing with other work on the machine
        torch.set_num_threads(args.threads or 1)
    if device.type == "cpu" and args.clock == "process" and torch.get_num_threads() > 1:
        raise ValueError(
            f"--clock process sums CPU time over the {torch.get_num_threads()} threads, which is "
            "not a latency: pass --clock wall with --threads, or one thread"
        )
    registry = reproductions.methods()
    selected = args.methods.split(",") if args.methods else list(registry)
    unknown = [name for name in selected if name not in registry]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; registered: {', '.join(registry)}")
    model, shape, source = build_model(args, preset, device, dtype)
    scenarios = [s for s in preset.scenarios if s.modality in args.modalities.split(",")]
    for name, value in (
        ("image", args.image_budgets),
        ("video", args.video_budgets),
        ("audio", args.audio_budgets),
    ):
        if value:
            budgets = tuple(int(b) for b in value.split(","))
            scenarios = [
                dataclasses.replace(s, budgets=budgets) if s.modality == name else s
                for s in scenarios
            ]
    if args.long_prefill or device.type == "cuda":
        scenarios = [dataclasses.replace(s, measured_prefill=True) for s in scenarios]
    text_tokens = args.text_tokens or preset.text_tokens
    ctx = Context(
        decoder=Decoder.wrap(model),
        shape=shape,
        clock=Clock(device, args.clock),
        device=device,
        dtype=dtype,
        repeats=args.repeats or preset.repeats,
        warmup=preset.warmup if args.warmup is None else args.warmup,
        decode_tokens=args.decode_tokens or preset.decode_tokens,
        text_tokens=text_tokens,
    )
    jobs = plan(selected, scenarios, shape, text_tokens)
    results = []
    with torch.inference_mode():
        warm_up(ctx)
        for job in progress(jobs, not args.quiet):
            try:
                record = measure(ctx, job)
            except Exception as error:  # report and go on: one broken method must not stop the run
                record = {
                    "method": job.method,
                    "stage": job.cls.stage if job.cls else None,
                    "modality": job.scenario.modality,
                    "params": job.fit.params if job.fit else {},
                    "budget": job.fit.budget if job.fit else None,
                    "tokens_in": job.scenario.tokens,
                    "error": f"{type(error).__name__}: {error}",
                }
            if job.cls is None:
                ctx.baselines[job.scenario.modality] = record
            results.append(record)
    scenario_rows = [
        {
            "modality": s.modality,
            "layout": list(s.layout),
            "tokens": s.tokens,
            "budgets": list(s.budgets),
            "measured_prefill": s.measured_prefill,
            "baseline": ctx.baselines.get(s.modality),
        }
        for s in scenarios
    ]
    return {
        "format": FORMAT,
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m tools bench " + " ".join(args.argv),
        "environment": environment(device, dtype),
        "model": {
            "name": args.model if source == "preset" else Path(source.split(":", 1)[1]).name,
            "source": source,
            "decoder": dataclasses.asdict(shape.decoder),
            "encoder": None if shape.encoder is None else dataclasses.asdict(shape.encoder),
            "projector": list(shape.projector),
        },
        "settings": {
            "repeats": ctx.repeats,
            "warmup": ctx.warmup,
            "decode_tokens": ctx.decode_tokens,
            "text_tokens": text_tokens,
            "batch": 1,
            "clock": ctx.clock.kind,
        },
        "scenarios": scenario_rows,
        "results": [r for r in results if r["method"] != "none"],
        "summary": figure(results, scenarios),
    }


def figure(results: Sequence[dict[str, Any]], scenarios: Sequence[Scenario]) -> dict[str, Any]:
    """The held figure: pre-LLM methods at the smallest image budget (efficiency), and every
    method's overhead at that budget, with whether both thresholds hold."""
    image = next((s for s in scenarios if s.modality == "image"), None)
    budget = min(image.budgets) if image else None
    rows = []
    for r in results:
        if r["method"] == "none" or r["modality"] != "image" or r.get("error"):
            continue
        if r["budget"] != budget and r["budget"] is not None:
            continue
        speed = r.get("speedup") or {}
        rows.append(
            {
                "method": r["method"],
                "stage": r["stage"],
                "tokens_out": r.get("tokens_out"),
                "measured_speedup": speed.get("measured"),
                "flops_speedup": speed.get("flops"),
                "efficiency": speed.get("efficiency"),
                "overhead": r.get("overhead"),
                "trainable": bool(r.get("trainable")),
            }
        )
    failing = [
        f"{r['method']}: efficiency {r['efficiency']:.3f}"
        for r in rows
        if r["stage"] in PRE_LLM
        and r["efficiency"] is not None
        and r["efficiency"] < EFFICIENCY_FLOOR
    ] + [
        f"{r['method']}: overhead {100 * r['overhead']:.2f}%"
        + (" (trainable module)" if r["trainable"] else "")
        for r in rows
        if r["overhead"] is not None and r["overhead"] >= OVERHEAD_CEILING
    ]
    efficiencies = [
        r["efficiency"] for r in rows if r["stage"] in PRE_LLM and r["efficiency"] is not None
    ]
    overheads = [r["overhead"] for r in rows if r["overhead"] is not None]
    low = min(efficiencies) if efficiencies else None
    high = max(overheads) if overheads else None
    holds = None
    if low is not None and high is not None:
        holds = low >= EFFICIENCY_FLOOR and high < OVERHEAD_CEILING
    return {
        "budget": budget,
        "thresholds": {"efficiency": EFFICIENCY_FLOOR, "overhead": OVERHEAD_CEILING},
        "rows": rows,
        "min_efficiency": low,
        "max_overhead": high,
        "holds": holds,
        "failing": failing,
    }


def environment(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    import transformers

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or _cpu_model() or platform.machine()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "device": device.type,
        "device_name": name,
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch."),
        "git_commit": commit,
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def report(data: dict[str, Any]) -> str:
    """The lines printed at the end of a run: the held figure and every method's overhead."""
    s = data["summary"]
    image = next((sc for sc in data["scenarios"] if sc["modality"] == "image"), {"tokens": "?"})
    lines = [
        f"\nPre-LLM methods on image tokens at {image['tokens']} -> {s['budget']} "
        f"(efficiency = measured prefill speed-up / FLOP-ratio speed-up, must be >= "
        f"{s['thresholds']['efficiency']}; overhead = method time / uncompressed prefill, "
        f"must be < {s['thresholds']['overhead']:.0%}):"
    ]
    lines.append(
        f"  {'method':<18}{'stage':<11}{'tokens':>7}{'measured':>10}{'FLOPs':>8}{'ratio':>8}{'overhead':>10}"
    )
    for r in s["rows"]:

        def num(value: float | None, fmt: str) -> str:
            return "-" if value is None else format(value, fmt)

        lines.append(
            f"  {r['method']:<18}{r['stage']:<11}{r['tokens_out']!s:>7}"
            f"{num(r['measured_speedup'], '.2f'):>10}{num(r['flops_speedup'], '.2f'):>8}"
            f"{num(r['efficiency'], '.3f'):>8}{num(r['overhead'] and 100 * r['overhead'], '.2f'):>9}%"
        )
    errors = [r for r in data["results"] if r.get("error")]
    for r in errors:
        lines.append(f"  ! {r['method']} ({r['modality']}): {r['error']}")
    if s["min_efficiency"] is not None:
        lines.append(
            f"min efficiency {s['min_efficiency']:.3f}, max overhead {100 * s['max_overhead']:.2f}%: "
            + ("the figure holds" if s["holds"] else "the figure does NOT hold")
        )
    for failure in s.get("failing", []):
        lines.append(f"  fails: {failure}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        choices=sorted(PRESETS),
        default="llava-cpu",
        help="preset with random weights (default llava-cpu: LLaVA-1.5 scaled to a CPU)",
    )
    p.add_argument(
        "--config",
        help="a transformers config (directory or config.json) to build with random weights",
    )
    p.add_argument("--checkpoint", help="a local transformers checkpoint directory to load")
    p.add_argument(
        "--methods", help="comma-separated registry names (default: every registered method)"
    )
    p.add_argument("--modalities", default="image,video,audio")
    p.add_argument("--image-budgets", help="comma-separated token budgets for 576 image tokens")
    p.add_argument("--video-budgets")
    p.add_argument("--audio-budgets")
    p.add_argument("--repeats", type=int, help="timed repeats (median and p95 over them)")
    p.add_argument("--warmup", type=int, help="untimed warm-up runs")
    p.add_argument("--decode-tokens", type=int)
    p.add_argument("--text-tokens", type=int)
    p.add_argument(
        "--long-prefill",
        action="store_true",
        help="also time the LLM on video and audio prompts (slow on a CPU; always on CUDA)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--attention", default="sdpa", choices=["sdpa", "eager"])
    p.add_argument(
        "--clock",
        default="process",
        choices=["wall", "process"],
        help="CPU timing: this process's CPU time (default: with one thread, the compute "
        "time, which other work on a shared machine barely moves) or wall-clock time",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default 1 on a CPU)")
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON and plots")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    args.argv = argv
    if args.config and args.checkpoint:
        raise SystemExit("pass --config or --checkpoint, not both")
    try:
        data = run(args)
    except ValueError as error:  # bad options: say what to pass, without a traceback
        print(f"python -m tools bench: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{data['created'].replace(':', '').replace('-', '')}-{data['model']['name']}-{data['environment']['device']}"
    path = args.out / f"{stem}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    written = [path]
    if not args.no_plots:
        from benchmarks.plots import plot

        written += plot(data, args.out, stem)
    print(report(data))
    for item in written:
        print(f"wrote {item}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
