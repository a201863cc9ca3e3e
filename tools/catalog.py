"""Reading the catalog: the paper files and the vocabularies. The single loader every tool uses.

Also the pieces other tools share: the id rule (`paper_id`), the counts the README tables and the
site show (`matrix`, `by_year`, `by_venue`), the canonical YAML form of a paper file
(`dump_paper`) and atomic writes (`write_atomic`), so no command half-writes a file.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "catalog"

Paper = dict[str, Any]

#: every field of a paper file, in the order files are written
FIELDS: tuple[str, ...] = (
    "id", "title", "method", "authors", "year", "month", "venue", "arxiv", "doi", "links",
    "modalities", "mechanisms", "submechanisms", "cost", "architecture", "stage", "tasks",
    "kind", "reproductions", "notes", "checked",
)
VENUE_FIELDS: tuple[str, ...] = ("name", "year", "track", "presentation")
LINK_FIELDS: tuple[str, ...] = ("paper", "code", "project", "model", "dataset")
CHECKED_FIELDS: tuple[str, ...] = ("date", "sources")
MODALITIES: tuple[str, ...] = ("image", "video", "audio")
MECHANISMS: tuple[str, ...] = ("transformation", "similarity", "attention", "query")
MONTHS_SHORT: tuple[str, ...] = (
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
)
#: the C YAML loader where PyYAML has it (several times faster), else the Python one
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SCHEMA_LINE = "# yaml-language-server: $schema=../schema.json"

#: title words the id rule skips
STOPWORDS = frozenset(
    ["a", "an", "the", "on", "of", "for", "in", "to", "and", "with", "is", "are", "via", "towards", "your"]
)


def load_taxonomy(root: Path = CATALOG) -> dict[str, Any]:
    """The controlled vocabularies of `taxonomy.yaml`."""
    return yaml.safe_load((root / "taxonomy.yaml").read_text(encoding="utf-8"))


class CatalogError(ValueError):
    """The catalog has errors: the message holds the validator's `file:line` lines."""


def load_papers(root: Path = CATALOG) -> list[Paper]:
    """Every paper file under `root/papers`, parsed, sorted by id.

    Raises `CatalogError` with the validator's messages when any file is invalid, so that no
    generator (tables, bib, json, site) works from a catalog it would misread."""
    from .validate import validate  # the validator reads files with this module's helpers

    report = validate(root, registry=False)
    if report.errors:
        raise CatalogError("\n".join(report.errors))
    return report.papers


def normalise(paper: Any) -> Any:
    """A parsed paper with an unquoted `checked.date` (YAML reads it as a date) as its text."""
    checked = paper.get("checked") if isinstance(paper, dict) else None
    if isinstance(checked, dict) and isinstance(checked.get("date"), datetime.date):
        checked["date"] = checked["date"].isoformat()
    return paper


def load_excluded(root: Path = CATALOG) -> list[dict[str, Any]]:
    """The source papers judged out of scope (`excluded.yaml`): title, arxiv, reason each."""
    path = root / "excluded.yaml"
    if not path.exists():
        return []
    return yaml.load(path.read_text(encoding="utf-8"), Loader=LOADER) or []


def ascii_slug(text: str) -> str:
    """Lowercase ASCII letters and digits only, accents transliterated (`Müller` -> `muller`)."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = decomposed.encode("ascii", "ignore").decode("ascii").lower()
    return re.sub(r"[^a-z0-9]", "", plain)


def family_name(author: str) -> str:
    """The family name of an author written `Given Family` (or `Family, Given`)."""
    author = author.strip()
    if "," in author:
        return author.split(",", 1)[0].strip()
    parts = author.split()
    return parts[-1] if parts else ""


def title_word(title: str) -> str:
    """The first significant word of a title, as the id rule spells it."""
    for word in re.split(r"[\s/:\-–—：‑]+", title):
        slug = ascii_slug(word)
        if slug and slug not in STOPWORDS:
            return slug
    return "untitled"


def arxiv_year(arxiv: str | None) -> int | None:
    """The year an arXiv id was issued (`2403.06764` -> 2024), None without an id."""
    if not arxiv:
        return None
    return 2000 + int(arxiv[:2])


def arxiv_month(arxiv: str | None) -> int | None:
    """The month an arXiv id was issued (`2403.06764` -> 3), None without an id."""
    if not arxiv:
        return None
    return int(arxiv[2:4])


def paper_id(first_author: str | None, year: int, title: str, taken: Iterable[str] = ()) -> str:
    """The catalog id: family name + year + first significant title word, suffixed on collision.

    `year` is the arXiv id's year (the venue year without one). A paper whose source lists no
    author gets `anonymous` in place of the family name. `taken` holds the ids already given
    (callers assign ids in a deterministic order, so suffixes `b`, `c`, ... are stable).
    """
    family = ascii_slug(family_name(first_author or "")) or "anonymous"
    base = f"{family}{year}{title_word(title)}"
    used = set(taken)
    if base not in used:
        return base
    for suffix in "bcdefghijklmnopqrstuvwxyz":
        if base + suffix not in used:
            return base + suffix
    raise ValueError(f"more than 25 papers share the id {base!r}; pick a distinct id by hand")


def matrix(papers: Iterable[Paper]) -> dict[str, dict[str, int]]:
    """Paper counts by modality x mechanism (`result["image"]["attention"]`).

    A paper counts once in every cell its modalities and mechanisms span; papers with no
    mechanism count under the column `unclassified`.
    """
    columns = (*MECHANISMS, "unclassified")
    counts = {modality: dict.fromkeys(columns, 0) for modality in MODALITIES}
    for paper in papers:
        mechanisms = paper.get("mechanisms") or ["unclassified"]
        for modality in paper.get("modalities") or []:
            for mechanism in mechanisms:
                counts[modality][mechanism] += 1
    return counts


def by_year(papers: Iterable[Paper]) -> dict[int, int]:
    """Paper counts by `year`, oldest first."""
    return dict(sorted(Counter(paper["year"] for paper in papers).items()))


def venue_label(paper: Paper) -> str:
    """`CVPR 2025`, `EMNLP 2024 Findings`, or `arXiv` for a paper without a venue."""
    venue = paper.get("venue")
    if not venue:
        return "arXiv"
    label = f"{venue['name']} {venue['year']}"
    if venue.get("track") and venue["track"] != "main":
        label += f" {venue['track'].capitalize()}"
    return label


def by_venue(papers: Iterable[Paper]) -> dict[str, int]:
    """Paper counts by venue name (all years together; `arXiv` for none), largest first."""
    counts = Counter((paper.get("venue") or {}).get("name", "arXiv") for paper in papers)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0].lower())))


def ordered(paper: Paper) -> Paper:
    """The paper's fields in file order, venue and links complete (missing keys as None)."""
    result: Paper = {}
    for field in FIELDS:
        value = paper.get(field)
        if field == "venue" and value is not None:
            value = {key: value.get(key) for key in VENUE_FIELDS}
        if field == "links":
            value = {key: (value or {}).get(key) for key in LINK_FIELDS}
        if field == "checked" and value is not None:
            value = {key: value.get(key) for key in CHECKED_FIELDS}
        result[field] = value
    return result


def dump_paper(paper: Paper) -> str:
    """The canonical text of a paper file: schema comment, then the fields in `FIELDS` order."""
    lines = [SCHEMA_LINE]
    for field, value in ordered(paper).items():
        if isinstance(value, dict):
            inner = ", ".join(f"{key}: {_scalar(item)}" for key, item in value.items())
            lines.append(f"{field}: {{{inner}}}")
        elif isinstance(value, list):
            lines.append(f"{field}: [{', '.join(_scalar(item) for item in value)}]")
        else:
            lines.append(f"{field}: {_scalar(value)}")
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    """One YAML flow scalar: plain where that reads back unchanged in a flow list, else quoted."""
    if isinstance(value, list):
        return f"[{', '.join(_scalar(item) for item in value)}]"
    if isinstance(value, str):
        plain = value
        if value and _reads_back(plain, value):
            return plain
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value) if value is not None else "null"


def _reads_back(text: str, value: Any) -> bool:
    """Whether `text` parses back to `value` inside a YAML flow sequence and a flow mapping."""
    try:
        return (
            yaml.safe_load(f"[{text}]") == [value]
            and yaml.safe_load(f"{{k: {text}}}") == {"k": value}
            and yaml.safe_load(f"k: {text}") == {"k": value}
        )
    except yaml.YAMLError:
        return False


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: never a half-written file."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_all(texts: dict[Path, str], remove: Iterable[Path] = ()) -> None:
    """Write (and `remove`) several files as one change: each text is staged beside its target
    first, and only when every one is staged are they renamed into place and the others removed.
    A failure before that leaves no file changed; a failure after restores what was changed."""
    staged: dict[Path, str] = {}
    backups: dict[Path, bytes | None] = {}
    try:
        for path, text in texts.items():
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged[path] = temporary
            with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
                stream.write(text)
        for path, temporary in staged.items():
            backups[path] = path.read_bytes() if path.exists() else None
            os.replace(temporary, path)
        for path in remove:
            backups[path] = path.read_bytes()
            path.unlink()
    except BaseException:
        for path, old in backups.items():
            if old is None:
                path.unlink(missing_ok=True)
            else:
                write_atomic(path, old.decode("utf-8"))
        for temporary in staged.values():
            Path(temporary).unlink(missing_ok=True)
        raise
