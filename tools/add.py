"""`python -m tools add`: scaffold a new paper file from an arXiv id or a BibTeX entry.

    python -m tools add 2403.06764 --modality image --mechanism attention
    python -m tools add --bibtex paper.bib            # offline
    python -m tools add 2403.06764 --atom saved.xml   # offline, from a saved arXiv API answer

The arXiv API is queried only here, at the contributor's request. The command refuses to
overwrite an existing file and refuses a paper whose arXiv id, DOI or title the catalog has.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import bibtexparser
import yaml
from bibtexparser.middlewares import LatexDecodingMiddleware

from .catalog import (
    CATALOG,
    MONTHS_SHORT,
    Paper,
    arxiv_month,
    arxiv_year,
    dump_paper,
    paper_id,
    write_atomic,
)
from .importer import _method_from_title, normalised_title
from .sources import arxiv_id, known_venue

ARXIV_API = "https://export.arxiv.org/api/query?id_list={}"
ATOM = {"atom": "http://www.w3.org/2005/Atom", "arxiv": "http://arxiv.org/schemas/atom"}
ARXIV_ID = re.compile(r"^(?:arxiv:)?(\d{4}\.\d{4,5})(?:v\d+)?$", re.I)
#: long venue names as BibTeX booktitles spell them -> taxonomy names (NAACL before ACL)
LONG_VENUES = (
    ("North American Chapter of the Association for Computational Linguistics", "NAACL"),
    ("Findings of the Association for Computational Linguistics", "ACL"),
    ("Association for Computational Linguistics", "ACL"),
    ("Empirical Methods in Natural Language Processing", "EMNLP"),
    ("Computer Vision and Pattern Recognition", "CVPR"),
    ("International Conference on Computer Vision", "ICCV"),
    ("European Conference on Computer Vision", "ECCV"),
    ("Neural Information Processing Systems", "NeurIPS"),
    ("Learning Representations", "ICLR"),
    ("International Conference on Machine Learning", "ICML"),
    ("AAAI Conference on Artificial Intelligence", "AAAI"),
    ("ACM International Conference on Multimedia", "ACM MM"),
    ("Transactions on Machine Learning Research", "TMLR"),
    ("International Journal of Computer Vision", "IJCV"),
    ("Acoustics, Speech and Signal Processing", "ICASSP"),
)


class AddError(ValueError):
    """A paper that cannot be added, with what to do instead."""


def parse_atom(text: str, wanted: str) -> Paper:
    """The paper fields an arXiv API Atom answer gives for arXiv id `wanted`."""
    root = ElementTree.fromstring(text)
    for entry in root.findall("atom:entry", ATOM):
        found = arxiv_id(entry.findtext("atom:id", "", ATOM))
        if found != wanted:
            continue
        title = " ".join(entry.findtext("atom:title", "", ATOM).split())
        authors = [
            " ".join(author.findtext("atom:name", "", ATOM).split())
            for author in entry.findall("atom:author", ATOM)
        ]
        doi = entry.findtext("arxiv:doi", None, ATOM)
        paper = scaffold(title=title, authors=authors, arxiv=wanted, doi=doi.strip() if doi else None)
        # title, authors and date were read from arXiv itself: that is a check, dated today
        paper["checked"] = {"date": datetime.date.today().isoformat(), "sources": [paper["links"]["paper"]]}
        return paper
    raise AddError(f"the arXiv answer has no entry for {wanted}; check the id (like 2403.06764)")


def fetch_atom(arxiv: str) -> str:
    """The arXiv API's Atom answer for one id (network; only `add` calls it)."""
    address = ARXIV_API.format(arxiv)
    request = urllib.request.Request(address, headers={"User-Agent": "multimodal-token-compression catalog"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode("utf-8")
    except urllib.error.URLError as error:
        raise AddError(
            f"could not reach the arXiv API ({getattr(error, 'reason', error)}); offline? pass --bibtex FILE "
            f"(the paper's BibTeX entry) or --atom FILE (a saved answer of {address})"
        ) from error


def _unbrace(text: str) -> str:
    return " ".join(text.replace("{", "").replace("}", "").split())


def _author(name: str) -> str:
    """`Chen, Liang` -> `Liang Chen`; `Liang Chen` unchanged."""
    if "," in name:
        family, given = (part.strip() for part in name.split(",", 1))
        return f"{given} {family}".strip()
    return name.strip()


def parse_bibtex(text: str) -> Paper:
    """The paper fields of the first entry of a BibTeX text, LaTeX accents decoded to Unicode
    (`M{\\"u}ller` is stored and shown as Müller)."""
    library = bibtexparser.parse_string(text, append_middleware=[LatexDecodingMiddleware()])
    if not library.entries:
        problem = f" ({len(library.failed_blocks)} block(s) failed to parse)" if library.failed_blocks else ""
        raise AddError(f"no BibTeX entry found{problem}; pass one @article{{...}} or @inproceedings{{...}}")
    entry = library.entries[0]
    fields = {key.lower(): _unbrace(str(value)) for key, value in entry.fields_dict.items() for value in [value.value]}
    if "title" not in fields:
        raise AddError(f"the BibTeX entry {entry.key} has no title; add title = {{...}}")
    authors = [_author(name) for name in re.split(r"\s+and\s+", fields.get("author", "")) if name.strip()]
    arxiv = None
    for key in ("eprint", "journal", "url", "arxiv", "doi"):
        text = fields.get(key, "")
        if key in ("url", "doi") and "arxiv" not in text.lower():
            continue
        match = re.search(r"(\d{4}\.\d{4,5})", text)
        if match:
            arxiv = match.group(1)
            break
    venue = None
    where = fields.get("booktitle") or fields.get("journal", "")
    name = _venue_in(where) if where and "arxiv" not in where.lower() else None
    if name:
        year = int(fields["year"]) if fields.get("year", "").isdigit() else None
        track = "findings" if "findings" in where.lower() else "workshop" if "workshop" in where.lower() else "main"
        venue = {"name": name, "year": year, "track": track, "presentation": None}
    month = fields.get("month", "").lower()[:3]
    paper = scaffold(
        title=fields["title"],
        authors=authors,
        arxiv=arxiv,
        doi=fields.get("doi"),
        venue=venue,
        year=int(fields["year"]) if fields.get("year", "").isdigit() else None,
        month=MONTHS_SHORT.index(month) + 1 if month in MONTHS_SHORT else None,
        url=fields.get("url"),
    )
    return paper


def _venue_in(text: str) -> str | None:
    """The taxonomy venue a booktitle or journal names, by abbreviation or long name."""
    for word in re.findall(r"[A-Za-z]+(?: MM)?", text):
        if word.isupper() or word in ("NeurIPS", "Interspeech"):
            name = known_venue(word)
            if name:
                return name
    for long_name, name in LONG_VENUES:
        if long_name.lower() in text.lower():
            return name
    return None


def scaffold(
    *,
    title: str,
    authors: list[str],
    arxiv: str | None,
    doi: str | None = None,
    venue: dict[str, Any] | None = None,
    year: int | None = None,
    month: int | None = None,
    url: str | None = None,
) -> Paper:
    """A complete paper dict with the classification left for the contributor to fill in."""
    if arxiv:
        year, month = arxiv_year(arxiv), arxiv_month(arxiv)
    year = year or (venue or {}).get("year")
    if year is None:
        raise AddError("no year: pass an arXiv id or a BibTeX entry with year = {...}")
    paper_url = f"https://arxiv.org/abs/{arxiv}" if arxiv else url or (f"https://doi.org/{doi}" if doi else None)
    if paper_url is None:
        raise AddError("no link to the paper: the BibTeX entry needs an eprint, url or doi")
    return {
        "id": None,
        "title": title,
        "method": _method_from_title(title),
        "authors": authors,
        "year": year,
        "month": month,
        "venue": venue,
        "arxiv": arxiv,
        "doi": doi,
        "links": {"paper": paper_url, "code": None, "project": None, "model": None, "dataset": None},
        "modalities": [],
        "mechanisms": [],
        "submechanisms": [],
        "cost": None,
        "architecture": ["mllm"],
        "stage": [],
        "tasks": [],
        "kind": "method",
        "reproductions": [],
        "notes": None,
        "checked": None,
    }


def refuse_duplicate(paper: Paper, existing: list[Paper], folder: Path) -> None:
    """Raise when a catalog file already has this paper: same arXiv id, DOI or title (the fields
    `paper` has; `add` checks an arXiv id before asking the network)."""
    for other in existing:
        for key, same in (
            ("arxiv", paper.get("arxiv") and other.get("arxiv") == paper["arxiv"]),
            ("doi", paper.get("doi") and str(other.get("doi") or "").lower() == paper["doi"].lower()),
            ("title", paper.get("title")
             and normalised_title(str(other.get("title", ""))) == normalised_title(paper["title"])),
        ):
            if same:
                raise AddError(
                    f"duplicate: {folder / (str(other.get('id')) + '.yaml')} already has this paper "
                    f"(same {key}: {paper[key]}); edit that file instead"
                )


def existing_papers(folder: Path) -> list[Paper]:
    """Every paper file under `folder`, as loaded YAML (for the duplicate and id checks)."""
    return [yaml.safe_load(path.read_text(encoding="utf-8")) or {} for path in sorted(folder.glob("*.yaml"))]


def add(paper: Paper, root: Path, options: argparse.Namespace) -> Path:
    """Give `paper` its id, check it is new, and write its file; returns the path."""
    folder = root / "papers"
    existing = existing_papers(folder)
    refuse_duplicate(paper, existing, folder)
    paper["modalities"] = options.modality or ["image"]
    paper["mechanisms"] = options.mechanism or []
    paper["links"]["code"] = options.code
    if options.cost:
        paper["cost"] = options.cost
    first = paper["authors"][0] if paper["authors"] else None
    paper["id"] = options.id or paper_id(first, paper["year"], paper["title"], {o.get("id") for o in existing})
    path = folder / f"{paper['id']}.yaml"
    if path.exists():
        raise AddError(f"{path} exists; refusing to overwrite it (pass --id to choose another id)")
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(path, dump_paper(paper))
    return path


def main(argv: list[str] | None = None) -> int:
    """Scaffold one paper file; exit 1 (nothing written) on a duplicate or an existing file."""
    parser = argparse.ArgumentParser(prog="python -m tools add", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arxiv", nargs="?", help="arXiv id, like 2403.06764")
    parser.add_argument("--bibtex", type=Path, help="read the paper from this BibTeX file ('-': stdin)")
    parser.add_argument("--atom", type=Path, help="read a saved arXiv API answer instead of the network")
    parser.add_argument("--modality", action="append", choices=["image", "video", "audio"])
    parser.add_argument("--mechanism", action="append",
                        choices=["transformation", "similarity", "attention", "query"])
    parser.add_argument("--cost", choices=["training-free", "training-based", "both"])
    parser.add_argument("--code", help="code repository URL")
    parser.add_argument("--id", help="use this id instead of the id rule's")
    parser.add_argument("--root", type=Path, default=CATALOG, help="catalog folder")
    args = parser.parse_args(argv)
    try:
        if args.bibtex:
            text = sys.stdin.read() if str(args.bibtex) == "-" else args.bibtex.read_text(encoding="utf-8")
            paper = parse_bibtex(text)
        elif args.arxiv:
            match = ARXIV_ID.match(args.arxiv.strip())
            if not match:
                raise AddError(f"{args.arxiv!r} is not an arXiv id; pass one like 2403.06764")
            wanted = match.group(1)
            refuse_duplicate({"arxiv": wanted}, existing_papers(args.root / "papers"), args.root / "papers")
            text = args.atom.read_text(encoding="utf-8") if args.atom else fetch_atom(wanted)
            paper = parse_atom(text, wanted)
        else:
            raise AddError("pass an arXiv id (python -m tools add 2403.06764) or --bibtex FILE")
        path = add(paper, args.root, args)
    except (AddError, OSError, ElementTree.ParseError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}\nnext: fill in modalities, mechanisms, cost, stage, links.code and venue from the "
          "paper's own pages, list those pages under checked.sources, then run `python -m tools validate`")
    return 0
