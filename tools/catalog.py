"""Reading the catalog: the paper files and the vocabularies. The single loader every tool uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "catalog"

Paper = dict[str, Any]


def load_taxonomy(root: Path = CATALOG) -> dict[str, Any]:
    """The controlled vocabularies of `taxonomy.yaml`."""
    return yaml.safe_load((root / "taxonomy.yaml").read_text(encoding="utf-8"))


def load_papers(root: Path = CATALOG) -> list[Paper]:
    """Every paper file under `root/papers`, parsed, sorted by id."""
    papers = [
        yaml.safe_load(path.read_text(encoding="utf-8"))
        for path in sorted((root / "papers").glob("*.yaml"))
    ]
    return sorted(papers, key=lambda paper: paper["id"])
