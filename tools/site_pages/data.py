"""What the pages are made from (`SiteData`), the taxonomy's vocabularies, and the facts of a
paper that more than one kind of page shows."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..catalog import Paper, venue_label
from .markup import url

#: the label the papers table and the matrix give papers that no mechanism classifies yet
UNCLASSIFIED = "unclassified"
#: ids are URL slugs: lowercase ASCII letters and digits (the id rule), nothing that walks paths
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
#: how many papers the home page lists under "newest additions"
NEWEST = 10
#: how many related papers a paper page lists
RELATED = 12


@dataclass
class SiteData:
    """Everything the generated pages are made from."""

    papers: list[Paper]
    taxonomy: dict[str, Any]
    #: registry name -> method class (`reproductions.methods()`)
    methods: dict[str, type] = field(default_factory=dict)
    #: benchmark result documents (`benchmarks/results/*.json`), each with its file name
    results: list[dict[str, Any]] = field(default_factory=list)
    #: accuracy sweeps (`benchmarks/accuracy/<name>/results.json`, written by `python -m tools
    #: eval`), each with its folder name under "name"
    accuracy: list[dict[str, Any]] = field(default_factory=list)
    #: paper id -> ISO date the paper file was first committed (missing: not committed yet)
    added: dict[str, str] = field(default_factory=dict)
    #: repository URL (for links to files outside the docs), or None
    repo_url: str | None = None
    #: old paper id -> current id (`catalog/redirects.yaml`): the old URLs redirect
    redirects: dict[str, str] = field(default_factory=dict)
    #: registry name -> model family -> (kind, reason): the support matrix
    #: (`reproductions.hf.support.matrix()`, computed once per build)
    support: dict[str, dict[str, tuple[str, str | None]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for paper in self.papers:
            if not isinstance(paper.get("id"), str) or not ID_PATTERN.match(paper["id"]):
                raise ValueError(
                    f"paper id {paper.get('id')!r} is not a URL slug: use lowercase ASCII letters "
                    "and digits (run `python -m tools validate`)"
                )

    @property
    def by_id(self) -> dict[str, Paper]:
        return {paper["id"]: paper for paper in self.papers}


# --------------------------------------------------------------------------------------------
# the vocabularies


def vocabulary(taxonomy: Mapping[str, Any], key: str) -> dict[str, str]:
    """value -> one-line description for one vocabulary of `taxonomy.yaml` (`modalities`, ...)."""
    entries = taxonomy.get(key) or {}
    if isinstance(entries, Mapping):
        items = entries.items()
    else:  # a list of {name/id/value: ..., description: ...} or of bare values
        items = [
            (entry.get("name") or entry.get("id") or entry.get("value"), entry)
            if isinstance(entry, Mapping)
            else (entry, "")
            for entry in entries
        ]
    return {str(name): _description(entry) for name, entry in items}


def submechanisms(taxonomy: Mapping[str, Any], mechanism: str) -> dict[str, str]:
    """The finer sub-mechanisms `taxonomy.yaml` lists under `mechanism`, with descriptions."""
    entry = (taxonomy.get("mechanisms") or {}).get(mechanism)
    nested = entry.get("submechanisms") if isinstance(entry, Mapping) else None
    if nested is None:
        flat = taxonomy.get("submechanisms") or {}
        nested = {
            name: value
            for name, value in (flat.items() if isinstance(flat, Mapping) else [])
            if isinstance(value, Mapping) and value.get("mechanism") == mechanism
        }
    return vocabulary({"values": nested}, "values")


def _description(entry: Any) -> str:
    if isinstance(entry, Mapping):
        return str(entry.get("description") or entry.get("definition") or "")
    return "" if entry is None else str(entry)


# --------------------------------------------------------------------------------------------
# facts of a paper


def mechanisms_of(paper: Paper) -> list[str]:
    return list(paper.get("mechanisms") or []) or [UNCLASSIFIED]


def code_url(paper: Paper) -> str | None:
    return url((paper.get("links") or {}).get("code"))


def reproductions_of(paper: Paper, data: SiteData) -> list[str]:
    """The registered methods of a paper: those its `reproductions:` lists, and those whose
    registry entry names it (the validator keeps the two in agreement; the site shows either)."""
    listed = [name for name in paper.get("reproductions") or [] if name in data.methods]
    named = [name for name, cls in data.methods.items() if getattr(cls, "paper", None) == paper["id"]]
    return list(dict.fromkeys(listed + named))


def when(paper: Paper) -> str:
    """`2024-03` (year and month where the month is known)."""
    month = paper.get("month")
    return f"{paper['year']}-{month:02d}" if isinstance(month, int) else str(paper["year"])


def citation(paper: Paper) -> str:
    """The paper as a plain-text reference: authors, title, where and when it appeared."""
    authors = list(paper.get("authors") or [])
    parts = [authors[0] if len(authors) == 1 else ", ".join(authors[:-1]) + f" and {authors[-1]}"]
    parts.append(paper["title"].rstrip("."))
    if paper.get("venue"):
        parts.append(venue_label(paper))
    elif paper.get("arxiv"):
        parts.append(f"arXiv:{paper['arxiv']}, {paper['year']}")
    return ". ".join(parts) + "."


def venue_name(paper: Paper) -> str:
    return (paper.get("venue") or {}).get("name") or "arXiv"


def newest(data: SiteData, count: int = NEWEST) -> list[Paper]:
    """The papers added last: by first-commit date, uncommitted files first, then newest paper."""
    never = "9999"

    def key(paper: Paper) -> tuple[str, int, int, str]:
        return (data.added.get(paper["id"], never), paper["year"], paper.get("month") or 0, paper["id"])

    return sorted(data.papers, key=key, reverse=True)[:count]


def related(paper: Paper, papers: Iterable[Paper], count: int = RELATED) -> list[Paper]:
    """Papers sharing a modality and a mechanism with `paper`: most shared pairs first, then newest."""
    pairs = {(m, k) for m in paper.get("modalities") or [] for k in paper.get("mechanisms") or []}
    scored = []
    for other in papers:
        if other["id"] == paper["id"]:
            continue
        shared = {(m, k) for m in other.get("modalities") or [] for k in other.get("mechanisms") or []}
        overlap = len(pairs & shared)
        if overlap:
            scored.append((-overlap, -other["year"], -(other.get("month") or 0), other["id"], other))
    return [item[-1] for item in sorted(scored, key=lambda item: item[:-1])[:count]]
