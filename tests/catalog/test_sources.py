"""The committed catalog against the two public lists in ../shared/data: every arXiv id once,
and titles, authors, venues and links equal to what the lists say.

Skips when ../shared/data is absent (a plain clone has no copy of the lists)."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from tools.catalog import ROOT, load_papers
from tools.importer import PLACEHOLDER, build, normalised_title
from tools.sources import Row, parse_awesome_list, parse_token_compress

SOURCES = ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(
    not (SOURCES / "awesome-list").is_dir(),
    reason=f"{SOURCES} is absent: the public lists are not part of a clone",
)


@pytest.fixture(scope="module")
def rows() -> dict[str, list[Row]]:
    """Source rows by the arXiv id the catalog files them under (placeholders resolved)."""
    _, aliases = build(SOURCES, [], log=lambda _: None)
    rows = parse_awesome_list(SOURCES / "awesome-list") + parse_token_compress(
        SOURCES / "awesome-token-compress"
    )
    grouped: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        grouped[aliases.get(row.arxiv, row.arxiv) or normalised_title(row.title)].append(row)
    return grouped


@pytest.fixture(scope="module")
def papers() -> dict[str, dict]:
    by_key = {}
    for paper in load_papers():
        by_key[paper["arxiv"] or normalised_title(paper["title"])] = paper
    return by_key


def raw_arxiv_ids() -> set[str]:
    """Every arXiv id the list files mention in a paper link or an arXiv badge (a plain regex,
    independent of the parsers)."""
    ids: set[str] = set()
    for path in [*(SOURCES / "awesome-list").glob("*.md"), SOURCES / "awesome-token-compress" / "README.md"]:
        text = path.read_text(encoding="utf-8")
        text = text.replace("arxiv.org/abs/2507.20198)\n", "")  # the survey's own header links
        ids |= set(re.findall(r"arxiv\.org/(?:abs|pdf)/(\d{4}\.\d{4,5})", text))
        ids |= set(re.findall(r"badge/arXiv-(\d{4}\.\d{4,5})-red", text))
    return ids


def test_every_arxiv_id_of_both_lists_is_in_the_catalog_exactly_once(papers) -> None:
    catalog_ids = [paper["arxiv"] for paper in load_papers() if paper["arxiv"]]
    assert len(catalog_ids) == len(set(catalog_ids))
    placeholders = {arxiv for arxiv in raw_arxiv_ids() if PLACEHOLDER.search(arxiv)}
    assert placeholders == {"2512.99999"}
    missing = raw_arxiv_ids() - placeholders - set(catalog_ids)
    assert not missing, f"not in the catalog: {sorted(missing)}"


def test_titles_authors_venues_and_links_equal_the_sources(rows, papers) -> None:
    problems = []
    by_title = {normalised_title(paper["title"]): key for key, paper in papers.items()}
    merged: dict[str, list[Row]] = defaultdict(list)
    for key, group in rows.items():  # rows without an arXiv id join the paper of their title
        merged[key if key in papers else by_title.get(key, key)].extend(group)
    for key, group in merged.items():
        paper = papers.get(key)
        if paper is None:
            problems.append(f"{key}: no catalog entry")
            continue
        first = [row for row in group if row.source.startswith("awesome-list/")]
        titles = {row.title for row in (first or group)}
        if paper["title"] not in titles:
            problems.append(f"{paper['id']}: title {paper['title']!r} not among {titles}")
        author_lists = [row.authors for row in first if row.authors]
        if author_lists and paper["authors"] not in author_lists:
            problems.append(f"{paper['id']}: authors {paper['authors']} not among {author_lists}")
        if not author_lists and paper["authors"]:
            problems.append(f"{paper['id']}: authors {paper['authors']} but the lists give none")
        venues = [row.venue for row in group if row.venue]
        if venues:
            names = {(venue.name, venue.year) for venue in venues}
            got = paper["venue"] and (paper["venue"]["name"], paper["venue"]["year"])
            undated = {venue.name for venue in venues if venue.year is None}
            if got not in names and not (got and got[0] in undated):
                problems.append(f"{paper['id']}: venue {got} not among {names}")
        elif paper["venue"] is not None:
            problems.append(f"{paper['id']}: venue {paper['venue']} but the lists give none")
        links = paper["links"]
        if paper["arxiv"]:
            assert links["paper"] == f"https://arxiv.org/abs/{paper['arxiv']}"
        elif links["paper"] not in {row.paper_url for row in group}:
            problems.append(f"{paper['id']}: paper link {links['paper']}")
        code_urls = {row.code for row in group if row.code}
        stated = links["code"] or links["project"]
        if (stated or code_urls) and stated not in code_urls:
            problems.append(f"{paper['id']}: code {stated} not among {code_urls}")
        for kind in ("model", "dataset"):
            urls = {getattr(row, kind) for row in first if getattr(row, kind)}
            if (links[kind] or urls) and links[kind] not in urls:
                problems.append(f"{paper['id']}: {kind} {links[kind]} not among {urls}")
    assert not problems, "\n".join(problems)
