"""Generate with and without a compression method inside a transformers model.

Out of the box it runs on a tiny random model of the chosen family (no download):

    python examples/compress_generate.py --family llava --method fastv --param keep=8
    python examples/compress_generate.py --family qwen2_vl_video --method dycoke_cache

Given a local checkpoint it runs the same code on the real model, with a synthetic image,
video or audio clip unless you pass a file:

    python examples/compress_generate.py --checkpoint /models/llava-1.5-7b-hf \\
        --method visionzip --param dominant=54 --param contextual=10 --image cat.jpg

It prints both generations and what `compress` did (tokens before and after, per call).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from reproductions.hf import compress  # noqa: E402
from reproductions.hf.tiny import BUILDERS  # noqa: E402


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`name=value` pairs, values read as Python literals where they parse (ints, floats...)."""
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--param {pair!r}: write name=value, e.g. --param keep=64")
        try:
            params[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[name] = value
    return params


def real_inputs(checkpoint: str, args: argparse.Namespace) -> tuple[torch.nn.Module, dict, Any]:
    """Load a local checkpoint with its processor and build a one-item prompt for it."""
    import numpy as np
    import transformers as tf

    config = tf.AutoConfig.from_pretrained(checkpoint)
    processor = tf.AutoProcessor.from_pretrained(checkpoint)
    classes = {
        "llava": tf.LlavaForConditionalGeneration,
        "llava_onevision": tf.LlavaOnevisionForConditionalGeneration,
        "qwen2_vl": tf.Qwen2VLForConditionalGeneration,
        "qwen2_5_vl": tf.Qwen2_5_VLForConditionalGeneration,
        "qwen2_audio": tf.Qwen2AudioForConditionalGeneration,
    }
    if config.model_type not in classes:
        raise SystemExit(f"model_type {config.model_type!r}: supported: {', '.join(classes)}")
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = classes[config.model_type].from_pretrained(
        checkpoint, dtype=dtype, attn_implementation="sdpa"
    )
    model = model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    if config.model_type == "qwen2_audio":
        rate = processor.feature_extractor.sampling_rate
        audio = np.sin(np.linspace(0, 2000 * np.pi, rate * 5)).astype(np.float32)
        content = [{"type": "audio", "audio": audio}, {"type": "text", "text": args.prompt}]
    elif args.video:
        frames = np.random.default_rng(0).integers(0, 255, (8, 336, 336, 3), dtype=np.uint8)
        content = [{"type": "video", "video": frames}, {"type": "text", "text": args.prompt}]
    else:
        from PIL import Image

        image = (
            Image.open(args.image)
            if args.image
            else Image.fromarray(
                np.random.default_rng(0).integers(0, 255, (336, 336, 3), dtype=np.uint8)
            )
        )
        content = [{"type": "image", "image": image}, {"type": "text", "text": args.prompt}]
    messages = [{"role": "user", "content": content}]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    ).to(model.device)
    return model, dict(inputs), processor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--family", choices=sorted(BUILDERS), default="llava", help="tiny model family"
    )
    parser.add_argument("--method", default="random", help="a registered method name")
    parser.add_argument("--param", action="append", default=[], help="name=value hyperparameter")
    parser.add_argument(
        "--layer", type=int, default=None, help="decoder layer K for llm methods without one"
    )
    parser.add_argument("--checkpoint", help="a local transformers checkpoint directory")
    parser.add_argument("--image", help="an image file for image models (default: random pixels)")
    parser.add_argument("--video", action="store_true", help="prompt with a (random) video")
    parser.add_argument("--prompt", default="Describe this briefly.")
    parser.add_argument("--new-tokens", type=int, default=12)
    args = parser.parse_args(argv)

    processor = None
    if args.checkpoint:
        model, inputs, processor = real_inputs(args.checkpoint, args)
    else:
        model, inputs = BUILDERS[args.family]()
    params = parse_params(args.param)
    prompt_length = inputs["input_ids"].shape[1]
    with torch.no_grad():
        plain = model.generate(**inputs, max_new_tokens=args.new_tokens, do_sample=False)
        with compress(model, args.method, layer=args.layer, **params) as report:
            compressed = model.generate(**inputs, max_new_tokens=args.new_tokens, do_sample=False)

    def show(tokens: torch.Tensor) -> str:
        new = tokens[:, prompt_length:]
        if processor is not None:
            return " | ".join(processor.batch_decode(new, skip_special_tokens=True))
        return str(new.tolist())

    print(f"model: {type(model).__name__}; method: {args.method} {params}")
    print(f"plain:      {show(plain)}")
    print(f"compressed: {show(compressed)}")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
