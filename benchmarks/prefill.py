"""Measured prefill time against the FLOP reduction FastV and VisionZip claim, inside a model.

    python -m benchmarks prefill [--layers 8] [--hidden 1024] [--repeats 5] [--threads 1]

The model is a LLaVA-1.5-shaped `LlavaForConditionalGeneration` scaled to fit a CPU, with
LLaVA-1.5's token counts: 576 image tokens (a 336 px image in 14 px patches, plus the [CLS]
that the projector never sees) and 64 text tokens; a Llama decoder of `--layers` layers of
width `--hidden` (16 heads, SwiGLU width 2.75x, vocabulary 32000), a small CLIP encoder
(4 layers of width 256). Random weights: the timings do not depend on them.

Each row runs `model(...)` once per repeat (prefill of one prompt, `logits_to_keep=1` as
`generate` does), interleaving the rows so that load on the machine hits them alike, and
reports the best of the repeats (load on a shared machine only ever slows a run down, so the
minimum is the steadiest estimate). Timings use one intra-op thread by default: with two
threads on a busy two-core machine, OpenMP contention swamps the figures. "LLM ms" is the
language model's forward alone, timed by hooks that run before and after everything
`reproductions.hf.compress` does there (so FastV's attention recompute and the sequence
rebuild are included); "ms" under "whole" is the whole forward (encoder, projector, LLM). FLOPs come from `reproductions.flops` (`prefill_flops` with the per-layer token
schedule): "claimed" is the LLM prefill FLOP reduction full / compressed, "measured" the time
reduction; the target is measured >= 0.8 x claimed. The "whole" columns do the same for the
whole forward (`stage_flops`' total_prefill: encoder + projector + LLM).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import transformers as tf

from reproductions import flops
from reproductions.hf import compress

IMAGE_TOKEN = 32000 - 1
TEXT_TOKENS = 64
TARGET = 0.8


def build(layers: int, hidden: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The scaled LLaVA-1.5 and one prompt: 32 text tokens, 576 image tokens, 32 text tokens."""
    torch.manual_seed(0)
    vision = tf.CLIPVisionConfig(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=336,
        patch_size=14,
        projection_dim=256,
    )
    text = tf.LlamaConfig(
        vocab_size=32000,
        hidden_size=hidden,
        intermediate_size=int(hidden * 2.75),
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=16,
        max_position_embeddings=4096,
    )
    config = tf.LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=IMAGE_TOKEN,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        attn_implementation="sdpa",
    )
    model = tf.LlavaForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(0)
    half = TEXT_TOKENS // 2
    ids = torch.cat(
        [
            torch.randint(3, 30000, (half,), generator=g),
            torch.full((576,), IMAGE_TOKEN),
            torch.randint(3, 30000, (half,), generator=g),
        ]
    )[None]
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(1, 3, 336, 336, generator=g),
        "logits_to_keep": 1,
    }
    return model, inputs


class LanguageModelTimer:
    """Wall time of every forward of the language model, from before compress's hooks."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.times: list[float] = []
        self._start = 0.0
        self.handles = [
            module.register_forward_pre_hook(self._begin),
            module.register_forward_hook(self._end),
        ]

    def _begin(self, module: torch.nn.Module, args: tuple) -> None:
        self._start = time.perf_counter()

    def _end(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        self.times.append(time.perf_counter() - self._start)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks prefill", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: steady timings; 0: torch's default)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model, inputs = build(args.layers, args.hidden)
    decoder = flops.DecoderShape.from_config(model.config)
    prompt = 576 + TEXT_TOKENS
    # name -> (context, LLM token schedule, tokens through the projector)
    rows: dict[str, tuple[Callable[[], AbstractContextManager], list[int], int]] = {
        "full (no compression)": (nullcontext, [prompt] * args.layers, 576),
        "fastv keep=64, K=2": (
            lambda: compress(model, "fastv", keep=64, layer=2),
            flops.token_schedule(args.layers, prompt, {2: 64 + TEXT_TOKENS}),
            576,
        ),
        "visionzip 54+10": (
            lambda: compress(model, "visionzip", dominant=54, contextual=10),
            [64 + TEXT_TOKENS] * args.layers,
            64,
        ),
    }
    llm: dict[str, list[float]] = {name: [] for name in rows}
    total: dict[str, list[float]] = {name: [] for name in rows}
    timer = LanguageModelTimer(model.model.language_model)
    try:
        with torch.no_grad():
            for repeat in range(args.repeats + 1):  # the first round warms up
                for name, (context, _, _) in rows.items():
                    with context():
                        start = time.perf_counter()
                        model(**inputs)
                        elapsed = time.perf_counter() - start
                    if repeat:
                        llm[name].append(timer.times[-1])
                        total[name].append(elapsed)
    finally:
        timer.close()

    shape = flops.ModelShape.from_config(model.config)

    def whole(schedule: list[int], projected: int) -> int:
        """Encoder + projector + LLM prefill FLOPs (reproductions.flops.stage_flops)."""
        stages = flops.stage_flops(shape, 576, TEXT_TOKENS, schedule=schedule, projected=projected)
        return stages["total_prefill"]

    name0 = "full (no compression)"
    full_flops, full_whole = flops.prefill_flops(decoder, rows[name0][1]), whole(*rows[name0][1:])
    full_time, full_total = min(llm[name0]), min(total[name0])
    print(
        f"LLaVA-1.5-shaped LLM: {args.layers} layers, hidden {args.hidden}, 576 image + "
        f"{TEXT_TOKENS} text tokens; {torch.get_num_threads()} thread(s), best of "
        f"{args.repeats} (load on a shared machine only slows runs down)"
    )
    print(
        "FLOPs: reproductions.flops (prefill_flops with the per-layer token schedule, LM head on "
        "1 token; 'whole' adds the encoder and projector, stage_flops)"
    )
    header = (
        f"{'method':<24}{'LLM GFLOP':>10}{'claimed':>9}{'LLM ms':>8}{'measured':>10}{'ratio':>7}"
        f"  {'whole: claimed':>14}{'ms':>6}{'measured':>10}{'ratio':>7}  target"
    )
    print(header)
    print("-" * len(header))
    ok = True
    for name, (_, schedule, projected) in rows.items():
        cost = flops.prefill_flops(decoder, schedule)
        claimed = full_flops / cost
        seconds = min(llm[name])
        measured = full_time / seconds
        ratio = measured / claimed
        whole_claimed = full_whole / whole(schedule, projected)
        whole_measured = full_total / min(total[name])
        verdict = "-" if cost == full_flops else ("ok" if ratio >= TARGET else "MISSED")
        ok &= verdict != "MISSED"
        print(
            f"{name:<24}{cost / 1e9:>10.1f}{claimed:>8.2f}x{seconds * 1e3:>8.0f}{measured:>9.2f}x"
            f"{ratio:>7.2f}  {whole_claimed:>13.2f}x{min(total[name]) * 1e3:>6.0f}"
            f"{whole_measured:>9.2f}x{whole_measured / whole_claimed:>7.2f}  {verdict}"
        )
    print(f"target: measured LLM prefill reduction >= {TARGET} x its claimed FLOP reduction")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
