"""How a method meets a token budget: its parameters per budget, its input tokens, and ToMe-style
methods applied once per encoder layer."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from reproductions.examples import example_tokens
from reproductions.flops import ModelShape
from reproductions.interface import Method, Tokens

from .presets import Scenario


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
        out = out.then(step)
    return out


