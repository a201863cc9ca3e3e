"""The importer on small hand-written copies of the four lists' formats (tests/catalog/fixtures/
sources): badges to structured fields, merging, deterministic choices it prints, placeholder ids,
exclusions, re-runs that change nothing, existing files kept, and all-or-nothing writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from catalog_fixtures import snapshot

import tools.catalog
from tools.catalog import dump_paper
from tools.importer import main
from tools.validate import validate

SOURCES = Path(__file__).parent / "fixtures" / "sources"
EXCLUDED = """\
- title: "Guiding Token-Sparse Diffusion Models"
  arxiv: null
  reason: "generation model (diffusion)"
- title: "Kappa: Pruning Prompts of Language Models"
  arxiv: "2602.00009"
  reason: "text-only: prompt compression"
"""
#: what an imported paper still lacks until someone checks it against its sources
UNCHECKED_FIELDS = {"checked", "authors", "mechanisms", "stage", "cost"}


@pytest.fixture
def imported(catalog: Path, capsys) -> tuple[Path, dict[str, dict], str]:
    """The fixture lists imported into an empty catalog: (root, papers by arXiv id, printout)."""
    for path in (catalog / "papers").glob("*.yaml"):
        path.unlink()
    (catalog / "excluded.yaml").write_text(EXCLUDED, encoding="utf-8")
    assert main(["--sources", str(SOURCES), "--root", str(catalog)]) == 0
    printed = capsys.readouterr().out
    papers = {}
    for path in (catalog / "papers").glob("*.yaml"):
        paper = yaml.safe_load(path.read_text(encoding="utf-8"))
        papers[paper["arxiv"] or paper["title"]] = paper
    return catalog, papers, printed


def test_every_paper_once_and_only_the_unchecked_fields_fail_validation(imported) -> None:
    root, papers, printed = imported
    assert sorted(papers) == [
        "2110.00010", "2401.00011", "2406.00003", "2406.00012", "2501.00001", "2502.00002",
        "2507.00006", "2509.00008", "2603.00005", "2604.00007",
        "Eta: Vision Transformer Tokens", "Lambda: Visual Token Pruning Without a Venue",
    ]
    fields = {line.split(": ")[1] for line in validate(root, registry=False).errors}
    assert fields <= UNCHECKED_FIELDS, fields
    assert "imported 12 new papers" in printed


def test_badges_become_structured_fields(imported) -> None:
    _, papers, _ = imported
    alpha = papers["2501.00001"]
    assert alpha["venue"] == {"name": "CVPR", "year": 2025, "track": "main", "presentation": "highlight"}
    assert papers["2406.00003"]["venue"] == {"name": "EMNLP", "year": 2024, "track": "findings", "presentation": None}
    assert papers["2406.00003"]["kind"] == "benchmark"
    assert papers["2406.00003"]["links"]["project"] == "https://showlab.github.io/gamma"
    assert papers["2406.00003"]["links"]["code"] is None


def test_rows_of_one_paper_merge(imported) -> None:
    _, papers, _ = imported
    alpha = papers["2501.00001"]
    assert alpha["id"] == "alvarez2025alpha"
    assert alpha["title"] == "Alpha: Pruning Tokens by Attention"
    assert alpha["authors"] == ["Ana Álvarez", "Bo Li"]
    assert alpha["modalities"] == ["image", "video"]
    assert alpha["mechanisms"] == ["attention", "query"]
    assert alpha["cost"] == "both"
    assert alpha["tasks"] == ["gui-agent", "streaming-video"]
    assert (alpha["year"], alpha["month"]) == (2025, 1)
    assert alpha["links"] == {
        "paper": "https://arxiv.org/abs/2501.00001",
        "code": "https://github.com/a/b",
        "project": None,
        "model": "https://huggingface.co/a/b",
        "dataset": None,
    }


def test_disagreements_are_decided_deterministically_and_printed(imported) -> None:
    _, papers, printed = imported
    two_titles = papers["2502.00002"]
    assert two_titles["title"].startswith("Task-Related")  # the published (venue) row's title
    assert two_titles["venue"]["name"] == "ICLR" and two_titles["authors"] == ["Carl Chen"]
    assert "choose: 2502.00002: title: 'Task-Related" in printed
    assert "choose: 2501.00001: title: awesome-list's 'Alpha: Pruning Tokens by Attention'" in printed


def test_placeholder_arxiv_id_merges_into_the_real_one(imported) -> None:
    _, papers, printed = imported
    assert "2512.99999" not in papers
    epsilon = papers["2603.00005"]
    assert epsilon["venue"]["name"] == "ICLR" and epsilon["method"] == "Epsilon"
    assert epsilon["links"]["code"] == "https://github.com/e/epsilon"
    assert "merge: 2512.99999 has the title of 2603.00005" in printed


def test_second_list_tags(imported) -> None:
    _, papers, printed = imported
    zeta = papers["2507.00006"]
    assert zeta["method"] == "Zeta" and zeta["venue"]["year"] == 2025  # ICCV: odd years only
    assert "infer: 2507.00006: venue ICCV gives no year; using 2025" in printed
    eta = papers["Eta: Vision Transformer Tokens"]
    assert eta["venue"] == {"name": "NeurIPS", "year": 2022, "track": "main", "presentation": None}
    assert eta["arxiv"] is None and eta["links"]["paper"] == "https://openreview.net/pdf?id=abc"
    assert eta["architecture"] == ["vision-transformer"] and eta["id"] == "anonymous2022eta"


def test_running_again_changes_nothing(imported, capsys) -> None:
    root, _, _ = imported
    before = snapshot(root)
    assert main(["--sources", str(SOURCES), "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "imported 0 new papers" in out and "keep: 12 papers already in the catalog" in out
    assert snapshot(root) == before


def test_hand_curated_fields_survive_a_reimport(imported, capsys) -> None:
    root, papers, _ = imported
    path = root / "papers" / f"{papers['2501.00001']['id']}.yaml"
    curated = {
        **papers["2501.00001"],
        "stage": ["llm"],
        "submechanisms": ["llm-attention"],
        "reproductions": ["fastv"],
        "notes": "Checked against the official code.",
        "doi": "10.1109/CVPR.2025.00001",
        "mechanisms": ["similarity", "attention", "query"],
        "method": "ALPHA",
        "kind": "model",
        "links": {**papers["2501.00001"]["links"], "project": "https://alpha.example.org"},
    }
    path.write_text(dump_paper(curated), encoding="utf-8")
    assert main(["--sources", str(SOURCES), "--root", str(root)]) == 0
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == curated


def test_the_two_new_lists_become_structured_fields(imported) -> None:
    _, papers, printed = imported
    iota = papers["2509.00008"]
    assert iota["venue"] == {"name": "NeurIPS", "year": 2025, "track": "workshop", "presentation": None}
    assert iota["architecture"] == ["vision-transformer"]
    mu = papers["2110.00010"]
    assert mu["authors"] == ["Dmitrii Marin", "Jen-Hao Rick Chang"]
    assert mu["venue"]["name"] == "WACV" and mu["cost"] == "training-free"
    nu = papers["2401.00011"]
    assert nu["modalities"] == ["video"] and nu["mechanisms"] == ["attention"]
    assert nu["venue"] == {"name": "EMNLP", "year": 2024, "track": "findings", "presentation": None}
    assert nu["authors"] == ["Ana Álvarez", "Bo Li"] and nu["cost"] == "training-based"
    xi = papers["2406.00012"]  # the arXiv id of a DataCite DOI link
    assert xi["venue"]["name"] == "Interspeech" and xi["architecture"] == ["audio-transformer"]
    lam = papers["Lambda: Visual Token Pruning Without a Venue"]
    assert lam["venue"] is None and lam["links"]["paper"] == "https://aclanthology.org/2026.acl-long.1.pdf"
    assert papers["2604.00007"]["links"]["code"] == "https://github.com/t/theta"
    assert papers["2501.00001"]["venue"]["name"] == "CVPR"  # the survey's list wins over the others
    assert not any("Agent Operating System" in title for title in papers)  # no paper link: a project


def test_excluded_papers_are_never_imported_and_each_decision_is_printed(imported) -> None:
    _, papers, printed = imported
    assert "2602.00009" not in papers and "Guiding Token-Sparse Diffusion Models" not in papers
    assert "exclude: '2602.00009': text-only: prompt compression" in printed
    assert "exclude: 'Guiding Token-Sparse Diffusion Models': generation model (diffusion)" in printed
    assert "add: " in printed


def test_a_failed_import_writes_nothing(catalog: Path, monkeypatch) -> None:
    for path in (catalog / "papers").glob("*.yaml"):
        path.unlink()
    calls = []

    def fail_on_the_third(source, target):
        calls.append(target)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(source, target)

    real = tools.catalog.os.replace
    monkeypatch.setattr(tools.catalog.os, "replace", fail_on_the_third)
    with pytest.raises(OSError, match="disk full"):
        main(["--sources", str(SOURCES), "--root", str(catalog)])
    assert list((catalog / "papers").iterdir()) == []  # neither papers nor staged temporary files


@pytest.mark.parametrize(
    ("listed", "same"),
    [
        ("HybridToken-VLM: Hybrid Token Compression for Vision-Language Models", True),  # name added
        ("Frequency-Modulated Visual Restoration for Matryoshka Large", True),  # cut short
        ("Hybrid Token Compression", False),  # too short to identify a paper on its own
        ("Hybrid Token Compression for Vision Transformers", False),
    ],
)
def test_a_list_row_is_recognised_by_its_title_variants(listed: str, same: bool) -> None:
    from tools.importer import Index
    from tools.sources import Row

    catalog = Index([
        {"title": "Hybrid Token Compression for Vision-Language Models", "arxiv": None, "links": {}},
        {"title": "Frequency-Modulated Visual Restoration for Matryoshka Large Multimodal Models",
         "arxiv": None, "links": {}},
    ])
    row = Row(source="list.md:1", title=listed, paper_url="https://example.org/x.pdf", arxiv=None)
    paper = {"title": listed, "arxiv": None, "links": {"paper": row.paper_url}}
    assert (catalog.find(paper, [row]) is not None) == same
