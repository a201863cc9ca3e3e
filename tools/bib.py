"""`python -m tools bib`: write `catalog.bib`, one citable BibTeX entry per paper, key = catalog id.

Entries carry the full author list, `month = jun` macros, the DOI where known and the venue's full
name; every value is plain ASCII LaTeX (accents as accent commands, typographic punctuation as its
LaTeX spelling, braces and specials escaped), so pdflatex + bibtex compile any entry.
"""

from __future__ import annotations

import argparse
import unicodedata
from pathlib import Path
from typing import Any

import bibtexparser
from bibtexparser.middlewares import MonthAbbreviationMiddleware
from bibtexparser.model import Entry, Field

from .catalog import CATALOG, ROOT, Paper, load_papers, load_taxonomy, write_atomic

#: venues that are journals: `@article` with `journal`, not `@inproceedings`
JOURNALS = frozenset({"IJCV", "SCIS", "TIP", "TMLR", "TOMM", "TPAMI"})
#: venues whose Findings are published as "Findings of the Association for Computational Linguistics"
ACL_VENUES = frozenset({"ACL", "EMNLP", "NAACL", "EACL", "AACL"})
#: proceedings published under a name other than "Proceedings of the <venue>"
PROCEEDINGS = {"NeurIPS": "Advances in Neural Information Processing Systems (NeurIPS)"}
#: characters with a LaTeX spelling of their own (the rest: accents, NFKC, or dropped)
LATEX_CHARACTERS = {
    "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_", "$": r"\$",
    "{": r"\textbraceleft{}", "}": r"\textbraceright{}", "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
    "–": "--", "—": "---", "‐": "-", "‑": "-", "‒": "-", "−": "-",
    "‘": "`", "’": "'", "“": "``", "”": "''", "…": r"\ldots{}", "×": r"$\times$",
    "ß": r"{\ss}", "ø": r"{\o}", "Ø": r"{\O}", "æ": r"{\ae}", "Æ": r"{\AE}", "œ": r"{\oe}",
    "Œ": r"{\OE}", "ł": r"{\l}", "Ł": r"{\L}", "ı": r"{\i}", "đ": r"{\dj}", "Đ": r"{\DJ}",
    "α": r"$\alpha$", "β": r"$\beta$", "γ": r"$\gamma$", "δ": r"$\delta$", "ε": r"$\epsilon$",
    "λ": r"$\lambda$", "μ": r"$\mu$", "π": r"$\pi$", "σ": r"$\sigma$", "τ": r"$\tau$",
    "φ": r"$\phi$", "ω": r"$\omega$", "Δ": r"$\Delta$", "Σ": r"$\Sigma$", "Ω": r"$\Omega$",
}
#: combining marks -> the LaTeX accent command that puts them on a letter
ACCENTS = {
    "\u0300": "`", "\u0301": "'", "\u0302": "^", "\u0303": "~", "\u0304": "=", "\u0306": "u",
    "\u0307": ".", "\u0308": '"', "\u030a": "r", "\u030b": "H", "\u030c": "v", "\u0327": "c",
    "\u0328": "k", "\u0323": "d",
}


def latex(text: str) -> str:
    """`text` as ASCII LaTeX that pdflatex compiles: `Müller` -> `M{\\"u}ller`, `Vote&Mix` ->
    `Vote\\&Mix`, `：` -> `:`, `²` -> `2`; a character with no spelling is dropped."""
    out = []
    for character in text:
        if character in LATEX_CHARACTERS:
            out.append(LATEX_CHARACTERS[character])
        elif character.isascii():
            out.append(character)
        else:
            out.append(_spell(character))
    return "".join(out)


def _spell(character: str) -> str:
    """One non-ASCII character: a letter with accents, or its compatibility form (NFKC)."""
    base, *marks = unicodedata.normalize("NFD", character)
    if base.isascii() and base.isalpha() and marks and all(mark in ACCENTS for mark in marks):
        spelled = "\\i" if base == "i" else base
        for mark in marks:
            spelled = f"\\{ACCENTS[mark]}{{{spelled}}}"
        return f"{{{spelled}}}"
    compatible = unicodedata.normalize("NFKC", character)
    if compatible != character:
        return latex(compatible)
    return ""


def _booktitle(venue: dict[str, Any], venues: dict[str, str]) -> str:
    """`Proceedings of the IEEE/CVF Conference on ... (CVPR)`, with its track; the venues that
    publish under another name (NeurIPS, ACL's Findings) take it."""
    full = venues.get(venue["name"], "").rstrip(".") or venue["name"]
    if venue.get("track") == "findings" and venue["name"] in ACL_VENUES:
        return f"Findings of the Association for Computational Linguistics: {venue['name']} {venue['year']}"
    title = PROCEEDINGS.get(venue["name"]) or f"Proceedings of the {full} ({venue['name']})"
    track = {"workshop": "Workshops", "findings": "Findings"}.get(venue.get("track") or "")
    return f"{title}, {track}" if track else title


def _entry(paper: Paper, venues: dict[str, str]) -> Entry:
    """The bibtexparser entry of one paper."""
    fields: list[tuple[str, str]] = [("title", f"{{{latex(paper['title'])}}}")]
    if paper.get("authors"):
        fields.append(("author", " and ".join(latex(author) for author in paper["authors"])))
    venue = paper.get("venue")
    if venue and venue["name"] in JOURNALS:
        entry_type = "article"
        fields.append(("journal", latex(venues.get(venue["name"], venue["name"]).rstrip("."))))
    elif venue:
        entry_type = "inproceedings"
        fields.append(("booktitle", latex(_booktitle(venue, venues))))
    else:
        entry_type = "article"
        if paper.get("arxiv"):
            fields.append(("journal", f"arXiv preprint arXiv:{paper['arxiv']}"))
    fields.append(("year", str(venue["year"] if venue else paper["year"])))
    if not venue and paper.get("month"):
        fields.append(("month", str(paper["month"])))  # written as the `jun` macro
    if paper.get("arxiv"):
        fields += [("eprint", paper["arxiv"]), ("archivePrefix", "arXiv")]
    if paper.get("doi"):
        fields.append(("doi", latex(paper["doi"])))
    url = (paper.get("links") or {}).get("paper")
    if url:
        fields.append(("url", url.replace("%", r"\%").replace("#", r"\#")))
    return Entry(entry_type, paper["id"], [Field(key, value) for key, value in fields])


def bibliography(papers: list[Paper], taxonomy: dict[str, Any] | None = None) -> str:
    """Every paper's entry, in id order: the text of `catalog.bib`."""
    venues = (taxonomy or load_taxonomy()).get("venues", {})
    library = bibtexparser.Library()
    for paper in sorted(papers, key=lambda paper: paper["id"]):
        library.add(_entry(paper, venues))
    return bibtexparser.write_string(library, prepend_middleware=[MonthAbbreviationMiddleware()])


def bibtex(paper: Paper, taxonomy: dict[str, Any] | None = None) -> str:
    """The BibTeX entry of one paper: @inproceedings at a venue, @article (arXiv journal line) else."""
    return bibliography([paper], taxonomy).strip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write `catalog.bib` (or `--out`) from the catalog."""
    parser = argparse.ArgumentParser(prog="python -m tools bib", description=__doc__)
    parser.add_argument("--root", type=Path, default=CATALOG, help="catalog folder")
    parser.add_argument("--out", type=Path, default=ROOT / "catalog.bib", help="file to write")
    args = parser.parse_args(argv)
    papers = load_papers(args.root)
    write_atomic(args.out, bibliography(papers, load_taxonomy(args.root)))
    print(f"wrote {args.out} ({len(papers)} entries)")
    return 0
