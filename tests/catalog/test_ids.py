"""`python -m tools ids` and `stats`: ids that stood in for missing authors become real ones,
old URLs keep working through `redirects.yaml`, and nothing is half-written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from catalog_fixtures import SECOND, paper, snapshot

import tools.catalog
from tools import ids, stats
from tools.catalog import dump_paper
from tools.site_pages import redirect_page
from tools.validate import validate


def write(root: Path, entry: dict) -> None:
    (root / "papers" / f"{entry['id']}.yaml").write_text(dump_paper(entry), encoding="utf-8")


@pytest.fixture
def placeholder(catalog: Path) -> Path:
    """The fixture catalog, with ToMe filed under the id its authorless import gave it."""
    (catalog / "papers" / "bolya2022token.yaml").unlink()
    write(catalog, {**SECOND, "id": "anonymous2022token"})
    return catalog


def test_a_placeholder_id_becomes_the_first_authors_and_redirects(placeholder: Path, capsys) -> None:
    assert ids.main(["--root", str(placeholder)]) == 0
    assert "rename: anonymous2022token -> bolya2022token" in capsys.readouterr().out
    assert not (placeholder / "papers" / "anonymous2022token.yaml").exists()
    moved = yaml.safe_load((placeholder / "papers" / "bolya2022token.yaml").read_text(encoding="utf-8"))
    assert moved == {**SECOND, "id": "bolya2022token"}
    assert ids.load_redirects(placeholder) == {"anonymous2022token": "bolya2022token"}
    assert validate(placeholder, registry=False).errors == []
    before = snapshot(placeholder)
    assert ids.main(["--root", str(placeholder)]) == 0  # a second run has nothing to do
    assert snapshot(placeholder) == before


def test_a_second_rename_keeps_the_first_redirect_pointing_at_the_paper(placeholder: Path) -> None:
    (placeholder / "redirects.yaml").write_text("anonymous2021token: anonymous2022token\n", encoding="utf-8")
    assert ids.main(["--root", str(placeholder)]) == 0
    assert ids.load_redirects(placeholder) == {
        "anonymous2021token": "bolya2022token",
        "anonymous2022token": "bolya2022token",
    }


def test_team_and_stale_ids_are_renamed_but_not_one_a_reproduction_names(catalog: Path) -> None:
    links = {**paper()["links"], "paper": "https://arxiv.org/abs/2505.00001"}
    write(catalog, paper(id="team2025seed", title="Seed Model", arxiv="2505.00001", links=links,
                         authors=["Dong Guo"], year=2025, month=5, venue=None))
    write(catalog, paper(id="chen2024imageb", title="Image Tokens, Again", arxiv="2403.00002",
                         links={**links, "paper": "https://arxiv.org/abs/2403.00002"}))  # suffix: fine
    write(catalog, paper(id="lee2023old", title="Old Title", arxiv="2404.00003", reproductions=["tome"],
                         links={**links, "paper": "https://arxiv.org/abs/2404.00003"}))
    assert ids.renames(tools.catalog.load_papers(catalog)) == {"team2025seed": "guo2025seed"}


def test_redirect_pages_send_old_urls_to_the_paper() -> None:
    page = redirect_page("../bolya2022token/")
    assert 'http-equiv="refresh" content="0; url=../bolya2022token/"' in page
    assert '<link rel="canonical" href="../bolya2022token/">' in page


def test_a_failed_rename_changes_no_file(placeholder: Path, monkeypatch) -> None:
    before = snapshot(placeholder)
    real, calls = Path.unlink, []

    def fail_once(path: Path, missing_ok: bool = False) -> None:
        """The old file cannot be removed; the rollback's own removals work."""
        calls.append(path)
        if len(calls) == 1:
            raise OSError("read-only")
        real(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", fail_once)
    with pytest.raises(OSError, match="read-only"):
        ids.main(["--root", str(placeholder)])
    monkeypatch.undo()
    leftovers = [path.name for path in (placeholder / "papers").iterdir() if path.name.endswith(".tmp")]
    assert snapshot(placeholder) == before and leftovers == []


def test_validate_refuses_a_redirect_to_nowhere_and_an_old_id_in_use(catalog: Path) -> None:
    (catalog / "redirects.yaml").write_text("old2020gone: nobody2020here\nchen2024image: bolya2022token\n")
    errors = validate(catalog, registry=False).errors
    assert any("redirects.yaml:1: old2020gone" in line and "the id of a paper" in line for line in errors)
    assert any("redirects.yaml:2: chen2024image" in line and "only ids no paper uses" in line for line in errors)


def test_validate_refuses_a_paper_both_in_the_catalog_and_excluded(catalog: Path) -> None:
    (catalog / "excluded.yaml").write_text(
        '- title: "Token Merging: Your ViT But Faster"\n  arxiv: "2210.09461"\n  reason: "a test"\n'
        '- title: "Something else"\n  arxiv: "not-an-id"\n  reason: ""\n'
    )
    errors = validate(catalog, registry=False).errors
    assert any("excluded.yaml:1: title" in line and "bolya2022token.yaml" in line for line in errors)
    assert any("excluded.yaml:5: arxiv" in line for line in errors)
    assert any("excluded.yaml:6: reason" in line for line in errors)


def test_stats_counts_what_the_catalog_issue_measures(catalog: Path, capsys) -> None:
    write(catalog, paper(id="anonymous2025x", title="X", authors=[], stage=[], checked=None,
                         arxiv="2501.00009", links={**paper()["links"], "paper": "https://arxiv.org/abs/2501.00009"}))
    assert stats.main(["--root", str(catalog), "--json"]) == 0
    import json

    figures = json.loads(capsys.readouterr().out)
    assert figures["papers"] == 3 and figures["without authors"] == 1 and figures["anonymous ids"] == 1
    assert figures["method papers without a stage"] == 1 and figures["without a checked record"] == 1
    assert figures["method papers without a mechanism"] == 0
