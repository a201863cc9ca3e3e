"""The committed catalog against the four public lists in ../shared/data: every paper the lists
name is either in the catalog (once) or in catalog/excluded.yaml with its reason, so a re-run of
the importer adds nothing.

The lists are the seed, not the truth: each entry's facts were checked against the paper's own
pages (its `checked` record), so titles, authors and venues may differ from what a list says.
Skips when ../shared/data is absent (a plain clone has no copy of the lists)."""

from __future__ import annotations

import re

import pytest

from tools.catalog import ROOT, load_excluded, load_papers
from tools.importer import PLACEHOLDER, SOURCE_FOLDERS, build

SOURCES = ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(
    not all((SOURCES / name).is_dir() for name in SOURCE_FOLDERS),
    reason=f"{SOURCES} is absent: the public lists are not part of a clone",
)


def raw_arxiv_ids() -> set[str]:
    """Every arXiv id the list files mention in a link or a badge (a plain regex, independent of
    the parsers)."""
    ids: set[str] = set()
    for name in SOURCE_FOLDERS:
        for path in (SOURCES / name).glob("*.md"):
            text = path.read_text(encoding="utf-8")
            ids |= set(re.findall(r"arxiv\.org/(?:abs|pdf)/(\d{4}\.\d{4,5})", text, re.I))
            ids |= set(re.findall(r"badge/arXiv-(\d{4}\.\d{4,5})-red", text))
            ids |= set(re.findall(r"10\.48550/arXiv\.(\d{4}\.\d{4,5})", text, re.I))
    return ids


def test_a_reimport_adds_nothing() -> None:
    fresh, _ = build(SOURCES, load_papers(), load_excluded(), log=lambda _: None)
    assert not fresh, "papers of the lists neither in the catalog nor excluded: " + ", ".join(
        paper["arxiv"] or paper["title"] for paper in fresh
    )


def test_every_arxiv_id_of_the_lists_is_in_the_catalog_or_excluded_exactly_once() -> None:
    catalog = [paper["arxiv"] for paper in load_papers() if paper["arxiv"]]
    excluded = [entry["arxiv"] for entry in load_excluded() if entry["arxiv"]]
    assert len(catalog) == len(set(catalog))
    assert not set(catalog) & set(excluded), "both in the catalog and excluded"
    placeholders = {arxiv for arxiv in raw_arxiv_ids() if PLACEHOLDER.search(arxiv)}
    missing = raw_arxiv_ids() - placeholders - set(catalog) - set(excluded)
    assert not missing, f"neither in the catalog nor excluded: {sorted(missing)}"
