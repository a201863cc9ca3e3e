"""The importer on small hand-written copies of the two lists' formats (tests/catalog/fixtures/
sources): badges to structured fields, merging, deterministic choices it prints, placeholder ids,
re-runs that change nothing, and hand-curated fields kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from catalog_fixtures import snapshot

from tools.catalog import dump_paper
from tools.importer import main
from tools.validate import validate

SOURCES = Path(__file__).parent / "fixtures" / "sources"


@pytest.fixture
def imported(catalog: Path, capsys) -> tuple[Path, dict[str, dict], str]:
    """The fixture lists imported into an empty catalog: (root, papers by arXiv id, printout)."""
    for path in (catalog / "papers").glob("*.yaml"):
        path.unlink()
    assert main(["--sources", str(SOURCES), "--root", str(catalog)]) == 0
    printed = capsys.readouterr().out
    papers = {}
    for path in (catalog / "papers").glob("*.yaml"):
        paper = yaml.safe_load(path.read_text(encoding="utf-8"))
        papers[paper["arxiv"] or paper["title"]] = paper
    return catalog, papers, printed


def test_every_paper_once_and_the_catalog_validates(imported) -> None:
    root, papers, printed = imported
    assert sorted(papers) == [
        "2406.00003", "2501.00001", "2502.00002", "2507.00006", "2603.00005",
        "Eta: Vision Transformer Tokens",
    ]
    assert validate(root, registry=False).errors == []
    assert "imported 6 papers" in printed


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
    assert "0 written, 6 unchanged" in capsys.readouterr().out
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
