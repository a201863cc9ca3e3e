"""`python -m tools bib`: write `catalog.bib`, one BibTeX entry per paper, key = catalog id."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import bibtexparser
from bibtexparser.model import Entry, Field

from .catalog import CATALOG, MONTHS_SHORT, ROOT, Paper, load_papers, write_atomic

#: the proceedings name a venue abbreviation stands for in `booktitle`
BOOKTITLES = {
    "CVPR": "Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)",
    "ICCV": "Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)",
    "ECCV": "European Conference on Computer Vision (ECCV)",
    "NeurIPS": "Advances in Neural Information Processing Systems (NeurIPS)",
    "ICLR": "International Conference on Learning Representations (ICLR)",
    "ICML": "International Conference on Machine Learning (ICML)",
    "AAAI": "Proceedings of the AAAI Conference on Artificial Intelligence (AAAI)",
    "ACL": "Proceedings of the Annual Meeting of the Association for Computational Linguistics (ACL)",
    "EMNLP": "Proceedings of the Conference on Empirical Methods in Natural Language Processing (EMNLP)",
    "NAACL": "Proceedings of the Conference of the North American Chapter of the Association for Computational Linguistics (NAACL)",
}
#: venues that are journals: `@article` with `journal`, not `@inproceedings`
JOURNALS = {
    "TMLR": "Transactions on Machine Learning Research",
    "IJCV": "International Journal of Computer Vision",
    "TPAMI": "IEEE Transactions on Pattern Analysis and Machine Intelligence",
}


def latex(text: str) -> str:
    """`text` with LaTeX's special characters escaped (`Vote&Mix` -> `Vote\\&Mix`)."""
    return re.sub(r"(?<!\\)([&%#_$])", r"\\\1", text)


def _entry(paper: Paper) -> Entry:
    """The bibtexparser entry of one paper."""
    fields: list[tuple[str, str]] = [("title", f"{{{latex(paper['title'])}}}")]
    if paper.get("authors"):
        fields.append(("author", latex(" and ".join(paper["authors"]))))
    venue = paper.get("venue")
    if venue and venue["name"] in JOURNALS:
        entry_type = "article"
        fields.append(("journal", JOURNALS[venue["name"]]))
        year = venue["year"]
    elif venue:
        entry_type = "inproceedings"
        booktitle = BOOKTITLES.get(venue["name"], venue["name"])
        if venue.get("track") == "findings":
            booktitle = f"Findings of {venue['name']}"
        elif venue.get("track") == "workshop":
            booktitle = f"{booktitle} Workshops"
        fields.append(("booktitle", booktitle))
        year = venue["year"]
    else:
        entry_type = "article"
        if paper.get("arxiv"):
            fields.append(("journal", f"arXiv preprint arXiv:{paper['arxiv']}"))
        year = paper["year"]
    fields.append(("year", str(year)))
    if not venue and paper.get("month"):
        fields.append(("month", MONTHS_SHORT[paper["month"] - 1]))
    if paper.get("arxiv"):
        fields += [("eprint", paper["arxiv"]), ("archivePrefix", "arXiv")]
    if paper.get("doi"):
        fields.append(("doi", paper["doi"]))
    url = (paper.get("links") or {}).get("paper")
    if url:
        fields.append(("url", url))
    return Entry(entry_type, paper["id"], [Field(key, value) for key, value in fields])


def bibtex(paper: Paper) -> str:
    """The BibTeX entry of one paper: @inproceedings at a venue, @article (arXiv journal line) else."""
    library = bibtexparser.Library()
    library.add(_entry(paper))
    return bibtexparser.write_string(library).strip() + "\n"


def bibliography(papers: list[Paper]) -> str:
    """Every paper's entry, in id order: the text of `catalog.bib`."""
    library = bibtexparser.Library()
    for paper in sorted(papers, key=lambda paper: paper["id"]):
        library.add(_entry(paper))
    return bibtexparser.write_string(library)


def main(argv: list[str] | None = None) -> int:
    """Write `catalog.bib` (or `--out`) from the catalog."""
    parser = argparse.ArgumentParser(prog="python -m tools bib", description=__doc__)
    parser.add_argument("--root", type=Path, default=CATALOG, help="catalog folder")
    parser.add_argument("--out", type=Path, default=ROOT / "catalog.bib", help="file to write")
    args = parser.parse_args(argv)
    papers = load_papers(args.root)
    write_atomic(args.out, bibliography(papers))
    print(f"wrote {args.out} ({len(papers)} entries)")
    return 0
