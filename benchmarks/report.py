"""What a run holds to and prints: the held figure (efficiency and overhead at the smallest
image budget), the environment it ran in, and the closing report."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import PRE_LLM, RESULTS
from .presets import Scenario

#: the figure the default run must hold, for pre-LLM methods at the smallest image budget
EFFICIENCY_FLOOR = 0.85
OVERHEAD_CEILING = 0.03


def figure(results: Sequence[dict[str, Any]], scenarios: Sequence[Scenario]) -> dict[str, Any]:
    """The held figure: pre-LLM methods at the smallest image budget (efficiency), and every
    method's overhead at that budget, with whether both thresholds hold."""
    image = next((s for s in scenarios if s.modality == "image"), None)
    budget = min(image.budgets) if image else None
    rows = []
    for r in results:
        if r["method"] == "none" or r["modality"] != "image" or r.get("error"):
            continue
        if r["budget"] != budget and r["budget"] is not None:
            continue
        speed = r.get("speedup") or {}
        rows.append(
            {
                "method": r["method"],
                "stage": r["stage"],
                "tokens_out": r.get("tokens_out"),
                "measured_speedup": speed.get("measured"),
                "flops_speedup": speed.get("flops"),
                "efficiency": speed.get("efficiency"),
                "overhead": r.get("overhead"),
                "trainable": bool(r.get("trainable")),
            }
        )
    failing = [
        f"{r['method']}: efficiency {r['efficiency']:.3f}"
        for r in rows
        if r["stage"] in PRE_LLM
        and r["efficiency"] is not None
        and r["efficiency"] < EFFICIENCY_FLOOR
    ] + [
        f"{r['method']}: overhead {100 * r['overhead']:.2f}%"
        + (" (trainable module)" if r["trainable"] else "")
        for r in rows
        if r["overhead"] is not None and r["overhead"] >= OVERHEAD_CEILING
    ]
    efficiencies = [
        r["efficiency"] for r in rows if r["stage"] in PRE_LLM and r["efficiency"] is not None
    ]
    overheads = [r["overhead"] for r in rows if r["overhead"] is not None]
    low = min(efficiencies) if efficiencies else None
    high = max(overheads) if overheads else None
    holds = None
    if low is not None and high is not None:
        holds = low >= EFFICIENCY_FLOOR and high < OVERHEAD_CEILING
    return {
        "budget": budget,
        "thresholds": {"efficiency": EFFICIENCY_FLOOR, "overhead": OVERHEAD_CEILING},
        "rows": rows,
        "min_efficiency": low,
        "max_overhead": high,
        "holds": holds,
        "failing": failing,
    }


def environment(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    import transformers

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or _cpu_model() or platform.machine()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=RESULTS.parent, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "device": device.type,
        "device_name": name,
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch."),
        "git_commit": commit,
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def report(data: dict[str, Any]) -> str:
    """The lines printed at the end of a run: the held figure and every method's overhead."""
    s = data["summary"]
    image = next((sc for sc in data["scenarios"] if sc["modality"] == "image"), {"tokens": "?"})
    lines = [
        f"\nPre-LLM methods on image tokens at {image['tokens']} -> {s['budget']} "
        f"(efficiency = measured prefill speed-up / FLOP-ratio speed-up, must be >= "
        f"{s['thresholds']['efficiency']}; overhead = method time / uncompressed prefill, "
        f"must be < {s['thresholds']['overhead']:.0%}):"
    ]
    lines.append(
        f"  {'method':<18}{'stage':<11}{'tokens':>7}{'measured':>10}{'FLOPs':>8}{'ratio':>8}{'overhead':>10}"
    )
    for r in s["rows"]:

        def num(value: float | None, fmt: str) -> str:
            return "-" if value is None else format(value, fmt)

        lines.append(
            f"  {r['method']:<18}{r['stage']:<11}{r['tokens_out']!s:>7}"
            f"{num(r['measured_speedup'], '.2f'):>10}{num(r['flops_speedup'], '.2f'):>8}"
            f"{num(r['efficiency'], '.3f'):>8}{num(r['overhead'] and 100 * r['overhead'], '.2f'):>9}%"
        )
    errors = [r for r in data["results"] if r.get("error")]
    for r in errors:
        lines.append(f"  ! {r['method']} ({r['modality']}): {r['error']}")
    if s["min_efficiency"] is not None:
        lines.append(
            f"min efficiency {s['min_efficiency']:.3f}, max overhead {100 * s['max_overhead']:.2f}%: "
            + ("the figure holds" if s["holds"] else "the figure does NOT hold")
        )
    for failure in s.get("failing", []):
        lines.append(f"  fails: {failure}")
    return "\n".join(lines)
