"""The generated outputs: README tables (committed, must equal a fresh generation), catalog.bib
(parses back to one entry per paper) and catalog.json."""

from __future__ import annotations

import json
from pathlib import Path

import bibtexparser
import pytest

from tools import bib, export_json, tables
from tools.catalog import CATALOG, ROOT, load_papers


def test_committed_readme_tables_equal_a_fresh_generation() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert tables.render(readme, load_papers()) == readme, "run `python -m tools tables`"


def test_tables_rewrite_only_between_the_markers(tmp_path: Path, catalog: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nabove\n{tables.START}\nstale\n{tables.END}\nbelow\n")
    assert tables.main(["--root", str(catalog), "--readme", str(readme), "--check"]) == 1
    assert tables.main(["--root", str(catalog), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nabove\n") and text.endswith(f"{tables.END}\nbelow\n")
    assert "stale" not in text and "| image | 0 | 1 | 1 | 0 | 0 | 2 |" in text
    assert tables.main(["--root", str(catalog), "--readme", str(readme), "--check"]) == 0


def test_tables_refuse_a_readme_without_markers(tmp_path: Path, catalog: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="markers"):
        tables.main(["--root", str(catalog), "--readme", str(readme)])
    assert readme.read_text() == "# no markers\n"


def test_catalog_bib_parses_back_to_every_paper(tmp_path: Path) -> None:
    out = tmp_path / "catalog.bib"
    assert bib.main(["--out", str(out)]) == 0
    library = bibtexparser.parse_file(str(out))
    papers = load_papers(CATALOG)
    assert library.failed_blocks == []
    assert [entry.key for entry in library.entries] == [paper["id"] for paper in papers]


def test_catalog_json_holds_every_paper(tmp_path: Path, catalog: Path) -> None:
    out = tmp_path / "catalog.json"
    assert export_json.main(["--root", str(catalog), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["count"] == 2 and [paper["id"] for paper in data["papers"]] == ["bolya2022token", "chen2024image"]
    assert data["papers"][1]["venue"] == {"name": "ECCV", "year": 2024, "track": "main", "presentation": "oral"}
