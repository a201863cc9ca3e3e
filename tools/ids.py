"""`python -m tools ids`: give every paper whose id breaks the id rule (`anonymous...` and team
ids from authorless imports, a year or title word that has changed since) the id the rule gives,
and keep its old URL working.

The paper file is renamed, and `catalog/redirects.yaml` maps the old id to the new one: the site
serves a redirect page at each old address. A paper that a reproduction names keeps its id (the
method's `paper` attribute would break); the validator keeps warning about it. All files change
together, or none does.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from .catalog import CATALOG, LOADER, dump_paper, load_papers, paper_id, write_all


def load_redirects(root: Path = CATALOG) -> dict[str, str]:
    """Old paper id -> current id (`redirects.yaml`), for the pages that keep old URLs alive."""
    path = root / "redirects.yaml"
    return (yaml.load(path.read_text(encoding="utf-8"), Loader=LOADER) or {}) if path.exists() else {}


def rule_id(paper: dict[str, Any], taken: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    """The id the id rule gives a paper: its first author, year and first title word."""
    return paper_id(paper["authors"][0], paper["year"], paper["title"], taken)


def breaks_rule(paper: dict[str, Any]) -> bool:
    """Whether a paper with authors has an id other than the rule's (a letter suffix allowed)."""
    try:
        expected = rule_id(paper)
    except (KeyError, TypeError, IndexError, ValueError, AttributeError):
        return False  # no authors, or fields the schema reports
    given = str(paper.get("id", ""))
    return not (given == expected or (given[:-1] == expected and given[-1:].isalpha()))


def renames(papers: list[dict[str, Any]]) -> dict[str, str]:
    """Old id -> new id for every paper that breaks the rule and no reproduction names, assigned
    in id order (so suffixes are stable)."""
    moving = [paper for paper in papers if breaks_rule(paper) and not paper.get("reproductions")]
    taken = {paper["id"] for paper in papers} - {paper["id"] for paper in moving}
    result = {}
    for paper in sorted(moving, key=lambda paper: paper["id"]):
        new = rule_id(paper, taken)
        taken.add(new)
        result[paper["id"]] = new
    return result


def main(argv: list[str] | None = None) -> int:
    """Rename the papers that need an id, and record where their old ids now lead."""
    parser = argparse.ArgumentParser(prog="python -m tools ids", description=__doc__)
    parser.add_argument("--root", type=Path, default=CATALOG, help="catalog folder")
    args = parser.parse_args(argv)
    papers = load_papers(args.root)
    moves = renames(papers)
    redirects = {old: moves.get(new, new) for old, new in load_redirects(args.root).items()} | moves
    folder = args.root / "papers"
    texts = {}
    for paper in papers:
        if paper["id"] in moves:
            print(f"rename: {paper['id']} -> {moves[paper['id']]}")
            texts[folder / f"{moves[paper['id']]}.yaml"] = dump_paper({**paper, "id": moves[paper["id"]]})
    if moves:
        lines = [
            "# Old paper ids -> current ids (`python -m tools ids`): the site keeps the old URLs",
            "# alive as redirect pages.",
        ]
        lines += [f"{old}: {new}" for old, new in sorted(redirects.items())]
        texts[args.root / "redirects.yaml"] = "\n".join(lines) + "\n"
    write_all(texts, remove=[folder / f"{old}.yaml" for old in moves])
    print(f"renamed {len(moves)} papers; {len(redirects)} old ids redirect")
    return 0
