"""`python -m tools import`: seed `catalog/papers/` from the four public lists in shared/data.

Rows that describe the same paper (same arXiv id, or same normalised title) merge; where rows
disagree the importer picks by a fixed rule and prints its choice. A paper judged out of scope is
listed in `catalog/excluded.yaml` with its reason and never imported. A paper that already has a
file is left exactly as it is: once imported, an entry is checked against the paper's own pages,
and that file, not the lists, is the source of truth. So a re-run only adds papers that are new
to the lists, and the new files are staged and written together, or not at all.

One module past ~400 lines on purpose: the per-list parsers already live in `sources.py`, and what
is left is one idea, the merge rule (`Importer`) with its index and its command line.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .catalog import (
    CATALOG,
    LOADER,
    MECHANISMS,
    MODALITIES,
    ROOT,
    Paper,
    arxiv_month,
    arxiv_year,
    ascii_slug,
    dump_paper,
    load_excluded,
    paper_id,
    write_all,
)
from .sources import (
    Row,
    Venue,
    parse_awesome_list,
    parse_token_compress,
    parse_token_level,
    parse_token_reduction,
)

DEFAULT_SOURCES = ROOT.parent / "shared" / "data"
SOURCE_FOLDERS = ("awesome-list", "awesome-token-compress", "awesome-token-reduction", "token-level-compression")
T = TypeVar("T")

#: awesome-list "Area" badges -> (modalities, architecture, tasks, kind)
AREAS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], str | None]] = {
    "Image-LLM": (("image",), ("mllm",), (), None),
    "Video-LLM": (("video",), ("mllm",), (), None),
    "Audio-LLM": (("audio",), ("mllm",), (), None),
    "Omni-LLM": (("video", "audio"), ("omni-llm",), (), None),
    "Streaming-Video-LLM": (("video",), ("mllm",), ("streaming-video",), None),
    "3D-LLM": ((), (), ("3d",), None),
    "Vision-Transformer": (("image",), ("vision-transformer",), (), None),
    "Audio-Transformer": (("audio",), ("audio-transformer",), (), None),
    "LLM": ((), ("llm",), (), None),
    "GUI-Agent": ((), (), ("gui-agent",), None),
    "VLN": ((), (), ("vln",), None),
    "VLA": ((), (), ("vla",), None),
    "Event-Camera": ((), (), ("event-camera",), None),
    "Visual-Coding": ((), (), ("visual-coding",), None),
    "Benchmark": ((), (), (), "benchmark"),
    "Survey": ((), (), (), "survey"),
    "Position-Paper": ((), (), (), "position"),
    # awesome-token-compress sections, awesome-token-reduction domains, token-level files
    "VLM": ((), ("mllm",), (), None),
    "ViT": ((), ("vision-transformer",), (), None),
    "Video": (("video",), (), (), None),
    "Agent": ((), ("mllm",), (), None),
    "SSM": ((), ("vision-transformer",), (), None),
    "Hardware": ((), (), (), None),
}
#: awesome-token-compress tags that state a modality or a kind
TAGS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "video": (("video",), None),
    "audio-video": (("video", "audio"), None),
    "survey": ((), "survey"),
}
KIND_PRIORITY = ("survey", "benchmark", "position", "model", "method")
CODE_HOSTS = ("github.com", "gitlab.com", "bitbucket.org", "huggingface.co/spaces")
#: venues held only in odd / even years, to date a venue tag that gives no year
ODD_YEARS, EVEN_YEARS = {"ICCV"}, {"ECCV"}
#: arXiv ids that are placeholders, not papers: they look like no real id (.99999)
PLACEHOLDER = re.compile(r"\.9{4,5}$")
#: papers the lists credit to a team ("Qwen Team"): the first author the id rule uses instead,
#: taken from the arXiv listing (only where we are certain; the others keep a `team...` id)
TEAM_FIRST_AUTHORS = {
    "2204.14198": "Jean-Baptiste Alayrac",  # Flamingo ("DeepMind Team")
    "2304.14178": "Qinghao Ye",  # mPLUG-Owl ("DAMO Team")
    "2404.16821": "Zhe Chen",  # InternVL 1.5 ("InternVL Team")
    "2409.12191": "Peng Wang",  # Qwen2-VL ("Qwen Team")
    "2412.04468": "Zhijian Liu",  # NVILA ("NVIDIA")
    "2502.13923": "Shuai Bai",  # Qwen2.5-VL ("Qwen Team")
    "2503.20215": "Jin Xu",  # Qwen2.5-Omni ("Qwen Team")
}
#: fields the lists carry; every other field of an existing file is kept as it is
LIST_FIELDS = ("modalities", "mechanisms", "architecture", "tasks")


def normalised_title(title: str) -> str:
    """Lowercase ASCII letters and digits of a title: what duplicate detection compares."""
    return ascii_slug(title)


def _pick(values: Iterable[T], key: Callable[[T], Any] = repr) -> T | None:
    """The most frequent value, ties broken by first appearance (the lists' precedence order)."""
    values = list(values)
    if not values:
        return None
    counts = Counter(key(value) for value in values)
    best = max(counts.values())
    return next(value for value in values if counts[key(value)] == best)


class Importer:
    """Merges rows into papers and prints every choice it makes."""

    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.log = log
        #: placeholder arXiv id -> the arXiv id of the paper it duplicates
        self.aliases: dict[str, str] = {}

    def group(self, rows: list[Row]) -> list[list[Row]]:
        """Rows grouped by paper: by arXiv id, then by normalised title (which also catches
        placeholder arXiv ids that repeat another id's title)."""
        by_key: dict[str, list[Row]] = {}
        for row in rows:
            by_key.setdefault(row.arxiv or f"title:{normalised_title(row.title)}", []).append(row)
        title_owner: dict[str, str] = {}
        for key in sorted(by_key, key=lambda key: (key.startswith("title:"), key)):
            for row in by_key[key]:
                title_owner.setdefault(normalised_title(row.title), key)
        for key in sorted(by_key):
            if key not in by_key:
                continue
            titles = {normalised_title(row.title) for row in by_key[key]}
            owners = {title_owner[title] for title in titles} - {key}
            for owner in sorted(owners):
                if owner not in by_key:
                    continue
                keep, drop = self._which_survives(key, owner, by_key)
                self.log(
                    f"merge: {drop} has the title of {keep} "
                    f"({by_key[drop][0].title!r}); keeping {keep}, {drop} becomes an alias"
                )
                if not drop.startswith("title:"):
                    self.aliases[drop] = keep
                by_key[keep].extend(by_key.pop(drop))
                if drop == key:
                    break
        return [by_key[key] for key in sorted(by_key)]

    @staticmethod
    def _which_survives(a: str, b: str, by_key: dict[str, list[Row]]) -> tuple[str, str]:
        """Of two keys naming one paper: a real arXiv id beats a placeholder beats a title key."""

        def rank(key: str) -> tuple[int, int, str]:
            kind = 2 if key.startswith("title:") else 1 if PLACEHOLDER.search(key) else 0
            sources = {row.source.split("/")[0] for row in by_key[key]}
            return (kind, -len(sources), key)

        keep, drop = sorted((a, b), key=rank)
        return keep, drop

    def paper(self, rows: list[Row]) -> Paper:
        """One paper from the rows that describe it."""
        first = [row for row in rows if row.source.startswith("awesome-list/")]
        second = [row for row in rows if not row.source.startswith("awesome-list/")]
        arxiv = _pick(row.arxiv for row in rows if row.arxiv and not PLACEHOLDER.search(row.arxiv))
        label = arxiv or rows[0].title
        title = self._title(label, first, second)
        authors = self._choose(
            label, "authors", [row.authors for row in first if row.authors]
            or [row.authors for row in second if row.authors]
        )
        venue = self._venue(label, first, second, arxiv)
        modalities: set[str] = set()
        architecture: set[str] = set()
        tasks: set[str] = set()
        kinds: set[str] = set()
        for row in rows:
            for area in row.areas:
                if area not in AREAS:
                    self.log(f"skip: {label}: unknown area {area!r} ({row.source})")
                    continue
                more_modalities, more_architecture, more_tasks, kind = AREAS[area]
                modalities.update(more_modalities)
                architecture.update(more_architecture)
                tasks.update(more_tasks)
                kinds.update([kind] if kind else [])
            for tag in row.tags:
                more_modalities, kind = TAGS.get(tag.lower(), ((), None))
                modalities.update(more_modalities)
                kinds.update([kind] if kind else [])
        if not modalities:
            modalities = {"image"}  # both lists' default section: images
        costs = {cost for row in rows for cost in row.costs}
        cost = "both" if len(costs) > 1 else (costs.pop() if costs else None)
        links = self._links(label, rows, first, second, arxiv)
        method = _method_from_title(title) or _pick(row.method for row in second if row.method)
        year = arxiv_year(arxiv) or (venue or {}).get("year") or _pick(
            row.section_year for row in rows if row.section_year
        )
        month = arxiv_month(arxiv)
        for row in first:
            if arxiv and row.arxiv_badge and row.arxiv_badge != (year, month):
                self.log(f"note: {label}: arXiv badge says {row.arxiv_badge}, id says ({year}, {month}); month from the id")
        return {
            "id": None,
            "title": title,
            "method": method,
            "authors": authors or [],
            "year": year,
            "month": month,
            "venue": venue,
            "arxiv": arxiv,
            "doi": None,
            "links": links,
            "modalities": [m for m in MODALITIES if m in modalities],
            "mechanisms": [m for m in MECHANISMS if any(m in row.mechanisms for row in rows)],
            "submechanisms": [],
            "cost": cost,
            "architecture": sorted(architecture),
            "stage": [],
            "tasks": sorted(tasks),
            "kind": next(kind for kind in KIND_PRIORITY if kind in kinds | {"method"}),
            "reproductions": [],
            "notes": None,
        }

    def _choose(self, label: str, field: str, values: list[Any]) -> Any:
        """`_pick`, printing the alternatives whenever the rows disagree."""
        choice = _pick(values)
        others = {repr(value) for value in values} - {repr(choice)}
        if others:
            self.log(f"choose: {label}: {field}: {choice!r} over {', '.join(sorted(others))}")
        return choice

    def _title(self, label: str, first: list[Row], second: list[Row]) -> str:
        """awesome-list's title (most rows; ties: the row with a venue, the published title),
        else awesome-token-compress's."""
        if first:
            ordered = sorted(first, key=lambda row: row.venue is None)
            titles = [row.title for row in ordered]
        else:
            titles = [row.title for row in second]
        choice = self._choose(label, "title", titles)
        other = {row.title for row in second} - {choice}
        if first and other:
            self.log(f"choose: {label}: title: awesome-list's {choice!r} over {sorted(other)!r}")
        return choice

    def _venue(self, label: str, first: list[Row], second: list[Row], arxiv: str | None) -> dict | None:
        """awesome-list's venue badge, else awesome-token-compress's venue tag; a venue without a
        year takes it from the other list or from the arXiv id."""
        stated = [row.venue for row in first if row.venue] or [row.venue for row in second if row.venue]
        if not stated:
            return None
        dated = [venue for venue in stated if venue.year]
        choice: Venue = self._choose(label, "venue", dated) if dated else stated[0]
        if choice.year is None:
            elsewhere = [
                row.venue.year
                for row in first + second
                if row.venue and row.venue.name == choice.name and row.venue.year
            ]
            year = elsewhere[0] if elsewhere else _first_edition(choice.name, arxiv_year(arxiv))
            self.log(f"infer: {label}: venue {choice.name} gives no year; using {year}")
            choice = Venue(choice.name, year, choice.track, choice.presentation)
        if choice.presentation is None:
            presentations = [
                venue.presentation
                for venue in stated
                if venue.presentation and (venue.name, venue.year) == (choice.name, choice.year)
            ]
            if presentations:
                choice = Venue(choice.name, choice.year, choice.track, presentations[0])
        return {
            "name": choice.name,
            "year": choice.year,
            "track": choice.track,
            "presentation": choice.presentation,
        }

    def _links(self, label: str, rows: list[Row], first: list[Row], second: list[Row], arxiv: str | None) -> dict:
        """Paper (the arXiv abstract page where there is one), code, project, model, dataset."""
        paper = f"https://arxiv.org/abs/{arxiv}" if arxiv else rows[0].paper_url
        code_urls = [row.code for row in first if row.code] or [row.code for row in second if row.code]
        code = self._choose(label, "code", code_urls) if code_urls else None
        other = {row.code for row in second if row.code} - {code}
        if code and first and other:
            self.log(f"choose: {label}: code: awesome-list's {code} over {sorted(other)}")
        project = None
        if code and not any(host in code for host in CODE_HOSTS):
            project, code = code, None
        return {
            "paper": paper,
            "code": code,
            "project": project,
            "model": _pick(row.model for row in first if row.model),
            "dataset": _pick(row.dataset for row in first if row.dataset),
        }


def _first_edition(venue: str, year: int | None) -> int | None:
    """The first edition of `venue` held in or after `year` (ICCV odd years, ECCV even)."""
    if year is None:
        return None
    if venue in ODD_YEARS and year % 2 == 0 or venue in EVEN_YEARS and year % 2 == 1:
        return year + 1
    return year


def _method_from_title(title: str) -> str | None:
    """`VisionZip: Longer is Better ...` -> `VisionZip`: a short name before the colon."""
    head = re.split(r"\s*[:：]\s*", title, maxsplit=1)
    if len(head) < 2:
        return None
    name = head[0].strip()
    if 0 < len(name.split()) <= 2 and re.search(r"[A-Z].*[A-Z]|\d|-", name):
        return name
    return None


def read_sources(sources: Path) -> list[Row]:
    """Every row of the four lists, the survey's own list first (its rows take precedence)."""
    return (
        parse_awesome_list(sources / "awesome-list")
        + parse_token_compress(sources / "awesome-token-compress")
        + parse_token_reduction(sources / "awesome-token-reduction")
        + parse_token_level(sources / "token-level-compression")
    )


class Index:
    """Papers found by arXiv id, normalised title or paper URL: how a list row is recognised.

    Titles also match without a leading `Name:` (lists add or drop the method's name) and when
    one is a long prefix of the other (a list that cut a title short)."""

    #: the shortest normalised subtitle or prefix that identifies a paper on its own
    SUBTITLE, PREFIX = 30, 40

    def __init__(self, entries: Iterable[dict[str, Any]]) -> None:
        self.keys: dict[str, dict[str, Any]] = {}
        self.titles: dict[str, dict[str, Any]] = {}
        for entry in entries:
            for key in self._keys(entry.get("arxiv"), entry.get("title") or "", entry.get("links") or {}):
                self.keys.setdefault(key, entry)
            self.titles.setdefault(normalised_title(entry.get("title") or ""), entry)

    @classmethod
    def _keys(cls, arxiv: str | None, title: str, links: dict[str, Any]) -> list[str]:
        keys = [f"title:{normalised_title(title)}"]
        subtitle = normalised_title(re.split(r"[:：]", title, maxsplit=1)[-1])
        if len(subtitle) >= cls.SUBTITLE:
            keys.append(f"title:{subtitle}")
        if arxiv:
            keys.append(f"arxiv:{arxiv}")
        if links.get("paper"):
            keys.append(f"url:{links['paper']}")
        return keys

    def find(self, paper: Paper, rows: list[Row]) -> dict[str, Any] | None:
        """The entry that is this paper, by its arXiv id, any of its rows' titles or URLs."""
        keys = self._keys(paper["arxiv"], paper["title"], paper["links"])
        for row in rows:
            keys += self._keys(None, row.title, {"paper": row.paper_url})
        found = next((self.keys[key] for key in keys if key in self.keys), None)
        if found is None:
            for title in {normalised_title(row.title) for row in rows} | {normalised_title(paper["title"])}:
                found = found or next(
                    (entry for known, entry in self.titles.items()
                     if min(len(known), len(title)) >= self.PREFIX and (known.startswith(title) or title.startswith(known))),
                    None,
                )
        return found


def build(
    sources: Path,
    existing: list[Paper],
    excluded: Iterable[dict[str, Any]] = (),
    log: Callable[[str], None] = print,
) -> tuple[list[Paper], dict[str, str]]:
    """The papers of the lists that are neither in the catalog nor excluded (ids assigned), and
    the placeholder aliases."""
    importer = Importer(log)
    groups = importer.group(read_sources(sources))
    catalog, out = Index(existing), Index(excluded)
    taken = {paper["id"] for paper in existing}
    fresh: list[Paper] = []
    kept = 0
    for rows in groups:
        new = importer.paper(rows)
        reason = out.find(new, rows)
        if reason is not None:
            log(f"exclude: {new['arxiv'] or new['title']!r}: {reason['reason']}")
        elif catalog.find(new, rows) is not None:
            kept += 1
        else:
            fresh.append(new)
    log(f"keep: {kept} papers already in the catalog, as their files say")
    for paper in sorted(fresh, key=lambda paper: (paper["arxiv"] or "~", normalised_title(paper["title"]))):
        first_author = paper["authors"][0] if paper["authors"] else None
        if paper["arxiv"] in TEAM_FIRST_AUTHORS:
            log(f"id: {paper['arxiv']}: the lists credit {first_author!r}; the id uses the first "
                f"author {TEAM_FIRST_AUTHORS[paper['arxiv']]!r}")
            first_author = TEAM_FIRST_AUTHORS[paper["arxiv"]]
        paper["id"] = paper_id(first_author, paper["year"], paper["title"], taken)
        taken.add(paper["id"])
        log(f"add: {paper['id']} ({paper['arxiv'] or paper['links']['paper']})")
    return sorted(fresh, key=lambda paper: paper["id"]), importer.aliases


def main(argv: list[str] | None = None) -> int:
    """Import the lists' new papers into `catalog/papers/` (or `--root`), printing every choice."""
    parser = argparse.ArgumentParser(prog="python -m tools import", description=__doc__)
    parser.add_argument("--sources", type=Path, default=DEFAULT_SOURCES, help="shared/data folder")
    parser.add_argument("--root", type=Path, default=CATALOG, help="catalog folder")
    args = parser.parse_args(argv)
    missing = [name for name in SOURCE_FOLDERS if not (args.sources / name).is_dir()]
    if missing:
        print(f"error: no {', '.join(missing)} under {args.sources}; pass --sources <shared/data>", file=sys.stderr)
        return 2
    folder = args.root / "papers"
    folder.mkdir(parents=True, exist_ok=True)
    existing = [yaml.load(path.read_text(encoding="utf-8"), Loader=LOADER) for path in sorted(folder.glob("*.yaml"))]
    papers, _ = build(args.sources, [paper for paper in existing if paper], load_excluded(args.root), print)
    write_all({folder / f"{paper['id']}.yaml": dump_paper(paper) for paper in papers})
    print(f"imported {len(papers)} new papers into {folder}")
    return 0
