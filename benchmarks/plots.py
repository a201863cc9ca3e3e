"""Plots of a result JSON (`benchmarks/README.md`): speed-up vs budget and method overhead.

The site draws them at build time from the committed JSON (`tools/site.py`), so no PNG is
committed; to look at one run's plots:

    python -m benchmarks plot benchmarks/results/<run>.json [out_dir]
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from . import PRE_LLM, write_atomic


def plot(data: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """Write `<stem>-speedup.png` and `<stem>-overhead.png` under `out_dir`; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    title = f"{data['model']['name']} on {data['environment']['device_name']} ({data['created']})"
    written = []

    measured = [s for s in data["scenarios"] if s["measured_prefill"] and s["baseline"]]
    fig, axes = plt.subplots(
        1, max(1, len(measured)), figsize=(6 * max(1, len(measured)), 4.5), squeeze=False
    )
    markers = "osD^vP*Xh<>p"
    for axis, scenario in zip(axes[0], measured, strict=False):
        by_method: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
        stages: dict[str, str] = {}
        for r in data["results"]:
            speed = r.get("speedup") or {}
            # one panel per family (generate runs) or per modality (former sweep runs)
            same = r.get("family", r["modality"]) == scenario.get("family", scenario["modality"])
            if same and speed.get("measured") is not None:
                by_method[r["method"]].append((r["tokens_out"], speed["measured"], speed["flops"]))
                stages[r["method"]] = r["stage"]
        # methods that shrink the prompt before the LLM share one FLOP curve; the others
        # (llm, cache stages) get their own, dotted, in their colour
        ideal = sorted(
            {(t, f) for m, rows in by_method.items() if stages[m] in PRE_LLM for t, _, f in rows}
        )
        if ideal:
            axis.plot(*zip(*ideal, strict=True), "k--", lw=1.5, label="FLOP ratio (pre-LLM)")
        colours = plt.get_cmap("tab20")
        for index, (method, rows) in enumerate(sorted(by_method.items())):
            rows.sort()
            colour = colours(index % 20)
            tokens = [t for t, _, _ in rows]
            axis.plot(
                tokens,
                [m for _, m, _ in rows],
                marker=markers[index % len(markers)],
                ms=4,
                color=colour,
                label=f"{method} ({stages[method]})",
            )
            if stages[method] not in PRE_LLM:
                axis.plot(tokens, [f for _, _, f in rows], ":", color=colour, lw=1.2)
        axis.set_xlabel(f"{scenario.get('family', '')} {scenario['modality']} tokens kept "
                        f"(of {scenario['tokens']})")
        axis.set_ylabel("prefill speed-up (x), measured")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6, ncol=2)
    fig.suptitle(f"Prefill speed-up vs budget: {title}", fontsize=9)
    fig.tight_layout()
    path = out_dir / f"{stem}-speedup.png"
    save(fig, path)
    plt.close(fig)
    written.append(path)

    rows = [r for r in data["summary"]["rows"] if r["overhead"] is not None]
    fig, axis = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.5))
    rows.sort(key=lambda r: r["overhead"])
    shares = [100 * r["overhead"] for r in rows]
    labels = [f"{r.get('family', '')} {r['method']}".strip() for r in rows]
    bars = axis.barh(labels, shares, color="tab:blue")
    for bar, share in zip(bars, shares, strict=True):
        axis.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {share:.3g}%",
            va="center",
            fontsize=7,
        )
    if shares and min(shares) > 0 and max(shares) > 100 * min(shares):
        axis.set_xscale("log")  # overheads span orders of magnitude
        axis.set_xlim(right=max(shares) * 4)  # room for the labels
    elif shares:
        axis.set_xlim(right=max(shares) * 1.2)
    threshold = 100 * data["summary"]["thresholds"]["overhead"]
    axis.axvline(threshold, color="tab:red", ls="--", lw=1, label=f"{threshold:g}% target")
    axis.set_xlabel(
        "overhead, % of the uncompressed prefill (generate runs: time compress adds; former "
        f"sweep runs: the method's own time), budget {data['summary']['budget']}"
    )
    axis.legend(fontsize=8)
    axis.set_title(f"Method overhead: {title}", fontsize=9)
    fig.tight_layout()
    path = out_dir / f"{stem}-overhead.png"
    save(fig, path)
    plt.close(fig)
    written.append(path)
    return written


def save(fig: Any, path: Path) -> None:
    """Save a figure as PNG in one rename (`write_atomic`)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    write_atomic(path, buffer.getvalue())


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    source = Path(argv[0])
    out = Path(argv[1]) if len(argv) > 1 else source.parent
    for path in plot(json.loads(source.read_text()), out, source.stem):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
