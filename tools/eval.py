"""`python -m tools eval`: accuracy against cost over a grid of models, methods, budgets, tasks.

    python -m tools eval --models llava=llava-hf/llava-1.5-7b-hf --methods fastv visionzip \\
        --budgets 192 128 64 --tasks gqa pope --out results/eval --device cuda --processes 8

Every (model, method, budget) is one lmms-eval run of the `reproductions` plugin over all the
tasks (under `accelerate launch` for several processes). The controls always run beside the
methods: the model uncompressed (`none`, once per model) and `random` and `pool` at each budget,
because plain downsampling and random pruning are strong baselines (VTC-Bench, UniPruneBench).
`<out>/results.json` holds one row per (model, task, method, budget) with the score, the kept
media tokens, the LLM's prefill FLOPs and the measured time to first token, and each method's
gain over the best control at its budget; `<out>/<model>-<task>.png` plots accuracy against
TTFT and against kept tokens. The table is written after every run: a sweep that is stopped
keeps each finished run, and run again it starts only the missing ones.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .eval_table import gains, plot, rows_of_run

#: the controls of every budget, and the uncompressed model
CONTROLS = ("random", "pool")
NONE = "none"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools eval", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="checkpoints: NAME=PATH or PATH")
    parser.add_argument("--methods", nargs="+", required=True, help="registered method names")
    parser.add_argument("--budgets", nargs="+", type=budget_value, required=True,
                        help="media tokens kept per image, video or clip (a count, or a fraction < 1)")
    parser.add_argument("--tasks", nargs="+", required=True, help="lmms-eval task names")
    parser.add_argument("--out", type=Path, required=True, help="folder of results.json and the plots")
    parser.add_argument("--grid", type=int, default=None,
                        help="side of a media item's token grid (LLaVA's is read from its config)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--processes", type=int, default=1, help="processes under accelerate launch")
    parser.add_argument("--limit", type=int, default=None, help="first N documents of each task")
    parser.add_argument("--include-path", default=None, help="a folder of extra task YAMLs")
    parser.add_argument("--model-args", default="", help="more plugin args, e.g. dtype=bfloat16")
    return parser.parse_args(argv)


def budget_value(text: str) -> int | float:
    """A token count (an int) or a fraction of the tokens (a float below 1)."""
    value = float(text)
    if value <= 0 or (value >= 1 and not value.is_integer()):
        raise argparse.ArgumentTypeError(f"{text}: pass a token count (64) or a fraction (0.25)")
    return int(value) if value >= 1 else value


def models(specs: list[str]) -> dict[str, str]:
    """NAME=PATH pairs (a bare PATH is named after its last part)."""
    named = {}
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else (Path(spec).name, "", spec)
        named[name] = path
    return named


def runs(args: argparse.Namespace) -> list[tuple[str, str, int | float | None]]:
    """Every (model, method, budget) to run, controls first; `none` once per model."""
    methods = [m for m in args.methods if m not in (NONE, *CONTROLS)]
    planned: list[tuple[str, str, int | float | None]] = []
    for model in models(args.models):
        planned.append((model, NONE, None))
        for budget in args.budgets:
            planned += [(model, method, budget) for method in (*CONTROLS, *methods)]
    return planned


def run_key(model: str, method: str, budget: int | float | None) -> str:
    return f"{model}/{method}/{budget if budget is not None else 'all'}"


def grid_side(path: str, given: int | None) -> int:
    """The token grid side of one media item: `--grid`, else LLaVA's image_size // patch_size."""
    if given is not None:
        return given
    import transformers

    vision = getattr(transformers.AutoConfig.from_pretrained(path), "vision_config", None)
    if vision is None or not hasattr(vision, "image_size"):
        raise SystemExit(f"error: {path} has no fixed image grid: pass --grid SIDE (tokens per side)")
    return vision.image_size // vision.patch_size


def method_args(method: str, budget: int | float | None, side: int) -> dict[str, Any]:
    """The method's parameters at `budget` by the project's one budget rule (`at_budget`), on a
    side x side grid of tokens (the plugin records the count each sample really kept)."""
    if method == NONE:
        return {}
    import dataclasses

    import torch

    from reproductions import Tokens
    from reproductions.registry import methods

    known = methods()
    if method not in known:
        raise SystemExit(f"error: {method!r} is not a registered method: pick from {', '.join(known)}")
    cls = known[method]
    if cls.stage == "encoder":
        raise SystemExit(
            f"error: {method} merges inside the encoder, layer by layer, so its token count is not "
            "one knob on one set of tokens: run it with python -m lmms_eval and its own parameters"
        )
    if "keep" in {f.name for f in dataclasses.fields(cls)}:
        return {"keep": budget}
    tokens = Tokens(features=torch.zeros(1, side * side, 8), layout=(side, side), special=0)
    fitted = cls.at_budget(budget, tokens)
    return {k: v for k, v in dataclasses.asdict(fitted).items() if isinstance(v, (int, float, str))}


def lmms_eval(args: argparse.Namespace, path: str, method: str, params: dict[str, Any], folder: Path) -> Path:
    """One plugin run over every task; the folder lmms-eval wrote its results into."""
    model_args = ",".join(
        [f"pretrained={path}", f"method={method}", *(f"{k}={v}" for k, v in params.items())]
        + ([args.model_args] if args.model_args else [])
    )
    command = ["-m", "lmms_eval", "--model", "reproductions", "--model_args", model_args,
               "--tasks", ",".join(args.tasks), "--device", args.device, "--batch_size", "1",
               "--output_path", str(folder), "--log_samples"]
    if args.include_path:
        command += ["--include_path", args.include_path]
    if args.limit is not None:
        command += ["--limit", str(args.limit)]
    env = dict(os.environ)
    if args.processes > 1:
        launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                  str(args.processes), "--num_machines", "1", "--mixed_precision", "no",
                  "--dynamo_backend", "no"]
        command = launch + command
        if args.device == "cpu":
            env["ACCELERATE_USE_CPU"] = "1"
    done = subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True)
    found = sorted(folder.glob("*/*_results.json"))
    if not found:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"lmms-eval wrote no results for {model_args}:\n{tail}")
    return found[-1].parent


def save(out: Path, table: dict[str, Any]) -> None:
    """Write the table whole or not at all (a stop mid-write leaves the previous one)."""
    staging = out / ".results.json.tmp"
    staging.write_text(json.dumps(table, indent=1))
    staging.replace(out / "results.json")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    table = json.loads(path.read_text()) if path.exists() else {"runs": {}, "rows": []}
    named = models(args.models)
    sides = {model: grid_side(path, args.grid) for model, path in named.items()}
    # every method's parameters before any run: a bad name or budget stops the sweep here
    planned = [(m, method, b, method_args(method, b, sides[m])) for m, method, b in runs(args)]
    for model, method, budget, params in planned:
        key = run_key(model, method, budget)
        done = table["runs"].get(key)
        if done is not None and set(args.tasks) <= set(done["tasks"]):
            continue  # finished before: kept, not redone
        print(f"eval: {key} {params}", flush=True)
        folder = lmms_eval(args, named[model], method, params, args.out / "runs" / key.replace("/", "-"))
        rows = rows_of_run(folder, named[model], model, method, budget, params)
        table["rows"] = [r for r in table["rows"] if r["run"] != key] + [dict(r, run=key) for r in rows]
        table["runs"][key] = {"tasks": list(args.tasks), "params": params, "folder": str(folder)}
        table["rows"] = gains(table["rows"])
        save(args.out, table)
    plot(table["rows"], args.out)
    print(f"eval: {len(table['rows'])} rows in {path}")
    return 0
