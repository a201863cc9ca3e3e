"""The validator: one `file:line: field: found ...; expected ...` line per problem, exit 1 on
errors, and no file changed, for every kind of bad input a contributor can send."""

from __future__ import annotations

import datetime
import re
import time
from pathlib import Path

import pytest
import yaml
from catalog_fixtures import VALID, paper, snapshot

from tools.catalog import CATALOG, CatalogError, dump_paper, load_papers
from tools.validate import main, validate

LINE = re.compile(r"^(?P<file>\S+\.yaml):(?P<line>\d+): (?P<field>[\w.]+): found .+; expected .+$")


def run(root: Path, capsys) -> tuple[int, list[str]]:
    """Validate `root` without the registry; exit status and the error lines."""
    status = main(["--root", str(root), "--no-registry", "--quiet"])
    out = capsys.readouterr().out.splitlines()
    return status, out


def write(root: Path, name: str, text: str | bytes) -> Path:
    path = root / "papers" / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_valid_fixture_passes(catalog: Path, capsys) -> None:
    status, lines = run(catalog, capsys)
    assert (status, lines) == (0, [])


def one_error(catalog: Path, capsys, name: str) -> re.Match:
    """Validate, assert exit 1, exactly one well-formed error line about `name`, nothing changed."""
    before = snapshot(catalog)
    status, lines = run(catalog, capsys)
    assert status == 1, lines
    assert len(lines) == 1, lines
    match = LINE.match(lines[0])
    assert match, lines[0]
    assert match["file"].endswith(name)
    assert snapshot(catalog) == before
    return match


def replace_line(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


def test_malformed_yaml(catalog: Path, capsys) -> None:
    text = replace_line(dump_paper(VALID), "year: 2024\n", "year: [2024\n")
    write(catalog, "chen2024image.yaml", text)
    match = one_error(catalog, capsys, "chen2024image.yaml")
    assert match["field"] == "file" and "malformed YAML" in match.group(0)
    assert int(match["line"]) >= 6


def test_unknown_key(catalog: Path, capsys) -> None:
    text = dump_paper(VALID) + "keywords: [pruning]\n"
    write(catalog, "chen2024image.yaml", text)
    match = one_error(catalog, capsys, "chen2024image.yaml")
    assert match["field"] == "keywords"
    assert int(match["line"]) == text.splitlines().index("keywords: [pruning]") + 1


def test_unknown_nested_key(catalog: Path, capsys) -> None:
    text = replace_line(dump_paper(VALID), "presentation: oral}", "presentation: oral, city: Milan}")
    write(catalog, "chen2024image.yaml", text)
    assert one_error(catalog, capsys, "chen2024image.yaml")["field"] == "venue.city"


def test_wrong_enum_value(catalog: Path, capsys) -> None:
    write(catalog, "chen2024image.yaml", dump_paper(paper(modalities=["imag"])))
    match = one_error(catalog, capsys, "chen2024image.yaml")
    assert match["field"] == "modalities"
    assert '"imag"' in match.group(0) and "image, video, audio" in match.group(0)
    assert int(match["line"]) == 12


def test_wrong_venue_enum_reports_the_venue_line(catalog: Path, capsys) -> None:
    venue = {"name": "CPVR", "year": 2024, "track": "main", "presentation": None}
    write(catalog, "chen2024image.yaml", dump_paper(paper(venue=venue)))
    match = one_error(catalog, capsys, "chen2024image.yaml")
    assert (match["field"], match["line"]) == ("venue.name", "8")


def test_bad_url(catalog: Path, capsys) -> None:
    links = {**VALID["links"], "code": "github.com/pkunlp-icler/FastV"}
    write(catalog, "chen2024image.yaml", dump_paper(paper(links=links)))
    match = one_error(catalog, capsys, "chen2024image.yaml")
    assert match["field"] == "links.code" and "URL" in match.group(0)


def test_bad_arxiv_id(catalog: Path, capsys) -> None:
    write(catalog, "chen2024image.yaml", dump_paper(paper(arxiv="arXiv:2403.06764v2")))
    match = one_error(catalog, capsys, "chen2024image.yaml")
    assert (match["field"], match["line"]) == ("arxiv", "9")
    assert "2403.06764" in match.group(0)


def test_duplicate_arxiv_id(catalog: Path, capsys) -> None:
    copy = paper(id="chen2024imageb", title="Another title entirely", links={**VALID["links"], "code": None})
    write(catalog, "chen2024imageb.yaml", dump_paper(copy))
    match = one_error(catalog, capsys, "chen2024imageb.yaml")
    assert match["field"] == "arxiv" and "chen2024image.yaml" in match.group(0)


def test_duplicate_normalised_title(catalog: Path, capsys) -> None:
    title = VALID["title"].upper().replace(":", " -")
    copy = paper(id="chen2024imageb", title=title, arxiv=None, links={**VALID["links"], "code": None})
    write(catalog, "chen2024imageb.yaml", dump_paper(copy))
    assert one_error(catalog, capsys, "chen2024imageb.yaml")["field"] == "title"


def test_duplicate_doi(catalog: Path, capsys) -> None:
    for name, entry in (("chen2024image", VALID), ("bolya2022token", None)):
        path = catalog / "papers" / f"{name}.yaml"
        data = yaml.safe_load(path.read_text()) if entry is None else dict(entry)
        data["doi"] = "10.1007/978-3-031-73004-7_2"
        path.write_text(dump_paper(data), encoding="utf-8")
    assert one_error(catalog, capsys, "chen2024image.yaml")["field"] == "doi"


def test_duplicate_code_url_is_a_warning(catalog: Path, capsys) -> None:
    data = yaml.safe_load((catalog / "papers" / "bolya2022token.yaml").read_text())
    data["links"]["code"] = "https://github.com/pkunlp-icler/FastV/"
    write(catalog, "bolya2022token.yaml", dump_paper(data))
    report = validate(catalog, registry=False)
    assert report.errors == []
    assert any("links.code" in line and "chen2024image.yaml" in line for line in report.warnings)


def test_file_name_is_not_the_id(catalog: Path, capsys) -> None:
    (catalog / "papers" / "chen2024image.yaml").rename(catalog / "papers" / "fastv.yaml")
    match = one_error(catalog, capsys, "fastv.yaml")
    assert (match["field"], match["line"]) == ("id", "2")


def test_empty_file(catalog: Path, capsys) -> None:
    write(catalog, "empty2024file.yaml", "")
    match = one_error(catalog, capsys, "empty2024file.yaml")
    assert (match["field"], match["line"]) == ("file", "1")


def test_non_utf8_file(catalog: Path, capsys) -> None:
    text = dump_paper(paper(authors=["José Müller"])).encode("latin-1")
    write(catalog, "chen2024image.yaml", text)
    match = one_error(catalog, capsys, "chen2024image.yaml")
    assert (match["field"], match["line"]) == ("file", "5")
    assert "UTF-8" in match.group(0)


def test_duplicate_key(catalog: Path, capsys) -> None:
    write(catalog, "chen2024image.yaml", dump_paper(VALID) + "year: 2025\n")
    match = one_error(catalog, capsys, "chen2024image.yaml")
    assert (match["field"], match["line"]) == ("year", "23")


def test_submechanism_without_its_mechanism(catalog: Path, capsys) -> None:
    write(catalog, "chen2024image.yaml", dump_paper(paper(submechanisms=["merging"])))
    match = one_error(catalog, capsys, "chen2024image.yaml")
    assert match["field"] == "submechanisms" and '"similarity"' in match.group(0)


def test_missing_field(catalog: Path, capsys) -> None:
    data = paper()
    text = "\n".join(line for line in dump_paper(data).splitlines() if not line.startswith("kind:"))
    write(catalog, "chen2024image.yaml", text + "\n")
    assert one_error(catalog, capsys, "chen2024image.yaml")["field"] == "kind"


def test_missing_field_is_reported_at_the_first_key_not_the_comment(catalog: Path, capsys) -> None:
    text = "\n".join(line for line in dump_paper(paper()).splitlines() if not line.startswith("kind:"))
    write(catalog, "chen2024image.yaml", text + "\n")
    match = one_error(catalog, capsys, "chen2024image.yaml")
    assert int(match["line"]) == 2 and text.splitlines()[1].startswith("id:")


def test_month_out_of_range_names_the_range(catalog: Path, capsys) -> None:
    write(catalog, "chen2024image.yaml", dump_paper(paper(month=13)))
    match = one_error(catalog, capsys, "chen2024image.yaml")
    assert match["field"] == "month" and match.group(0).endswith("found 13; expected a value from 1 to 12")


def test_tab_indentation_is_named(catalog: Path, capsys) -> None:
    text = replace_line(dump_paper(VALID), "authors: [Liang Chen, Haozhe Zhao]\n", "authors:\n\t- Liang Chen\n")
    write(catalog, "chen2024image.yaml", text)
    match = one_error(catalog, capsys, "chen2024image.yaml")
    assert match["field"] == "file" and "a tab character" in match.group(0)
    assert int(match["line"]) == text.splitlines().index("\t- Liang Chen") + 1


def test_unquoted_arxiv_id_says_to_quote_it(catalog: Path, capsys) -> None:
    """YAML reads 2403.06764 as a float, which would also lose a trailing zero (2403.10100)."""
    text = replace_line(dump_paper(VALID), 'arxiv: "2403.06764"', "arxiv: 2403.06764")
    write(catalog, "chen2024image.yaml", text)
    match = one_error(catalog, capsys, "chen2024image.yaml")
    assert match["field"] == "arxiv" and 'expected the id in quotes: arxiv: "2403.06764"' in match.group(0)


def test_byte_order_mark_is_refused(catalog: Path, capsys) -> None:
    write(catalog, "chen2024image.yaml", "\ufeff".encode() + dump_paper(VALID).encode())
    match = one_error(catalog, capsys, "chen2024image.yaml")
    assert (match["field"], match["line"]) == ("file", "1") and "byte-order mark" in match.group(0)


def test_windows_line_endings_are_a_warning(catalog: Path, capsys) -> None:
    write(catalog, "chen2024image.yaml", dump_paper(VALID).replace("\n", "\r\n").encode())
    report = validate(catalog, registry=False)
    assert report.errors == []
    assert [line for line in report.warnings if "CRLF" in line] == [
        f"{catalog}/papers/chen2024image.yaml:1: file: found Windows line endings (CRLF); "
        "expected LF line endings, as every generated file has (git config core.autocrlf input)"
    ]


def test_a_cut_short_title_without_arxiv_is_a_warning(catalog: Path, capsys) -> None:
    """A list that cut a title short and gave no arXiv id: probably the same paper twice."""
    short = paper(id="chen2024an", title="An Image is Worth 1/2 Tokens After Layer 2: Plug-and-Play", arxiv=None,
                  links={**VALID["links"], "paper": "https://example.org/fastv"})
    write(catalog, "chen2024an.yaml", dump_paper(short))
    report = validate(catalog, registry=False)
    assert report.errors == [], report.errors
    warned = [line for line in report.warnings if "begins the same way" in line]
    assert len(warned) == 1 and warned[0].startswith(f"{catalog}/papers/chen2024an.yaml:3: title:")
    assert "chen2024image.yaml" in warned[0]


def test_several_errors_in_one_file_each_get_a_line(catalog: Path, capsys) -> None:
    write(catalog, "chen2024image.yaml", dump_paper(paper(month=13, cost="free", kind="paper")))
    status, lines = run(catalog, capsys)
    assert status == 1
    assert sorted(LINE.match(line)["field"] for line in lines) == ["cost", "kind", "month"]


def test_warnings_are_printed_for_the_files_changed_since_main(catalog: Path, capsys) -> None:
    """A newcomer sees their own file's warnings, and a count for the rest of the catalog."""
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(catalog), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    write(catalog, "old2023paper.yaml", dump_paper(paper(id="old2023paper", title="An Old Paper Without A Cost",
                                                         arxiv=None, cost=None, year=2023, venue=None,
                                                         links={**VALID["links"], "paper": "https://example.org/old",
                                                                "code": None})))
    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-qm", "base")
    git("switch", "-qc", "new-paper")
    write(catalog, "new2024paper.yaml", dump_paper(paper(id="new2024paper", title="A New Paper Without A Cost",
                                                         arxiv=None, cost=None, venue=None,
                                                         links={**VALID["links"], "paper": "https://example.org/new",
                                                                "code": None})))
    assert main(["--root", str(catalog), "--no-registry", "--all-warnings"]) == 0
    every = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    theirs = [line for line in every if "new2024paper.yaml" in line]
    assert theirs and len(theirs) < len(every)
    assert main(["--root", str(catalog), "--no-registry"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("warning:")] == theirs
    assert out[-1].startswith(f"({len(every) - len(theirs)} more warnings in files unchanged since ")
    assert out[-1].endswith("--all-warnings prints them)")


def test_only_method_papers_must_be_classified(catalog: Path, capsys) -> None:
    """A survey or a benchmark has no mechanism, stage or cost of its own: no error, no warning."""
    write(catalog, "chen2024image.yaml", dump_paper(paper(kind="survey", mechanisms=[], submechanisms=[], stage=[], cost=None)))
    assert main(["--root", str(catalog), "--no-registry"]) == 0
    assert "chen2024image" not in capsys.readouterr().out


@pytest.mark.parametrize("exact", [False, True], ids=["read-from-source", "imported"])
def test_registry_links_are_checked_both_ways_against_the_real_registry(catalog: Path, exact: bool) -> None:
    from reproductions.registry import methods

    write(catalog, "chen2024image.yaml", dump_paper(paper(reproductions=["no_such_method"])))
    report = validate(catalog, registry=True, exact_registry=exact)
    unknown = [line for line in report.errors if "found \"no_such_method\"; expected a registered" in line]
    assert len(unknown) == 1 and unknown[0].startswith(f"{catalog}/papers/chen2024image.yaml:20: reproductions:")
    ours = {"chen2024image", "bolya2022token"}
    for name, cls in methods().items():
        if cls.paper is None:
            continue
        if cls.paper in ours:  # the paper exists here but does not list the method
            assert any(f"expected {name!r} listed" in line for line in report.errors), name
        else:  # the method names a paper this small catalog lacks: reported at the class
            assert any(
                re.match(rf"^reproductions/\S+\.py:\d+: paper: found \"{cls.paper}\"; .*'{name}'", line)
                for line in report.errors
            ), name


def test_the_registry_read_from_source_equals_the_imported_registry() -> None:
    from tools.registry_scan import imported, scan

    def essentials(registry):
        return {name: (m.cls, m.paper, m.file) for name, m in registry.items()}

    assert essentials(scan()) == essentials(imported())


def test_the_committed_catalog_is_valid() -> None:
    start = time.perf_counter()
    report = validate(CATALOG, registry=True)
    assert report.errors == [], "\n".join(report.errors)
    assert time.perf_counter() - start < 30  # the speed target itself is measured, not tested


@pytest.mark.parametrize("name", ["notes.yml", "x.json"])
def test_wrong_extension(catalog: Path, capsys, name: str) -> None:
    write(catalog, name, "id: x\n")
    status, lines = run(catalog, capsys)
    assert status == 1 and len(lines) == 1 and lines[0].startswith(str(catalog / "papers" / name))


# --- the content rules (tools/rules.py): each refuses with file:line and changes nothing ---


@pytest.mark.parametrize(
    ("changes", "field", "expected"),
    [
        ({"venue": {"name": "EMNLP", "year": 2024, "track": "main", "presentation": None},
          "arxiv": "2507.01234", "year": 2025, "month": 7,
          "links": {**VALID["links"], "paper": "https://arxiv.org/abs/2507.01234"}}, "venue.year", "2025 or later"),
        ({"authors": []}, "authors", "the full author list"),
        ({"authors": ["DeepMind Team"]}, "authors", "people, not a team"),
        ({"authors": ["Liang Chen", "NVIDIA"]}, "authors", "people, not a team"),
        ({"title": "Two\nlines"}, "title", "one line of plain text"),
        ({"notes": "before ``` after"}, "notes", "one line of plain text"),
        ({"method": "Fast\x07V"}, "method", "one line of plain text"),
        ({"notes": "x" * 601}, "notes", "at most 600"),
        ({"checked": None}, "checked", "type object"),
        ({"checked": {"date": "2026-11-30", "sources": []}}, "checked.sources", "should be non-empty"),
        ({"checked": {"date": "30/11/2026", "sources": ["https://arxiv.org/abs/2403.06764"]}}, "checked.date", "date"),
    ],
    ids=["venue-before-arxiv", "no-authors", "team", "organisation", "newline", "fence", "control",
         "long-notes", "no-check", "no-sources", "bad-date"],
)
def test_content_rules(catalog: Path, capsys, changes: dict, field: str, expected: str) -> None:
    write(catalog, "chen2024image.yaml", dump_paper(paper(**changes)))
    match = one_error(catalog, capsys, "chen2024image.yaml")
    assert match["field"] == field
    assert expected in match.group(0), match.group(0)


def test_a_missing_checked_record_says_what_to_write(catalog: Path, capsys) -> None:
    text = dump_paper(VALID)
    write(catalog, "chen2024image.yaml", text[: text.index("checked:")])
    match = one_error(catalog, capsys, "chen2024image.yaml")
    assert match["field"] == "checked" and "sources: [" in match.group(0)


@pytest.mark.parametrize("value", ["2026-06-01", "2026.5", '"2026"'])
def test_a_year_that_is_not_an_integer_is_one_clear_error_everywhere(catalog: Path, capsys, value: str) -> None:
    text = replace_line(dump_paper(VALID), "year: 2024\n", f"year: {value}\n")
    write(catalog, "chen2024image.yaml", text)
    match = one_error(catalog, capsys, "chen2024image.yaml")
    assert match["field"] == "year" and "an integer, like year: 2026" in match.group(0)
    from tools import bib, export_json, tables

    for command in (bib.main, export_json.main):  # the generators refuse, naming the same line
        with pytest.raises(CatalogError, match=r"chen2024image\.yaml:\d+: year"):
            command(["--root", str(catalog), "--out", str(catalog / "out")])
    assert not (catalog / "out").exists()
    with pytest.raises(CatalogError):
        tables.render("", load_papers(catalog))


def test_the_dispatcher_prints_the_catalog_errors_and_writes_nothing(catalog: Path, capsys) -> None:
    from tools.__main__ import main as tools_main

    write(catalog, "chen2024image.yaml", replace_line(dump_paper(VALID), "month: 3\n", "month: 2024-03-01\n"))
    before = snapshot(catalog)
    assert tools_main(["bib", "--root", str(catalog), "--out", str(catalog / "catalog.bib")]) == 1
    err = capsys.readouterr().err
    assert "chen2024image.yaml:7: month: found 2024-03-01 (date)" in err and "nothing was written" in err
    assert snapshot(catalog) == before


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"title": "Pruning Video Tokens", "modalities": ["image"]}, "'video' among them"),
        ({"title": "Fast Speech Models", "modalities": ["image"]}, "'audio' among them"),
        ({"mechanisms": [], "submechanisms": []}, "mechanisms: found [] on a method paper; expected at least one"),
        ({"stage": []}, "stage: found [] on a method paper; expected at least one stage"),
        ({"cost": None}, "cost: found None on a method paper; expected training-free, training-based or both"),
    ],
    ids=["title-video", "title-speech", "no-mechanism", "no-stage", "no-cost"],
)
def test_content_warnings(catalog: Path, changes: dict, expected: str) -> None:
    write(catalog, "chen2024image.yaml", dump_paper(paper(**changes)))
    report = validate(catalog, registry=False)
    assert report.errors == []
    assert any("chen2024image.yaml" in line and expected in line for line in report.warnings), report.warnings


def test_an_arxiv_only_check_goes_stale_after_six_months(catalog: Path) -> None:
    write(catalog, "chen2024image.yaml", dump_paper(paper(venue=None)))
    fresh = validate(catalog, registry=False, today=datetime.date(2027, 5, 1))
    stale = validate(catalog, registry=False, today=datetime.date(2027, 6, 30))
    assert not [line for line in fresh.warnings if "checked.date" in line]
    assert [line for line in stale.warnings if "chen2024image.yaml" in line and "checked.date" in line]
    assert stale.errors == []
    write(catalog, "chen2024image.yaml", dump_paper(VALID))  # published: its venue will not change
    published = validate(catalog, registry=False, today=datetime.date(2030, 1, 1))
    assert not [line for line in published.warnings if "chen2024image.yaml" in line and "checked.date" in line]
