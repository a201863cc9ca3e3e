"""`python -m tools json`: write `catalog.json`, every paper in id order, for scripts and the site."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .catalog import CATALOG, ROOT, Paper, load_papers, ordered, write_atomic


def catalog_json(papers: list[Paper]) -> str:
    """The text of catalog.json: `{"papers": [...]}` with each paper's fields in file order."""
    rows = [ordered(paper) for paper in papers]
    return json.dumps({"count": len(rows), "papers": rows}, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write `catalog.json` (or `--out`)."""
    parser = argparse.ArgumentParser(prog="python -m tools json", description=__doc__)
    parser.add_argument("--root", type=Path, default=CATALOG, help="catalog folder")
    parser.add_argument("--out", type=Path, default=ROOT / "catalog.json", help="file to write")
    args = parser.parse_args(argv)
    papers = load_papers(args.root)
    write_atomic(args.out, catalog_json(papers))
    print(f"wrote {args.out} ({len(papers)} papers)")
    return 0
