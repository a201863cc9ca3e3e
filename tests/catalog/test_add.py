"""`python -m tools add`, offline: a recorded arXiv Atom answer (hand-written in the API's format)
and BibTeX entries. It refuses to overwrite a file and reports duplicates."""

from __future__ import annotations

from pathlib import Path

import yaml
from catalog_fixtures import snapshot

from tools.add import main
from tools.validate import validate

ATOM = Path(__file__).parent / "fixtures" / "arxiv_2507.20198.atom"
BIBTEX = """
@inproceedings{bolya2023token,
  title     = {{Token Merging}: Your {ViT} But Faster},
  author    = {Bolya, Daniel and Fu, Cheng-Yang and Dai, Xiaoliang},
  booktitle = {The Eleventh International Conference on Learning Representations},
  year      = {2023},
  doi       = {10.48550/arXiv.2210.09461},
  url       = {https://openreview.net/forum?id=JroZRaRw7Eu},
}
"""


def left_to_fill(catalog: Path) -> dict[str, set[str]]:
    """File name -> the fields the validator reports (errors and warnings), per file."""
    fields: dict[str, set[str]] = {}
    report = validate(catalog, registry=False)
    for line in report.errors + report.warnings:
        location, field = line.split(": ")[:2]
        fields.setdefault(Path(location.rsplit(":", 1)[0]).name, set()).add(field)
    return fields


def test_from_a_recorded_arxiv_answer(catalog: Path, capsys) -> None:
    args = ["2507.20198", "--atom", str(ATOM), "--root", str(catalog), "--modality", "video",
            "--modality", "audio", "--mechanism", "query", "--code", "https://github.com/cokeshao/x"]
    assert main(args) == 0
    path = catalog / "papers" / "shao2025when.yaml"
    paper = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert paper["title"] == (
        "When Tokens Talk Too Much: A Survey of Multimodal Long-Context Token Compression "
        "across Images, Videos, and Audios"
    )
    assert paper["authors"] == ["Kele Shao", "Keda Tao", "Kejia Zhang", "Huan Wang"]
    assert (paper["year"], paper["month"], paper["arxiv"], paper["venue"]) == (2025, 7, "2507.20198", None)
    assert paper["links"]["paper"] == "https://arxiv.org/abs/2507.20198"
    assert paper["modalities"] == ["video", "audio"] and paper["mechanisms"] == ["query"]
    assert paper["checked"]["sources"] == ["https://arxiv.org/abs/2507.20198"]  # read from arXiv
    # what the contributor still fills in from the paper, and the validator asks for
    assert left_to_fill(catalog) == {"shao2025when.yaml": {"cost", "stage"}}
    assert "wrote" in capsys.readouterr().out


def test_an_arxiv_id_the_catalog_has_is_refused(catalog: Path, capsys) -> None:
    atom = ATOM.read_text().replace("2507.20198", "2403.06764")
    saved = catalog.parent / "answer.xml"
    saved.write_text(atom)
    before = snapshot(catalog)
    assert main(["arXiv:2403.06764v2", "--atom", str(saved), "--root", str(catalog)]) == 1
    err = capsys.readouterr().err
    assert "duplicate" in err and "chen2024image.yaml" in err and "2403.06764" in err
    assert snapshot(catalog) == before


def test_an_existing_file_is_never_overwritten(catalog: Path, capsys) -> None:
    assert main(["2507.20198", "--atom", str(ATOM), "--root", str(catalog), "--id", "chen2024image"]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert yaml.safe_load((catalog / "papers" / "chen2024image.yaml").read_text())["arxiv"] == "2403.06764"


def test_a_bad_arxiv_id_is_refused(catalog: Path, capsys) -> None:
    assert main(["24036764", "--root", str(catalog)]) == 1
    assert "not an arXiv id" in capsys.readouterr().err


def test_from_bibtex_offline(catalog: Path, capsys) -> None:
    (catalog / "papers" / "bolya2022token.yaml").unlink()
    source = catalog.parent / "paper.bib"
    source.write_text(BIBTEX)
    assert main(["--bibtex", str(source), "--root", str(catalog), "--mechanism", "similarity"]) == 0
    paper = yaml.safe_load((catalog / "papers" / "bolya2022token.yaml").read_text(encoding="utf-8"))
    assert paper["title"] == "Token Merging: Your ViT But Faster"
    assert paper["authors"] == ["Daniel Bolya", "Cheng-Yang Fu", "Xiaoliang Dai"]
    assert paper["venue"] == {"name": "ICLR", "year": 2023, "track": "main", "presentation": None}
    assert paper["arxiv"] == "2210.09461" and paper["year"] == 2022  # the id's year: 2210 -> 2022
    assert paper["doi"] == "10.48550/arXiv.2210.09461"
    # a BibTeX entry is not a source page: the check record is the contributor's to write
    assert left_to_fill(catalog) == {"bolya2022token.yaml": {"cost", "stage", "checked"}}
    assert [line for line in validate(catalog, registry=False).errors if "checked" not in line] == []


def test_bibtex_latex_accents_are_stored_as_unicode(catalog: Path, capsys) -> None:
    source = catalog.parent / "accents.bib"
    source.write_text(
        r"""@article{muller2026uber,
  title = {{\"U}ber Caf{\'e} Tokens for Vision-Language Models},
  author = {M{\"u}ller, Anna and Sch\"{o}n, Bj{\o}rn},
  journal = {arXiv preprint arXiv:2611.54321},
  year = {2026}
}
""",
        encoding="utf-8",
    )
    assert main(["--bibtex", str(source), "--root", str(catalog), "--mechanism", "similarity"]) == 0
    written = next(p for p in (catalog / "papers").glob("*.yaml") if "2611.54321" in p.read_text(encoding="utf-8"))
    paper = yaml.safe_load(written.read_text(encoding="utf-8"))
    assert paper["authors"] == ["Anna Müller", "Bjørn Schön"]
    assert paper["title"] == "Über Café Tokens for Vision-Language Models"


def test_bibtex_duplicate_title_is_refused(catalog: Path, capsys) -> None:
    source = catalog.parent / "paper.bib"
    source.write_text(BIBTEX.replace("doi       = {10.48550/arXiv.2210.09461},\n", ""))
    before = snapshot(catalog)
    assert main(["--bibtex", str(source), "--root", str(catalog)]) == 1
    assert "bolya2022token.yaml" in capsys.readouterr().err
    assert snapshot(catalog) == before


def test_bibtex_without_an_entry_is_refused(catalog: Path, capsys) -> None:
    source = catalog.parent / "paper.bib"
    source.write_text("this is not bibtex")
    assert main(["--bibtex", str(source), "--root", str(catalog)]) == 1
    assert "no BibTeX entry" in capsys.readouterr().err


def test_an_arxiv_id_the_catalog_has_is_refused_before_the_network(catalog: Path, capsys, monkeypatch) -> None:
    import tools.add

    def network(arxiv: str) -> str:
        raise AssertionError("asked the arXiv API for a paper the catalog has")

    monkeypatch.setattr(tools.add, "fetch_atom", network)
    before = snapshot(catalog)
    assert main(["2403.06764", "--root", str(catalog)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: duplicate: ") and "chen2024image.yaml already has this paper" in err
    assert snapshot(catalog) == before


def test_offline_names_the_cause_and_the_offline_options(catalog: Path, capsys, monkeypatch) -> None:
    import urllib.error
    import urllib.request

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    before = snapshot(catalog)
    assert main(["2611.01234", "--root", str(catalog)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: could not reach the arXiv API ([Errno -2] Name or service not known)")
    assert "--bibtex FILE" in err and "--atom FILE" in err and "id_list=2611.01234" in err
    assert snapshot(catalog) == before


def test_the_contributing_example_is_not_in_the_catalog() -> None:
    """Followed literally, the guide's example must scaffold a file, not stop at a duplicate."""
    import re

    from tools.catalog import CATALOG, ROOT, load_papers

    guide = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    examples = re.findall(r"python -m tools add (\d{4}\.\d{4,5})", guide)
    assert examples
    assert not set(examples) & {paper.get("arxiv") for paper in load_papers(CATALOG)}
