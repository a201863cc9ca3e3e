"""`python -m benchmarks generate`: methods timed through the code users run,
`reproductions.hf.compress(model, method)` + `model.generate()`.

First step of issue 13 section 1: one family (a LLaVA-1.5-shaped model built from configs with
random weights: 576 image tokens, a CLIP encoder and a Llama decoder scaled to a CPU). Per
method and budget it reports the method's own time, the LLM prefill, the time to first token,
the decode time per token (median and p95 over repeats), peak memory, the KV cache after
prefill, and FLOPs counted from the token counts the layers really read (hooks, `probe.py`).
The same code runs on a GPU (`--device cuda`: CUDA events, `max_memory_allocated`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import reproductions
from reproductions import flops
from reproductions.hf import compress

from . import write_atomic
from .budgets import declared, fit_budgets
from .decoder import cache_bytes
from .probe import Probe, Stamps
from .timing import PeakMemory, summary


@dataclass
class Family:
    """A model of one family, one prompt for it, and the modules the probe watches."""

    name: str
    model: nn.Module
    inputs: dict[str, torch.Tensor]
    modality: str
    media: int
    text: int
    language_model: nn.Module
    llm_layers: Sequence[nn.Module]
    encoder_layers: Sequence[nn.Module]
    projector: nn.Module | None


def llava(layers: int, hidden: int) -> Family:
    """LLaVA-1.5: 576 image tokens between 64 text tokens (`benchmarks.prefill.build`)."""
    from .prefill import TEXT_TOKENS, build

    model, inputs = build(layers, hidden)
    inputs.pop("logits_to_keep")  # generate sets it
    inner = model.model
    return Family(
        "llava-1.5", model, inputs, "image", 576, TEXT_TOKENS, inner.language_model,
        inner.language_model.layers, inner.vision_tower.encoder.layers,
        inner.multi_modal_projector,
    )


FAMILIES = {"llava": llava}


def params_for(name: str, budgets: Sequence[int], family: Family) -> list[tuple[dict, int | None]]:
    """(parameters, budget) per budget: `budgets.fit_budgets` on tokens of the family's grid."""
    from reproductions.examples import example_tokens

    cls = reproductions.methods()[name]
    method = cls(**declared(cls, family.modality))
    tokens = example_tokens(method, batch=1, dim=4, layout=(24, 24), special=0, heads=2, queries=8)
    passes = len(family.encoder_layers) if cls.stage == "encoder" else 1
    return [(f.params, f.budget) for f in fit_budgets(cls, tokens, budgets, passes, family.modality)]


def run_once(family: Family, method: Any, decode: int, stamps: Stamps) -> Probe:
    """One `generate` of 1 + `decode` tokens, compressed by `method` (None: uncompressed)."""
    cls = None if method is None else type(method)
    probe = Probe(stamps, family.model, family.language_model, family.llm_layers,
                  family.encoder_layers, family.projector, cls)
    context = compress(family.model, method) if method is not None else _nothing()
    with context, probe:
        family.model.generate(
            **family.inputs, max_new_tokens=1 + decode, min_new_tokens=1 + decode,
            do_sample=False, pad_token_id=0,
        )
    return probe


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def measure(family: Family, method: Any, args: argparse.Namespace, stamps: Stamps) -> dict:
    """Timings (median, p95), memory, KV bytes and FLOPs of one method on one family."""
    prefill, ttft, decode, method_times = [], [], [], []
    for repeat in range(args.warmup + args.repeats):
        start = stamps.now()
        probe = run_once(family, method, args.decode_tokens, stamps)
        if repeat < args.warmup:
            continue
        ttft.append(stamps.seconds(start, probe.steps[0][1]))
        prefill.append(probe.seconds(probe.llm[:1])[0])
        decode += probe.seconds(probe.steps[1:])
        method_times.append(sum(probe.seconds(probe.method)))
    device = next(family.model.parameters()).device
    with PeakMemory(device) as memory:
        out = family.model.generate(**family.inputs, max_new_tokens=1, do_sample=False,
                                    pad_token_id=0, return_dict_in_generate=True) \
            if method is None else _generate_compressed(family, method)
        peak = memory.peak()
    shape = flops.ModelShape.from_config(family.model.config)
    schedule = probe.llm_schedule
    counted = flops.stage_flops(
        shape, visual_tokens=schedule[0] - family.text, text_tokens=family.text,
        schedule=schedule, encoder_schedule=probe.encoder_schedule or None,
        projected=probe.projected,
    )
    return {
        "method_time_s": summary(method_times) if method is not None else None,
        "prefill_time_s": summary(prefill), "ttft_s": summary(ttft),
        "decode_time_per_token_s": summary(decode),
        "peak_memory_bytes": peak, "peak_memory_kind": memory.kind,
        "kv_cache_bytes": cache_bytes(out.past_key_values),
        "schedule": schedule, "encoder_schedule": probe.encoder_schedule,
        "projected": probe.projected, "flops": counted,
    }


def _generate_compressed(family: Family, method: Any) -> Any:
    with compress(family.model, method):
        return family.model.generate(**family.inputs, max_new_tokens=1, do_sample=False,
                                     pad_token_id=0, return_dict_in_generate=True)


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Every (method, budget) on the family, the uncompressed run first."""
    device = torch.device(args.device)
    family = FAMILIES[args.family](args.layers, args.hidden)
    family.model.to(device, getattr(torch, args.dtype))
    family.inputs = {k: v.to(device) for k, v in family.inputs.items()}
    if args.clock == "process" and device.type == "cpu" and torch.get_num_threads() > 1:
        raise SystemExit("--clock process sums CPU time over threads: pass --threads 1 or --clock wall")
    stamps = Stamps(device, args.clock)
    rows = []
    with torch.inference_mode():
        base = measure(family, None, args, stamps)
        rows.append({"method": "none", "params": {}, "budget": None, **base})
        for name in args.methods.split(","):
            for params, budget in params_for(name, args.budgets, family):
                method = reproductions.get(name, **params)
                record = measure(family, method, args, stamps)
                rows.append({"method": name, "params": params, "budget": budget, **record})
    for row in rows:
        ratio = base["flops"]["llm_prefill"] / row["flops"]["llm_prefill"]
        measured = base["prefill_time_s"]["median"] / row["prefill_time_s"]["median"]
        row["speedup"] = {"measured": measured, "flops": ratio, "efficiency": measured / ratio}
    return {"family": family.name, "device": device.type, "threads": torch.get_num_threads(),
            "clock": "cuda_events" if stamps.cuda else args.clock,
            "settings": {k: v for k, v in vars(args).items() if k != "out"}, "results": rows}


def table(data: dict[str, Any]) -> str:
    """One line per record: medians (p95) in ms, and prefill efficiency vs the FLOP ratio."""
    def ms(t: dict | None) -> str:
        return "-" if t is None else f"{1e3 * t['median']:.1f} ({1e3 * t['p95']:.1f})"

    lines = [f"{data['family']} on {data['device']}, {data['threads']} thread(s); ms median (p95)",
             f"{'method':<12}{'budget':>7}{'LLM in':>7}{'method':>16}{'prefill':>18}{'TTFT':>18}"
             f"{'decode/tok':>16}{'KV MiB':>8}{'FLOP x':>8}{'time x':>8}{'eff':>6}"]
    for r in data["results"]:
        s = r["speedup"]
        lines.append(
            f"{r['method']:<12}{r['budget']!s:>7}{r['schedule'][-1]:>7}{ms(r['method_time_s']):>16}"
            f"{ms(r['prefill_time_s']):>18}{ms(r['ttft_s']):>18}"
            f"{ms(r['decode_time_per_token_s']):>16}{r['kv_cache_bytes'] / 2**20:>8.1f}"
            f"{s['flops']:>8.2f}{s['measured']:>8.2f}{s['efficiency']:>6.2f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks generate",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--family", choices=sorted(FAMILIES), default="llava")
    p.add_argument("--methods", default="random,pool,visionzip,fastv")
    p.add_argument("--budgets", type=lambda s: [int(b) for b in s.split(",")], default=[64])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--decode-tokens", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch's default)")
    p.add_argument("--clock", default="process", choices=["process", "wall"], help="CPU clock")
    p.add_argument("--out", type=Path, help="also write the JSON here (not read by the site yet)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = sweep(args)
    print(table(data))
    if args.out:
        write_atomic(args.out, (json.dumps(data, indent=1, default=str) + "\n").encode())
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
