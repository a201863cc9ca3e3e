"""Time every registered method's call on realistic shapes, against the issue's targets.

    python -m benchmarks methods [--preset image|video|audio|all] [--methods a,b] [--repeats N]

Presets (batch 1, inputs from `reproductions.examples.example_tokens`, float32, CPU):

- image: LLaVA-1.5, a 24 x 24 grid plus one [CLS] where the method takes one, D=1024,
  16 heads; target 20 ms.
- video: LLaVA-OneVision, 32 frames of 14 x 14 tokens, D=896, 14 heads; target 100 ms.
- audio: Whisper, 1500 frames (30 s), D=1280, 20 heads, for encoder-stage methods; a method
  of a later stage gets what Qwen2-Audio feeds its LLM: those frames average-pooled 2:1 and
  projected, 750 tokens, D=4096 (its signals still from the 1500-frame encoder); target 20 ms.

A method runs on the presets of its modalities; one that spans several stages is timed part
by part (`prunevid.projector`, `prunevid.llm`), each on inputs of its own stage, a later part
on what the earlier one left. A method that declares `attention_heads = "max"` (FitPrune,
PruneVid's pruning) gets the attention's head maximum, one head, as the integration hands it.
Its parameters are its class's `benchmark` ClassVar dict when it declares one (one dict for
every preset, or one per preset name); otherwise its `example` parameters with `keep`, where
it has one, set to 1/9 of the tokens (64 of 577 on the image preset). The "params" column
says which. Each call is warmed up, then timed `--repeats` times; the table gives the median
and the 95th percentile.
Timings use one intra-op thread by default (`--threads`), so that they do not swing with
whatever else runs on the machine; pass `--threads 0` for torch's default.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

import reproductions
from reproductions.examples import example_tokens
from reproductions.interface import Method, Tokens


@dataclass(frozen=True)
class Preset:
    modality: str
    layout: tuple[int, ...]
    dim: int
    heads: int
    target_ms: float
    #: (layout, dim) of the tokens after the encoder, where they differ from the encoder's
    projected: tuple[tuple[int, ...], int] | None = None


PRESETS = {
    "image": Preset("image", (24, 24), 1024, 16, 20.0),
    "video": Preset("video", (32, 14, 14), 896, 14, 100.0),
    "audio": Preset("audio", (1500,), 1280, 20, 20.0, projected=((750,), 4096)),
}
QUERIES = 32  # prompt rows after the visual span (the `attention` and `text` signals)
AUDIO_TOKENS = 1500  # the `audio` signal of omni methods: 30 s of Whisper frames
DEFAULT_KEEP = 1 / 9
WARMUP = 3


def parameters(cls: type[Method], preset: str) -> tuple[dict[str, Any], str]:
    """The parameters to time `cls` with on `preset`, and where they came from."""
    declared = getattr(cls, "benchmark", None) or {}
    per_preset = any(isinstance(value, dict) for value in declared.values())
    if per_preset and isinstance(declared.get(preset), dict):
        return dict(declared[preset]), "declared"
    if declared and not per_preset:
        return dict(declared), "declared"
    params = dict(cls.example)
    if any(f.name == "keep" for f in dataclasses.fields(cls)):
        params["keep"] = DEFAULT_KEEP
    return params, "default"


def preset_tokens(cls: type[Method], preset: Preset, layout: tuple[int, ...] | None = None) -> Tokens:
    """Random inputs of the preset's shape (or `layout`) carrying every signal `cls` needs."""
    allowed = cls.special_tokens
    if preset.modality == "image":
        special = None  # example_tokens' default: one [CLS] where accepted
    else:  # no [CLS] in a video or audio token sequence, where the method allows none
        special = 0 if allowed is None or 0 in allowed else allowed[0]
    dim = preset.dim
    if preset.projected is not None and cls.stage != "encoder":
        projected_layout, dim = preset.projected
        layout = layout or projected_layout
    return example_tokens(
        cls,
        batch=1,
        dim=dim,
        layout=layout or preset.layout,
        special=special,
        heads=1 if cls.attention_heads == "max" else preset.heads,
        queries=QUERIES,
        audio_tokens=AUDIO_TOKENS,
    )


def time_call(method: Method, tokens: Tokens, repeats: int) -> list[float]:
    """Milliseconds of `repeats` calls, after `WARMUP` untimed ones."""
    times = []
    with torch.inference_mode():
        for step in range(WARMUP + repeats):
            start = time.perf_counter()
            method(tokens)
            if step >= WARMUP:
                times.append((time.perf_counter() - start) * 1000)
    return times


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-th percentile."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(q / 100 * len(ranked)) - 1)]


def run(presets: list[str], names: list[str], repeats: int) -> list[dict[str, Any]]:
    """One row per (method, preset) that applies: timings, target and verdict."""
    rows = []
    for name in names:
        cls = reproductions.methods()[name]
        for key in presets:
            preset = PRESETS[key]
            # omni methods take the video as features and the audio as a signal
            feature_modalities = cls.modality[:1] if "audio" in cls.needs else cls.modality
            if preset.modality not in feature_modalities:
                continue
            params, origin = parameters(cls, key)
            shown = f"{origin}: " + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
            )
            layout = None  # a later part of a method of several stages: on what the earlier left
            for part in cls(**params).parts():
                row = {"method": type(part).name, "preset": key, "target": preset.target_ms, "params": shown}
                try:
                    tokens = preset_tokens(type(part), preset, layout)
                    times = time_call(part, tokens, repeats)
                    left = part(tokens).count - tokens.special
                    layout = (1,) * (len(preset.layout) - 1) + (left,)
                except (ValueError, RuntimeError) as error:
                    rows.append({**row, "error": str(error)})
                    continue
                median, p95 = statistics.median(times), percentile(times, 95)
                verdict = "OK" if median <= preset.target_ms else "SLOW"
                rows.append(
                    {**row, "n": tokens.count, "median": median, "p95": p95, "verdict": verdict}
                )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a fixed-width text table."""
    header = f"{'method':<24} {'preset':<6} {'N':>5} {'median ms':>10} {'p95 ms':>8} {'target':>7}  verdict  params"
    lines = [header, "-" * len(header)]
    for row in rows:
        head = f"{row['method']:<24} {row['preset']:<6}"
        if "error" in row:
            lines.append(
                f"{head} {'':>5} {'':>10} {'':>8} {row['target']:>7.0f}  ERROR    {row['error']}"
            )
            continue
        lines.append(
            f"{head} {row['n']:>5} {row['median']:>10.2f} {row['p95']:>8.2f} {row['target']:>7.0f}"
            f"  {row['verdict']:<7}  {row['params']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks methods", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--preset", choices=[*PRESETS, "all"], default="all")
    parser.add_argument(
        "--methods", default="", help="comma-separated registry names (default: all)"
    )
    parser.add_argument(
        "--repeats", type=int, default=20, help="timed calls per method (default 20)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    registered = {name: cls for name, cls in reproductions.methods().items() if not cls.trainable}
    names = [n for n in args.methods.split(",") if n] or list(registered)
    unknown = [n for n in names if n not in registered]
    if unknown:
        parser.error(f"unknown or trainable methods {unknown}; choose from {', '.join(registered)}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    presets = list(PRESETS) if args.preset == "all" else [args.preset]
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, batch 1")
    rows = run(presets, names, args.repeats)
    print(table(rows))
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
