"""The content rules of a paper file that the JSON Schema cannot state: who may be an author,
which values must stay on one line, how the dates and the venue agree, what a method paper must
classify, and when a check has gone stale. `validate` runs them after the schema, file by file.

Each rule reports `file:line: field: found ...; expected ...`, as every other check does.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .paper_file import Loaded, Report

#: words that make an author a team or an organisation, not a person ("Qwen Team", "NVIDIA")
TEAM = re.compile(
    r"\b(team|teams|lab|labs|laboratory|group|inc|corp|corporation|company|university|institute|"
    r"deepmind|openai|nvidia|contributors|et al|others)\b",
    re.I,
)
#: title words that name a modality the paper must then list
TITLE_MODALITIES = {"video": "video", "videos": "video", "audio": "audio", "speech": "audio"}
#: how long an arXiv-only entry's check stays fresh: after this, its venue may have changed
STALE_AFTER = datetime.timedelta(days=183)
#: what a `kind: method` paper must classify, and how to say it
METHOD_FIELDS = {
    "mechanisms": "at least one mechanism (transformation, similarity, attention, query)",
    "stage": "at least one stage (input, encoder, projector, llm, cache)",
    "cost": "training-free, training-based or both",
}


def one_line_problem(text: str) -> str | None:
    """What makes `text` unfit for a one-line field (a newline, a code fence, a control
    character), or None."""
    if "\n" in text or "\r" in text:
        return "a line break"
    if "```" in text or "~~~" in text:
        return "a Markdown code fence"
    for character in text:
        if unicodedata.category(character) == "Cc":
            return f"the control character U+{ord(character):04X}"
    return None


def _strings(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """Every string inside a paper, with its key path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))


def _name(path: tuple) -> str:
    return ".".join(str(part) for part in path if not isinstance(part, int))


def check(loaded: Loaded, report: Report, today: datetime.date) -> None:
    """Every content rule on one parsed paper."""
    paper, shown = loaded.paper, loaded.shown
    if not isinstance(paper, dict):
        return
    for path, text in _strings(paper):
        problem = one_line_problem(text)
        if problem:
            report.error(shown, loaded.line(*path), _name(path), f"{problem} in {text[:40]!r}",
                         "one line of plain text (no line breaks, code fences or control characters)")
    _authors(loaded, report)
    _dates(loaded, report)
    _classification(loaded, report)
    _checked(loaded, report, today)


def _authors(loaded: Loaded, report: Report) -> None:
    authors = loaded.paper.get("authors")
    if authors == []:
        report.error(loaded.shown, loaded.line("authors"), "authors", "[] (no authors)",
                     "the full author list, in order, as the paper's arXiv or proceedings page gives it")
    for index, author in enumerate(authors if isinstance(authors, list) else []):
        if isinstance(author, str) and TEAM.search(author):
            report.error(loaded.shown, loaded.line("authors", index), "authors", repr(author),
                         "people, not a team or an organisation: the names on the paper itself")


def _dates(loaded: Loaded, report: Report) -> None:
    paper = loaded.paper
    for name in ("year", "month"):
        value = paper.get(name)
        if isinstance(value, (datetime.date, str, float)):
            example = "year: 2026" if name == "year" else "month: 6"
            report.error(loaded.shown, loaded.line(name), name, f"{value!s} ({type(value).__name__})",
                         f"an integer, like {example} (a date goes into year and month separately)")
    venue, arxiv = paper.get("venue"), paper.get("arxiv")
    if isinstance(venue, dict) and isinstance(venue.get("year"), int) and isinstance(arxiv, str):
        arxiv_year = 2000 + int(arxiv[:2]) if arxiv[:2].isdigit() else None
        if arxiv_year and venue["year"] < arxiv_year:
            report.error(loaded.shown, loaded.line("venue", "year"), "venue.year", str(venue["year"]),
                         f"{arxiv_year} or later: the paper appeared on arXiv ({arxiv}) in "
                         f"{arxiv_year}, so no venue published it before (check the venue or the id)")


def _classification(loaded: Loaded, report: Report) -> None:
    paper = loaded.paper
    if paper.get("kind") == "method":
        for name, expected in METHOD_FIELDS.items():
            if paper.get(name) in (None, []):  # a warning: where the sources are silent, it stays empty
                report.warn(loaded.shown, loaded.line(name), name, f"{paper.get(name)!r} on a method paper",
                            f"{expected}, read from the paper (or say in notes that its pages do not tell)")
    modalities = paper.get("modalities") if isinstance(paper.get("modalities"), list) else []
    title = paper.get("title") if isinstance(paper.get("title"), str) else ""
    for word in re.findall(r"[a-z]+", title.lower()):
        modality = TITLE_MODALITIES.get(word)
        if modality and modality not in modalities:
            report.warn(loaded.shown, loaded.line("modalities"), "modalities", repr(modalities),
                        f"{modality!r} among them: the title says {word!r}")
            break


def _checked(loaded: Loaded, report: Report, today: datetime.date) -> None:
    paper = loaded.paper
    checked = paper.get("checked")
    if not isinstance(checked, dict) or paper.get("venue") is not None or not paper.get("arxiv"):
        return
    try:
        when = datetime.date.fromisoformat(str(checked.get("date")))
    except ValueError:
        return  # the schema's date format reports it
    if today - when > STALE_AFTER:
        report.warn(loaded.shown, loaded.line("checked", "date"), "checked.date", str(when),
                    f"a check within {STALE_AFTER.days} days for an arXiv-only paper: look again "
                    "whether it has appeared at a venue since")
