"""The shared functions other engineers import: the id rule, the counts, the canonical dump,
atomic writes, and the BibTeX entry of one paper."""

from __future__ import annotations

import os
from pathlib import Path

import bibtexparser
import pytest
import yaml
from catalog_fixtures import SECOND, VALID, paper

from tools.bib import bibtex
from tools.catalog import by_venue, by_year, dump_paper, matrix, paper_id, title_word, write_atomic


@pytest.mark.parametrize(
    ("author", "year", "title", "expected"),
    [
        ("Liang Chen", 2024, "An Image is Worth 1/2 Tokens After Layer 2", "chen2024image"),
        ("Daniel Bolya", 2022, "Token Merging: Your ViT But Faster", "bolya2022token"),
        ("José Müller-Lüdenscheidt", 2025, "Towards Ünïcode Titles", "mullerludenscheidt2025unicode"),
        ("Bolya, Daniel", 2022, "The Token", "bolya2022token"),
        ("Kele Shao", 2025, "When Tokens Talk Too Much", "shao2025when"),
        (None, 2025, "On the Via: Is Your Pruning Enough", "anonymous2025pruning"),
        ("Q. Li", 2024, "LLaVA-PruMerge: Adaptive", "li2024llava"),
    ],
)
def test_paper_id_rule(author, year, title, expected) -> None:
    assert paper_id(author, year, title) == expected


def test_paper_id_suffixes_in_order() -> None:
    taken = {"chen2024image"}
    second = paper_id("Liang Chen", 2024, "An Image", taken)
    taken.add(second)
    assert (second, paper_id("Liang Chen", 2024, "An Image", taken)) == ("chen2024imageb", "chen2024imagec")


def test_title_word_skips_every_stopword() -> None:
    stop = "a an the on of for in to and with is are via towards your"
    assert title_word(f"{stop.title()} Pruning") == "pruning"


def test_matrix_counts_every_cell_a_paper_spans() -> None:
    papers = [
        paper(modalities=["image", "video"], mechanisms=["attention", "similarity"]),
        paper(modalities=["audio"], mechanisms=[]),
        SECOND,
    ]
    counts = matrix(papers)
    assert counts["image"] == {"transformation": 0, "similarity": 2, "attention": 1, "query": 0, "unclassified": 0}
    assert counts["video"]["attention"] == 1 and counts["video"]["similarity"] == 1
    assert counts["audio"]["unclassified"] == 1 and sum(counts["audio"].values()) == 1


def test_by_year_and_by_venue() -> None:
    papers = [VALID, SECOND, paper(venue=None, year=2025), paper(venue=None, year=2025)]
    assert by_year(papers) == {2022: 1, 2024: 1, 2025: 2}
    assert by_venue(papers) == {"arXiv": 2, "ECCV": 1, "ICLR": 1}


def test_dump_reads_back_unchanged_even_for_awkward_strings() -> None:
    awkward = paper(
        title='"Quoted": yes, no, null & [brackets] #not-a-comment',
        authors=["O'Brien", "- dash", "? question", "Zoë Ünal"],
        notes="multi\nline",
        method="1.5",
    )
    text = dump_paper(awkward)
    assert text.startswith("# yaml-language-server: $schema=../schema.json\nid: chen2024image\n")
    assert yaml.safe_load(text) == awkward
    assert dump_paper(yaml.safe_load(text)) == text


def test_write_atomic_replaces_whole_files_and_leaves_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    write_atomic(target, "new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["out.txt"]


    with pytest.raises(TypeError):
        write_atomic(target, 123)  # type: ignore[arg-type]
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["out.txt"]


def test_bibtex_of_a_venue_paper_is_inproceedings() -> None:
    entry = bibtexparser.parse_string(bibtex(VALID)).entries[0]
    assert (entry.entry_type, entry.key) == ("inproceedings", "chen2024image")
    assert entry["author"] == "Liang Chen and Haozhe Zhao"
    assert "European Conference on Computer Vision" in entry["booktitle"]
    assert entry["year"] == "2024" and entry["eprint"] == "2403.06764"


def test_bibtex_of_an_arxiv_paper_is_an_article_with_the_arxiv_journal_line() -> None:
    entry = bibtexparser.parse_string(bibtex(paper(venue=None))).entries[0]
    assert entry.entry_type == "article"
    assert entry["journal"] == "arXiv preprint arXiv:2403.06764"
    assert entry["month"] == "mar"


def test_bibtex_findings_track_and_journal_venues() -> None:
    findings = paper(venue={"name": "EMNLP", "year": 2024, "track": "findings", "presentation": None})
    assert bibtexparser.parse_string(bibtex(findings)).entries[0]["booktitle"] == (
        "Findings of the Association for Computational Linguistics: EMNLP 2024"
    )
    cvpr = paper(venue={"name": "CVPR", "year": 2026, "track": "findings", "presentation": None})
    assert bibtexparser.parse_string(bibtex(cvpr)).entries[0]["booktitle"] == (
        "Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR), Findings"
    )
    journal = paper(venue={"name": "TMLR", "year": 2025, "track": "main", "presentation": None})
    entry = bibtexparser.parse_string(bibtex(journal)).entries[0]
    assert (entry.entry_type, entry["journal"]) == ("article", "Transactions on Machine Learning Research")


def test_bibtex_escapes_latex_specials_in_titles() -> None:
    entry = bibtexparser.parse_string(bibtex(paper(title="Vote&Mix: 50% Fewer Tokens"))).entries[0]
    assert entry["title"] == r"{Vote\&Mix: 50\% Fewer Tokens}"


def test_load_papers_returns_what_each_file_parses_to() -> None:
    """`load_papers` hands on the validator's parse (the site build validates, then makes pages,
    from one read of the catalog): it equals a fresh parse of every file, sorted by id."""
    from tools.catalog import CATALOG, LOADER, load_papers, normalise

    fresh = sorted(
        (normalise(yaml.load(path.read_text(encoding="utf-8"), Loader=LOADER)) for path in (CATALOG / "papers").glob("*.yaml")),
        key=lambda p: p["id"],
    )
    assert load_papers(CATALOG) == fresh and len(fresh) > 600
