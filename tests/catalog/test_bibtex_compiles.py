"""catalog.bib is citable: a LaTeX document that cites every entry compiles with pdflatex +
bibtex (both from Debian's texlive packages, which `make test` installs), with no BibTeX error
and one bibliography item per paper."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from catalog_fixtures import VALID

from tools.bib import bibliography
from tools.catalog import load_papers, load_taxonomy

DOCUMENT = r"""\documentclass{article}
\usepackage[T1]{fontenc}
\begin{document}
\nocite{*}
\bibliographystyle{plain}
\bibliography{catalog}
\end{document}
"""


def run(command: list[str], folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=folder, capture_output=True, encoding="latin-1", timeout=300, stdin=subprocess.DEVNULL
    )  # TeX writes its logs in 8-bit, not UTF-8


def compile_bibliography(bib: str, folder: Path) -> tuple[str, str]:
    """(bibtex's log, the .bbl) of a document citing every entry of `bib`."""
    missing = [tool for tool in ("pdflatex", "bibtex") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: `make latex` installs texlive-latex-base and texlive-binaries")
    (folder / "catalog.bib").write_text(bib, encoding="utf-8")
    (folder / "cite.tex").write_text(DOCUMENT, encoding="utf-8")
    first = run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "cite.tex"], folder)
    assert first.returncode == 0, first.stdout[-3000:]
    bibtex = run(["bibtex", "cite"], folder)
    assert bibtex.returncode == 0, bibtex.stdout[-3000:]
    second = run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "cite.tex"], folder)
    assert second.returncode == 0, second.stdout[-3000:]
    return bibtex.stdout, (folder / "cite.bbl").read_text(encoding="latin-1")


def test_every_entry_of_the_catalog_compiles(tmp_path: Path) -> None:
    papers = load_papers()
    log, bbl = compile_bibliography(bibliography(papers, load_taxonomy()), tmp_path)
    assert "error message" not in log, log
    assert len(re.findall(r"\\bibitem\{", bbl)) == len(papers)


def test_hostile_titles_and_names_compile(tmp_path: Path) -> None:
    """The characters that broke pdflatex or bibtex: U+FF1A, U+2011, an unbalanced brace,
    LaTeX specials, accents, Greek letters and characters with no LaTeX spelling."""
    base = VALID
    hostile = [
        {**base, "id": "a2025one", "title": "Tok：Fewer‑Tokens } for { 50% & #1 $x$ ~ ^ \\ ² α…", "venue": None},
        {**base, "id": "b2025two", "authors": ["Jürgen Gall", "Łukasz Kaiser", "Çağrı Öztürk", "Ana María Núñez", "李 明"]},
    ]
    log, bbl = compile_bibliography(bibliography(hostile, load_taxonomy()), tmp_path)
    assert "error message" not in log, log
    assert len(re.findall(r"\\bibitem\{", bbl)) == 2
    assert "month" not in log
