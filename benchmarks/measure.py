"""One job: a method at one budget on one modality, timed and counted into one record."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from reproductions.flops import DecoderShape, ModelShape, stage_flops
from reproductions.interface import Method, Tokens

from . import PRE_LLM
from .budgets import Fit, apply, bench_tokens, llm_layer, passes_for, special_tokens
from .decoder import Decoder, cache_bytes
from .presets import Scenario
from .timing import Clock, PeakMemory, summary

#: wall-clock seconds after which a job stops repeating (it keeps at least two timed repeats)
JOB_SECONDS = 30.0

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



