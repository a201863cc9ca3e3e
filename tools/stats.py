"""`python -m tools stats`: the catalog's coverage and completeness, as figures.

It reads the paper files as they are (no validation first), so it also measures a catalog that
does not validate yet: how many papers, how many lack authors, classification or a check record,
and how the entries spread over kinds, modalities, years and venues.
"""

from __future__ import annotations

import argparse
import datetime
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from .catalog import CATALOG, LOADER, load_excluded, normalise


def read(root: Path) -> list[dict[str, Any]]:
    """Every paper file under `root/papers` that parses to a mapping."""
    papers = []
    for path in sorted((root / "papers").glob("*.yaml")):
        paper = normalise(yaml.load(path.read_text(encoding="utf-8"), Loader=LOADER))
        if isinstance(paper, dict):
            papers.append(paper)
    return papers


def figures(papers: list[dict[str, Any]], excluded: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures `stats` prints, by name."""
    methods = [paper for paper in papers if paper.get("kind") == "method"]
    checked = [paper["checked"]["date"] for paper in papers if isinstance(paper.get("checked"), dict)]
    return {
        "papers": len(papers),
        "excluded source papers": len(excluded),
        "without authors": sum(1 for paper in papers if not paper.get("authors")),
        "anonymous ids": sum(1 for paper in papers if str(paper.get("id", "")).startswith("anonymous")),
        "method papers": len(methods),
        "method papers without a mechanism": sum(1 for paper in methods if not paper.get("mechanisms")),
        "method papers without a stage": sum(1 for paper in methods if not paper.get("stage")),
        "method papers without a cost": sum(1 for paper in methods if not paper.get("cost")),
        "without a checked record": len(papers) - len(checked),
        "checked between": f"{min(checked)} and {max(checked)}" if checked else "-",
        "arXiv-only": sum(1 for paper in papers if not paper.get("venue")),
        "with code": sum(1 for paper in papers if (paper.get("links") or {}).get("code")),
        "by kind": dict(Counter(paper.get("kind") for paper in papers).most_common()),
        "by modality": dict(Counter(m for paper in papers for m in paper.get("modalities") or []).most_common()),
        "by year": dict(sorted(Counter(paper.get("year") for paper in papers).items(), key=str)),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the figures, one per line (`--json` for a machine-readable copy)."""
    parser = argparse.ArgumentParser(prog="python -m tools stats", description=__doc__)
    parser.add_argument("--root", type=Path, default=CATALOG, help="catalog folder")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    result = figures(read(args.root), load_excluded(args.root))
    if args.json:
        import json

        print(json.dumps(result, indent=2))
        return 0
    print(f"catalog {args.root} on {datetime.date.today()}:")
    for name, value in result.items():
        if isinstance(value, dict):
            value = ", ".join(f"{key} {count}" for key, count in value.items())
        print(f"  {name}: {value}")
    return 0
