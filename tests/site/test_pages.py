"""The page generator's pieces, without building the site: links, escaping, markers, docstrings,
vocabularies, and the usage snippet of every method, executed."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import yaml

import reproductions
from tools import site_pages
from tools.site_pages import SiteData, docstring_parts, fence, fill, href, page_dir, text, url

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture_paper(**fields: object) -> dict:
    paper = {
        "id": "doe2024tokens", "title": "Tokens", "method": "T", "authors": ["Jane Doe"],
        "year": 2024, "month": 3, "venue": None, "arxiv": "2403.00001", "doi": None,
        "links": {"paper": None, "code": None, "project": None, "model": None, "dataset": None},
        "modalities": ["image"], "mechanisms": ["attention"], "submechanisms": [],
        "cost": "training-free", "architecture": ["mllm"], "stage": [], "tasks": [],
        "kind": "method", "reproductions": [], "notes": None,
    }
    return {**paper, **fields}


@pytest.fixture
def hostile() -> dict:
    """The site build's hostile paper, made worse by what only the validator stops (a code fence,
    a javascript: link): the generator must neutralise those too."""
    paper = yaml.safe_load((FIXTURES / "papers" / "zzhostile2025script.yaml").read_text(encoding="utf-8"))
    paper["title"] += " ``` fenced"
    paper["links"]["paper"] = "javascript:alert('paper')"
    return paper


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ("index.md", "papers/index.md", "papers/"),
        ("papers/index.md", "papers/x.md", "x/"),
        ("papers/x.md", "papers/index.md", "../"),
        ("papers/x.md", "index.md", "../../"),
        ("papers/x.md", "reproductions/tome.md", "../../reproductions/tome/"),
        ("papers/index.md", "catalog.bib", "../catalog.bib"),
        ("index.md", "catalog.json", "catalog.json"),
        ("index.md", "index.md", "./"),
    ],
)
def test_href_follows_directory_urls(source: str, target: str, expected: str) -> None:
    assert href(source, target) == expected


def test_page_dir() -> None:
    assert page_dir("index.md") == ""
    assert page_dir("papers/index.md") == "papers"
    assert page_dir("papers/chen2024image.md") == "papers/chen2024image"


def test_url_only_links_http() -> None:
    assert url("https://github.com/a/b") == "https://github.com/a/b"
    assert url('https://x.org/?a=1&b="2"') == "https://x.org/?a=1&amp;b=&quot;2&quot;"
    for bad in ("javascript:alert(1)", " JavaScript:alert(1)", "data:text/html,hi", "//evil.org", None, 3):
        assert url(bad) is None


def test_text_escapes_markup() -> None:
    assert text("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)&gt;"
    assert text('a "b" & c') == "a &quot;b&quot; &amp; c"


def test_front_matter_title_is_escaped_yaml() -> None:
    matter = site_pages.front_matter('</title><script>alert("x")</script>')
    title = yaml.safe_load(matter.strip().strip("-"))["title"]
    assert title == "&lt;/title&gt;&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"


def test_fence_cannot_be_closed_by_its_content() -> None:
    block = fence("a ``` b ```` c", "bibtex")
    assert block.startswith("````` bibtex\n") and block.endswith("\n`````\n")


def test_fill_replaces_markers_and_reports_missing_ones() -> None:
    assert fill("a <!-- site:x --> b", {"x": "X"}) == "a X b"
    with pytest.raises(ValueError, match="no <!-- site:y --> marker"):
        fill("a <!-- site:x -->", {"x": "X", "y": "Y"})
    with pytest.raises(ValueError, match=r"no generated content for markers \['z'\]"):
        fill("<!-- site:x --> <!-- site:z -->", {"x": "X"})


def test_bad_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="not a URL slug"):
        SiteData(papers=[fixture_paper(id="../../etc")], taxonomy={})


def test_vocabulary_reads_the_taxonomy_forms() -> None:
    taxonomy = {
        "modalities": {"image": "Images."},
        "mechanisms": {"similarity": {"description": "Redundancy.", "submechanisms": {"merging": "ToMe."}}},
        "cost": [{"name": "training-free", "description": "As is."}, "both"],
    }
    assert site_pages.vocabulary(taxonomy, "modalities") == {"image": "Images."}
    assert site_pages.vocabulary(taxonomy, "mechanisms") == {"similarity": "Redundancy."}
    assert site_pages.vocabulary(taxonomy, "cost") == {"training-free": "As is.", "both": ""}
    assert site_pages.submechanisms(taxonomy, "similarity") == {"merging": "ToMe."}


class Documented:
    """Merge the most similar tokens.

    More detail here.

    Differences from the official code:

    - Order is positional.
    - Ties go to the lowest index.
    """


class Underlined:
    """Pool tokens.

    Differences from the official code
    ----------------------------------
    None.
    """


class Undocumented:
    """Keep random tokens."""


def test_docstring_parts() -> None:
    body, differences = docstring_parts(Documented)
    assert body == "Merge the most similar tokens.\n\nMore detail here."
    assert differences == "- Order is positional.\n- Ties go to the lowest index."
    assert docstring_parts(Underlined) == ("Pool tokens.", "None.")
    assert docstring_parts(Undocumented) == ("Keep random tokens.", None)


def test_related_share_a_modality_and_a_mechanism() -> None:
    base = fixture_paper(id="a2024x", modalities=["image", "video"], mechanisms=["similarity"])
    both = fixture_paper(id="b2024x", modalities=["image", "video"], mechanisms=["similarity"])
    one = fixture_paper(id="c2025x", year=2025, modalities=["video"], mechanisms=["similarity", "query"])
    other = fixture_paper(id="d2024x", modalities=["image"], mechanisms=["attention"])
    audio = fixture_paper(id="e2024x", modalities=["audio"], mechanisms=["similarity"])
    related = site_pages.related(base, [base, both, one, other, audio])
    assert [p["id"] for p in related] == ["b2024x", "c2025x"]


def test_newest_prefers_uncommitted_then_latest_commit() -> None:
    papers = [fixture_paper(id="old2020x", year=2020), fixture_paper(id="new2021x", year=2021),
              fixture_paper(id="draft2019x", year=2019)]
    data = SiteData(papers=papers, taxonomy={}, added={"old2020x": "2026-01-02", "new2021x": "2025-01-01"})
    assert [p["id"] for p in site_pages.newest(data)] == ["draft2019x", "old2020x", "new2021x"]


def test_paper_page_escapes_every_field(hostile: dict) -> None:
    data = SiteData(papers=[hostile, fixture_paper()], taxonomy={})
    page = site_pages.paper_markdown(hostile, data)
    # the BibTeX block is code (shown as text); the plain-text citation before it is checked too
    outside_code = re.sub(r"(`{3,}) bibtex\n.*?\n\1\n", "", page, flags=re.DOTALL)
    assert "@" not in outside_code.split("## Cite")[1]  # the block was found and removed
    for raw in ("<script>", "<img", "<svg", "<b ", "<iframe", "javascript:alert('paper')"):
        assert raw not in outside_code, raw
    assert text(hostile["title"]) in page
    row = site_pages.paper_row(hostile, data, "papers/index.md")
    assert "<script>" not in row and "<img" not in row and 'href="javascript' not in row


def test_papers_rows_carry_the_facets() -> None:
    paper = fixture_paper(
        modalities=["image", "video"], mechanisms=[], links={"code": "https://github.com/a/b"},
        venue={"name": "CVPR", "year": 2025, "track": "main", "presentation": None},
    )
    data = SiteData(papers=[paper], taxonomy={})
    row = site_pages.paper_row(paper, data, "papers/index.md")
    for attribute in ('data-modality="image|video"', 'data-mechanism="unclassified"', 'data-venue="CVPR"',
                      'data-year="2024"', 'data-code="yes"', 'data-repro="no"', 'data-id="doe2024tokens"'):
        assert attribute in row, attribute


@pytest.mark.parametrize("name", sorted(reproductions.methods()))
def test_usage_snippet_runs(name: str) -> None:
    """The snippet on each method page, taken from the generated page, runs and compresses."""
    cls = reproductions.methods()[name]
    data = SiteData(papers=[], taxonomy={}, methods=reproductions.methods())
    page = site_pages.method_markdown(cls, data, None, None, {})
    snippet = re.search(r"``` python\n(.*?)\n```", page, re.DOTALL).group(1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(snippet, f"<{name} usage>", "exec"), {})
    before, after = printed.getvalue().splitlines()[0].split(" -> ")
    assert before.startswith("torch.Size(") and after.startswith("torch.Size(")


def test_include_markdown_drops_the_title_and_relinks_repository_files() -> None:
    source = "# Contributing\n\nSee [the schema](catalog/schema.json) and [docs](https://x.org) [up](#add).\n\n```sh\n[not](a/link)\n```\n"
    with_repo = site_pages.include_markdown(source, "https://github.com/o/r")
    assert not with_repo.startswith("# Contributing")
    assert "[the schema](https://github.com/o/r/blob/main/catalog/schema.json)" in with_repo
    assert "[docs](https://x.org)" in with_repo and "[up](#add)" in with_repo
    assert "[not](a/link)" in with_repo
    assert "the schema (`catalog/schema.json`)" in site_pages.include_markdown(source, None)


def test_every_broken_example_gets_a_validator_message() -> None:
    from tools.site import BREAKS, validator_examples

    examples = validator_examples(Path(__file__).resolve().parents[2] / "catalog" / "taxonomy.yaml")
    assert [problem for problem, _, _ in examples] == [problem for problem, _, _ in BREAKS]
    for problem, lines, messages in examples:
        assert lines.strip(), problem
        assert messages, f"the validator said nothing about: {problem}"
        assert all(m.startswith("catalog/papers/doe2025") and ": found " in m for m in messages), messages


def test_venue_names_with_spaces_stay_one_facet_value() -> None:
    paper = fixture_paper(venue={"name": "ACM MM", "year": 2025, "track": "main", "presentation": None})
    data = SiteData(papers=[paper], taxonomy={})
    assert 'data-venue="ACM MM"' in site_pages.paper_row(paper, data, "papers/index.md")
    assert ("ACM MM", "ACM MM") in site_pages.facet_options(data)["venue"]


def test_paper_page_links_its_catalog_file_in_the_repository() -> None:
    paper = fixture_paper()
    linked = site_pages.paper_markdown(paper, SiteData(papers=[paper], taxonomy={}, repo_url="https://github.com/o/r"))
    assert 'href="https://github.com/o/r/blob/main/catalog/papers/doe2024tokens.yaml"' in linked
    plain = site_pages.paper_markdown(paper, SiteData(papers=[paper], taxonomy={}))
    shown = re.sub(r"<[^>]+>", "", plain.split('class="paper-file"', 1)[1].split("</td>")[0])
    assert shown.endswith("catalog/papers/doe2024tokens.yaml") and "blob/main" not in plain


def test_unknown_category_values_are_text_not_links() -> None:
    paper = fixture_paper(modalities=['"><script>alert(1)</script>'], mechanisms=["similarity"])
    data = SiteData(papers=[paper], taxonomy={})
    row = site_pages.paper_row(paper, data, "papers/index.md")
    assert "<script>" not in row and "&lt;script&gt;" in row
    assert 'href="../taxonomy/mechanisms/similarity/"' in row


def test_a_paper_shows_the_methods_that_name_it() -> None:
    tome = reproductions.methods()["tome"]
    paper = fixture_paper(id=tome.paper, reproductions=[])
    data = SiteData(papers=[paper], taxonomy={}, methods={"tome": tome})
    assert site_pages.reproductions_of(paper, data) == ["tome"]
    assert 'data-repro="yes"' in site_pages.paper_row(paper, data, "papers/index.md")
    assert 'href="../../reproductions/tome/"' in site_pages.paper_markdown(paper, data)


def test_a_paper_page_shows_where_and_when_it_was_checked(hostile: dict) -> None:
    paper = fixture_paper(checked={"date": "2026-11-30", "sources": ["https://arxiv.org/abs/2403.00001"]})
    page = site_pages.paper_markdown(paper, SiteData(papers=[paper], taxonomy={}))
    assert "## Checked" in page and "on 2026-11-30" in page
    assert 'href="https://arxiv.org/abs/2403.00001"' in page
    shown = site_pages.paper_markdown(hostile, SiteData(papers=[hostile], taxonomy={}))
    checked = shown.split("## Checked")[1].split("## ")[0]
    assert "<script>" not in checked and "&lt;script&gt;" in checked


def _sweep_row(method: str, budget: int | None, score: float, kept: float, ttft: float, gain: float | None):
    return {"model": "llava", "task": "pope", "method": method, "budget": budget, "params": {},
            "score": score, "kept_tokens": kept, "ttft_s": ttft, "gain": gain}


def test_benchmarks_page_shows_the_newest_accuracy_sweep_and_its_plot() -> None:
    """The newest committed `python -m tools eval` table: a plot of accuracy against TTFT and
    kept tokens drawn from it at build time, and one row per run with its gain over the best
    control; without a sweep the page says how to make one."""
    from tools.site import accuracy_plots

    rows = [_sweep_row("none", None, 0.86, 576, 0.90, 0.0), _sweep_row("random", 64, 0.78, 64, 0.20, 0.0),
            _sweep_row("pool", 64, 0.80, 64, 0.20, 0.0), _sweep_row("visionzip", 64, 0.84, 64, 0.21, 0.04)]
    data = SiteData(papers=[], taxonomy={}, methods=reproductions.methods(),
                    accuracy=[{"name": "older", "rows": []}, {"name": "llava-pope", "rows": rows}])
    plots = accuracy_plots(data)
    assert list(plots) == ["benchmarks/accuracy-llava-pope.png"]
    assert plots["benchmarks/accuracy-llava-pope.png"].startswith(b"\x89PNG")
    page = site_pages.benchmarks_page(data, list(plots))
    section = page.split("## Accuracy")[1]
    assert "llava-pope" in section and 'src="accuracy-llava-pope.png"' in section
    assert section.count("<tr>") == 1 + len(rows)
    assert "+0.040" in section and "visionzip/" in section  # the gain, and a link to the method
    empty = site_pages.benchmarks_page(SiteData(papers=[], taxonomy={}), [])
    assert "No accuracy sweep is committed yet" in empty.split("## Accuracy")[1]
