"""The rows of `python -m tools eval`'s table, read from what lmms-eval wrote, and its plot.

A row is one (model, task, method, budget): the task's first metric (`score`, with every metric
in `scores`), the mean media tokens kept per sample, the mean LLM prefill FLOPs per sample
(the analytic count of `reproductions.flops` over the rows each decoder layer read at the
sample's prefill, so methods that shorten the sequence at several layers or stages count each),
and the mean time to first token the plugin measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean
from typing import Any

#: the rows that every method is compared with
CONTROLS = ("none", "random", "pool")


def _samples(folder: Path, task: str) -> list[dict[str, Any]]:
    found = sorted(folder.glob(f"*_samples_{task}.jsonl"))
    return [json.loads(line) for line in found[-1].read_text().splitlines()] if found else []


def prefill(path: str, method: str, params: dict[str, Any], before: int, after: int,
            schedule: list[int] | None = None) -> int | None:
    """The LLM's prefill FLOPs for one sample: over the rows each decoder layer read where the
    sample recorded them (`schedule`); else, for runs written before it was recorded, `before`
    tokens in the layers before the method's layer (llm stage) and `after` from there on (every
    layer for earlier stages). None where the config has no decoder shape `reproductions.flops`
    reads."""
    import transformers

    from reproductions.flops import DecoderShape, prefill_flops, token_schedule
    from reproductions.registry import get, methods

    try:
        shape = DecoderShape.from_config(transformers.AutoConfig.from_pretrained(path))
    except ValueError:
        return None
    if schedule:
        return prefill_flops(shape, schedule)
    cls = methods().get(method)
    if cls is None or cls.stage not in ("llm", "cache"):
        return prefill_flops(shape, after)
    layer = getattr(get(method, **params), "layer", None) or 2  # compress's default K
    return prefill_flops(shape, token_schedule(shape.layers, before, {layer: after}))


def rows_of_run(
    folder: Path, path: str, model: str, method: str, budget: float | None, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """One row per task of the lmms-eval run in `folder`."""
    results = json.loads(next(iter(sorted(folder.glob("*_results.json")))).read_text())
    rows = []
    for task, metrics in results["results"].items():
        scores = {k.split(",")[0]: v for k, v in metrics.items()
                  if isinstance(v, (int, float)) and "stderr" not in k}
        counts = [c for s in _samples(folder, task) for c in s.get("token_counts") or [] if c]
        flops = [prefill(path, method, params, c["tokens_before"], c["tokens_after"], c.get("schedule"))
                 for c in counts]
        rows.append({
            "model": model, "task": task, "method": method, "budget": budget, "params": params,
            "score": next(iter(scores.values()), None), "scores": scores,
            "kept_tokens": fmean(c["media_after"] for c in counts) if counts else None,
            "media_tokens": fmean(c["media_before"] for c in counts) if counts else None,
            "prefill_flops": fmean(flops) if counts and None not in flops else None,
            "ttft_s": fmean(c["ttft_s"] for c in counts) if counts else None,
        })
    return rows


def gains(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with `gain`: its score minus the best control's (uncompressed, random and pool
    at its budget) for the same model and task; None where no control has run yet."""
    out = []
    for row in rows:
        controls = [r["score"] for r in rows
                    if r["model"] == row["model"] and r["task"] == row["task"] and r["score"] is not None
                    and (r["method"] == "none" or (r["method"] in CONTROLS and r["budget"] == row["budget"]))]
        best = max(controls) if controls else None
        gain = row["score"] - best if best is not None and row["score"] is not None else None
        out.append({**row, "best_control": best, "gain": gain})
    return out


def plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """One figure per (model, task): accuracy against TTFT and against kept tokens, one curve
    per method over its budgets (the uncompressed model a single point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for model, task in sorted({(r["model"], r["task"]) for r in rows}):
        mine = [r for r in rows if (r["model"], r["task"]) == (model, task) and r["score"] is not None]
        figure, (by_time, by_tokens) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
        for method in sorted({r["method"] for r in mine}):
            points = sorted((r for r in mine if r["method"] == method), key=lambda r: r["kept_tokens"] or 0)
            style = "o--" if method in CONTROLS else "o-"
            by_time.plot([r["ttft_s"] for r in points], [r["score"] for r in points], style, label=method)
            by_tokens.plot([r["kept_tokens"] for r in points], [r["score"] for r in points], style, label=method)
        by_time.set(xlabel="time to first token (s)", ylabel="score", title=f"{model} on {task}")
        by_tokens.set(xlabel="media tokens kept", ylabel="score", title="score against kept tokens")
        by_tokens.legend(fontsize="small")
        path = out / f"{model}-{task}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written
