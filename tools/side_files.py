"""Checks of the catalog's two side files, run by `validate` after the papers:

- `excluded.yaml`: the source papers judged out of scope; each has a title, an arXiv id or null,
  and a reason, and none of them is in the catalog as well;
- `redirects.yaml`: old paper ids -> current ids; every target exists and no old id is in use.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .catalog import LOADER
from .importer import normalised_title
from .paper_file import Loaded, Report, line_map, show
from .schema import ARXIV_PATTERN


def _read(path: Path, report: Report) -> tuple[object, dict[tuple, int]] | None:
    """The parsed file and the line of every key, or None (with an error) when it does not parse."""
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=LOADER)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        report.error(show(path), mark.line + 1 if mark else 1, "file", "malformed YAML", "valid YAML")
        return None
    return yaml.load(text, Loader=LOADER), line_map(node, report, show(path)) if node else {}


def check(root: Path, papers: list[Loaded], report: Report) -> None:
    """Both side files against the papers."""
    import re

    by_arxiv = {loaded.paper.get("arxiv"): loaded for loaded in papers if loaded.paper.get("arxiv")}
    by_title = {normalised_title(str(loaded.paper.get("title"))): loaded for loaded in papers}
    ids = {loaded.paper.get("id") for loaded in papers}
    read = _read(root / "excluded.yaml", report)
    if read:
        entries, lines = read
        shown = show(root / "excluded.yaml")
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            line = lines.get((index,), 1)
            if not isinstance(entry, dict) or set(entry) != {"title", "arxiv", "reason"}:
                report.error(shown, line, "entry", repr(entry)[:60], "a mapping of title, arxiv (or null) and reason")
                continue
            if not isinstance(entry["reason"], str) or not entry["reason"].strip():
                report.error(shown, lines.get((index, "reason"), line), "reason", repr(entry["reason"]),
                             "why the paper is out of scope, by the rules in CONTRIBUTING.md")
            arxiv = entry["arxiv"]
            if arxiv is not None and not (isinstance(arxiv, str) and re.fullmatch(ARXIV_PATTERN, arxiv)):
                report.error(shown, lines.get((index, "arxiv"), line), "arxiv", repr(arxiv),
                             "an arXiv id like 2403.06764 in quotes, or null")
            twin = by_arxiv.get(arxiv) if arxiv else None
            twin = twin or by_title.get(normalised_title(str(entry["title"])))
            if twin is not None:
                report.error(shown, line, "title", repr(entry["title"]),
                             f"a paper that is not also in the catalog ({twin.shown}): keep one of the two")
    read = _read(root / "redirects.yaml", report)
    if read:
        redirects, lines = read
        shown = show(root / "redirects.yaml")
        for old, new in (redirects.items() if isinstance(redirects, dict) else []):
            line = lines.get((old,), 1)
            if new not in ids:
                report.error(shown, line, str(old), repr(new), "the id of a paper under catalog/papers/")
            if old in ids:
                report.error(shown, line, str(old), "an old id that a paper still has", "only ids no paper uses")
