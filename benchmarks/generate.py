"""`python -m benchmarks generate` (the default `python -m benchmarks`, `make bench`): methods
timed through the code users run, `reproductions.hf.compress(model, method)` +
`model.generate()`, on every preset family (`families.py`).

Per family, method and budget it reports the method's own time, the LLM prefill, the time to
first token, the decode time per token (median and p95 over repeats), peak memory, the KV cache
after prefill, FLOPs counted from the token counts the layers really read (hooks, `probe.py`),
the efficiency against the FLOP ratio and the integration's overhead (`direct.py`). The same
code runs on a GPU (`--device cuda`: CUDA events, `max_memory_allocated`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

import reproductions
from reproductions import flops
from reproductions.examples import example_tokens
from reproductions.hf import compress, why_unsupported

from . import RESULTS, write_atomic
from .budgets import declared
from .decoder import cache_bytes
from .direct import inside, prefill_method, rerun, watched
from .families import DEFAULT_METHODS, FAMILIES, Family
from .probe import Probe, Stamps
from .targets import document, tables
from .timing import PeakMemory, steady_allocator, summary


def methods_for(family: Family, wanted: str) -> list[str]:
    """The methods to run on the family: the modality's defaults (`default`), every registered
    one (`all`) or a comma list, each kept where it takes the modality and `compress` runs it."""
    names = (DEFAULT_METHODS[family.modality] if wanted == "default"
             else sorted(reproductions.methods()) if wanted == "all" else wanted.split(","))
    kept = []
    for name in names:
        cls = reproductions.methods()[name]
        if family.modality in cls.modality and not cls.trainable and \
                why_unsupported(family.model, cls(**declared(cls, family.modality))) is None:
            kept.append(name)
    return kept


def at_budgets(name: str, budgets: Sequence[int], family: Family) -> list[tuple[Any, int | None]]:
    """(method, budget) per budget, by `Method.at_budget` on tokens of the family's grid; a method
    whose count the data decides runs once with its declared parameters (budget None)."""
    cls = reproductions.methods()[name]
    base = declared(cls, family.modality)
    tokens = example_tokens(cls, batch=1, dim=4, layout=family.layout, special=0, heads=2, queries=8)
    try:
        return [(cls.at_budget(b, tokens, **base), b) for b in budgets]
    except ValueError:
        return [(cls(**base), None)]


def params(method: Any) -> dict[str, Any]:
    """The method's hyperparameters that differ from its defaults."""
    return {f.name: getattr(method, f.name) for f in dataclasses.fields(method)
            if f.default is dataclasses.MISSING or getattr(method, f.name) != f.default}


def run_once(family: Family, method: Any, decode: int, stamps: Stamps) -> Probe:
    """One `generate` of 1 + `decode` tokens, compressed by `method` (None: uncompressed)."""
    cls = None if method is None else type(method)
    probe = Probe(stamps, family.model, family.language_model, family.llm_layers,
                  family.encoder_layers, family.projector, cls)
    with compress(family.model, method) if method is not None else nullcontext(), probe:
        family.model.generate(**family.inputs, max_new_tokens=1 + decode,
                              min_new_tokens=1 + decode, do_sample=False, pad_token_id=0)
    return probe


def measure(family: Family, method: Any, args: argparse.Namespace, stamps: Stamps,
            base_own: float | None) -> dict[str, Any]:
    """Timings (median, p95), overhead, memory, KV bytes and FLOPs of one method on one family.
    `base_own`: the uncompressed runs' median `own_time_s` (None: this is that run)."""
    times: dict[str, list[float]] = {k: [] for k in ("prefill", "ttft", "decode", "method",
                                                     "overhead", "own", "layers")}
    for repeat in range(args.warmup + args.repeats):
        start = stamps.now()
        probe = run_once(family, method, args.decode_tokens, stamps)
        direct, layers = rerun(probe, stamps)  # after compress and the probe removed their hooks
        if repeat < args.warmup:
            continue
        times["layers"].append(layers)
        llm = probe.llm[0]
        times["ttft"].append(stamps.seconds(start, probe.steps[0][1]))
        times["prefill"].append(probe.seconds([llm])[0] - inside(probe, probe.method, llm))
        times["decode"] += probe.seconds(probe.steps[1:])
        times["method"].append(sum(probe.seconds(probe.method)))
        times["own"].append(watched(probe) - direct)  # the model's own work beside the reruns
        times["overhead"].append(times["own"][-1] - prefill_method(probe) - (base_own or 0.0))
    if base_own is None:  # the uncompressed runs: their spread about their median (noise floor)
        middle = summary(times["own"])["median"]
        times["overhead"] = [t - middle for t in times["own"]]
    with PeakMemory(next(family.model.parameters()).device) as memory:
        with compress(family.model, method) if method is not None else nullcontext():
            out = family.model.generate(**family.inputs, max_new_tokens=1, do_sample=False,
                                        pad_token_id=0, return_dict_in_generate=True)
        peak = memory.peak()
    schedule = probe.llm_schedule
    return {
        "stage": None if method is None else method.stage, "modality": family.modality,
        "tokens_in": family.media, "tokens_out": schedule[-1] - family.text,
        "method_time_s": summary(times["method"]) if method is not None else None,
        "prefill_time_s": summary(times["prefill"]), "ttft_s": summary(times["ttft"]),
        "decode_time_per_token_s": summary(times["decode"]),
        "overhead_time_s": summary(times["overhead"]), "own_time_s": summary(times["own"]),
        "layers_time_s": summary(times["layers"]),
        "peak_memory_bytes": peak, "peak_memory_kind": memory.kind,
        "kv_cache_bytes": cache_bytes(out.past_key_values),
        "schedule": schedule, "encoder_schedule": probe.encoder_schedule,
        "projected": probe.projected, "flops": count_flops(family, probe),
    }


def count_flops(family: Family, probe: Probe) -> dict[str, int | None]:
    """`reproductions.flops.stage_flops` from the counted schedules; the LLM alone where
    `flops` cannot read the family's encoder (Qwen's ViT)."""
    config = family.model.config
    try:
        shape = flops.ModelShape.from_config(config)
    except ValueError:
        shape = flops.ModelShape(decoder=flops.DecoderShape.from_config(config))
    schedule = probe.llm_schedule
    encoder = probe.encoder_schedule if shape.encoder is not None else None
    return flops.stage_flops(shape, visual_tokens=schedule[0] - family.text,
                             text_tokens=family.text, schedule=schedule,
                             encoder_schedule=encoder or None,
                             projected=probe.projected if shape.encoder is not None else None)


def run_family(key: str, args: argparse.Namespace, stamps: Stamps) -> tuple[dict, list[dict]]:
    """The family's scenario (with its uncompressed baseline, and the jobs that raised, with
    their error) and every (method, budget) record."""
    device = torch.device(args.device)
    family = FAMILIES[key](args.layers, args.hidden)
    family.model.set_attn_implementation(args.attention)  # every sub-model's (the encoders' too)
    family.model.to(device, getattr(torch, args.dtype))
    family.inputs = {k: v.to(device, getattr(torch, args.dtype)) if v.is_floating_point()
                     else v.to(device) for k, v in family.inputs.items()}
    rows, failed = [], []
    with torch.inference_mode():
        base = {"family": family.name, "method": "none", "params": {}, "budget": None,
                **measure(family, None, args, stamps, None)}
        rows.append(base)
        for name in methods_for(family, args.methods):
            for method, budget in at_budgets(name, args.budgets, family):
                print(f"  {family.name}: {name} at {budget}", file=sys.stderr)
                try:
                    record = measure(family, method, args, stamps, base["own_time_s"]["median"])
                except ValueError as error:  # a setting compress refuses: shown, not hidden
                    failed.append({"method": name, "params": params(method), "budget": budget,
                                   "error": str(error)})
                    continue
                rows.append({"family": family.name, "method": name, "params": params(method),
                             "budget": budget, **record})
    full, layers = base["prefill_time_s"]["median"], base["layers_time_s"]["median"]
    for row in rows:
        ratio = base["flops"]["llm_prefill"] / row["flops"]["llm_prefill"]
        measured = full / row["prefill_time_s"]["median"]
        # the same for the decoder layers rerun directly: the hardware's own ceiling
        ceiling = layers / row["layers_time_s"]["median"] / ratio
        row["speedup"] = {"measured": measured, "flops": ratio, "efficiency": measured / ratio,
                          "ceiling": ceiling}
        row["overhead"] = row["overhead_time_s"]["median"] / full
    scenario = {"family": family.name, "modality": family.modality, "layout": list(family.layout),
                "tokens": family.media, "text_tokens": family.text, "budgets": list(args.budgets),
                "measured_prefill": True, "baseline": base, "failed": failed,
                "model": type(family.model).__name__,
                "decoder": dataclasses.asdict(flops.DecoderShape.from_config(family.model.config))}
    del family
    return scenario, rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every family in `--families`: the results document (`benchmarks/README.md`)."""
    device = torch.device(args.device)
    if args.clock == "process" and device.type == "cpu" and torch.get_num_threads() > 1:
        raise SystemExit("--clock process sums CPU time over threads: pass --threads 1 or --clock wall")
    stamps = Stamps(device, args.clock)
    allocator = "cuda caching" if device.type == "cuda" else steady_allocator()
    scenarios, results = [], []
    for key in args.families.split(","):
        scenario, rows = run_family(key, args, stamps)
        scenarios.append(scenario)
        results += rows
    return document(args, scenarios, results, "cuda_events" if stamps.cuda else args.clock, allocator)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks [generate]",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--families", default=",".join(FAMILIES), help=f"of {', '.join(FAMILIES)}")
    p.add_argument("--methods", default="default",
                   help="default (a few per modality), all, or a comma list")
    p.add_argument("--budgets", type=lambda s: [int(b) for b in s.split(",")], default=[64])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=2048, help="decoder width (README: why 2048)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--decode-tokens", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--attention", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    p.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch's default)")
    p.add_argument("--clock", default="process", choices=["process", "wall"], help="CPU clock")
    p.add_argument("--out", type=Path, help="the JSON to write (default: results/<time>-"
                   "families-<device>.json, which the site shows)")
    p.add_argument("--no-save", action="store_true", help="print the tables only")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = run(args)
    print(tables(data))
    if not args.no_save:
        stamp = data["created"].replace("-", "").replace(":", "")
        out = args.out or RESULTS / f"{stamp}-families-{data['environment']['device']}.json"
        write_atomic(out, (json.dumps(data, indent=1, default=str) + "\n").encode())
        print(f"wrote {out}", file=sys.stderr)
    return 0  # the targets are printed figures (pass / FAIL words), not a failed command
