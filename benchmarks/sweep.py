"""`python -m benchmarks`: the sweep of every registered method over budgets on one model.

What it measures and the JSON it writes are described in `benchmarks/README.md`."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

import reproductions
from reproductions.flops import ModelShape

from . import FORMAT, RESULTS, write_atomic
from .budgets import Fit, bench_tokens, declared, fit_budgets, passes_for, special_tokens
from .decoder import Decoder
from .measure import Context, Job, measure, prompt
from .presets import PRESETS, Scenario, build_model
from .report import environment, figure, report
from .timing import Clock


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
        "command": "python -m benchmarks " + " ".join(args.argv),
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
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
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON (and plots)")
    p.add_argument(
        "--plots",
        action="store_true",
        help="also write the PNG plots beside the JSON (the site draws its own from the JSON)",
    )
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
        print(f"python -m benchmarks: {error}", file=sys.stderr)
        return 2
    created = data["created"].replace(":", "").replace("-", "")
    stem = f"{created}-{data['model']['name']}-{data['environment']['device']}"
    path = args.out / f"{stem}.json"
    write_atomic(path, (json.dumps(data, indent=1) + "\n").encode())
    written = [path]
    if args.plots:
        from .plots import plot

        written += plot(data, args.out, stem)
    print(report(data))
    for item in written:
        print(f"wrote {item}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


