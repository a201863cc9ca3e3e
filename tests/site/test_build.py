"""The built site: every page there, no broken internal link, nothing fetched from the internet,
hostile catalog text shown only as text, and the downloads equal to the catalog."""

from __future__ import annotations

import gzip
import html
import json
import re
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import bibtexparser
import pytest

import reproductions
from tools.catalog import load_papers, matrix

Build = Any  # conftest.Build: the built site, its catalog, log and build time


HOSTILE = "zzhostile2025script"


class Page(HTMLParser):
    """One HTML page: its elements with attributes, inline scripts, ids and visible text."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.ids: set[str] = set()
        self.text: list[str] = []
        self._in_script = False
        self.feed(source)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if attributes.get("id"):
            self.ids.add(attributes["id"])
        if tag == "a" and attributes.get("name"):
            self.ids.add(attributes["name"])
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text.append(data)


@cache
def parse(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def html_pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def resolve(site: Path, page: Path, target: str) -> tuple[Path, str] | None:
    """The file an internal link points at and its fragment; None for an external link."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith(("mailto:", "data:")):
        return None
    path = unquote(parts.path)
    if not path:
        return page, parts.fragment
    resolved = (page.parent / path).resolve() if not path.startswith("/") else site / path.lstrip("/")
    if resolved.is_dir() or path.endswith("/"):
        resolved = resolved / "index.html"
    return resolved, parts.fragment


def test_build_is_strict_and_fast(built: Build) -> None:
    assert "WARNING" not in built.log, built.log
    print(f"full site build: {built.seconds:.1f} s")


def test_every_generated_page_exists(built: Build) -> None:
    papers = load_papers(built.catalog)
    for paper in papers:
        assert (built.site / "papers" / paper["id"] / "index.html").is_file(), paper["id"]
    for name in reproductions.methods():
        assert (built.site / "reproductions" / name / "index.html").is_file(), name
    for kind, values in (("modalities", ("image", "video", "audio")),
                         ("mechanisms", ("transformation", "similarity", "attention", "query"))):
        for value in values:
            assert (built.site / "taxonomy" / kind / value / "index.html").is_file()
    for page in ("index.html", "papers/index.html", "benchmarks/index.html", "contributing/index.html"):
        assert (built.site / page).is_file(), page


def test_no_broken_internal_links(built: Build) -> None:
    broken = []
    for page in html_pages(built.site):
        for tag, attributes in parse(page).elements:
            for name in ("href", "src"):
                target = attributes.get(name)
                if not target or (tag == "link" and attributes.get("rel") == "canonical"):
                    continue
                found = resolve(built.site, page, target)
                if found is None:
                    continue
                path, fragment = found
                if not path.is_file():
                    broken.append(f"{page.relative_to(built.site)}: {target}")
                elif fragment and path.suffix == ".html" and unquote(fragment) not in parse(path).ids:
                    broken.append(f"{page.relative_to(built.site)}: {target} (no such anchor)")
    assert not broken, "\n".join(broken[:50])


def test_nothing_is_fetched_from_the_internet(built: Build) -> None:
    """Offline viewing: no external script, stylesheet, font, image or frame anywhere."""
    external = re.compile(r"^(https?:)?//", re.IGNORECASE)
    fetched = []
    for page in html_pages(built.site):
        for tag, attributes in parse(page).elements:
            loads = {"script": "src", "img": "src", "iframe": "src", "source": "src", "video": "src"}
            target = attributes.get(loads.get(tag, "")) if tag in loads else None
            if tag == "link" and (attributes.get("rel") or "") in ("stylesheet", "preload", "preconnect", "icon"):
                target = attributes.get("href")
            if target and external.match(target):
                fetched.append(f"{page.relative_to(built.site)}: <{tag}> {target}")
            if attributes.get("data-md-component") == "source":  # queries the GitHub API
                fetched.append(f"{page.relative_to(built.site)}: the repository widget")
    for css in built.site.rglob("*.css"):
        for target in re.findall(r"url\(\s*['\"]?((?:https?:)?//[^'\")]+)", css.read_text(encoding="utf-8")):
            fetched.append(f"{css.relative_to(built.site)}: url({target})")
        assert "fonts.googleapis" not in css.read_text(encoding="utf-8")
    assert not fetched, "\n".join(fetched[:20])


def test_hostile_text_is_only_text(built: Build) -> None:
    """The fixture paper's markup reaches every page only as characters, never as elements."""
    paper = next(p for p in load_papers(built.catalog) if p["id"] == HOSTILE)
    page = parse(built.site / "papers" / HOSTILE / "index.html")
    shown = "".join(page.text)
    assert paper["title"] in shown
    assert paper["notes"] in shown
    assert paper["method"] in shown
    assert paper["authors"][0] in shown
    for path in html_pages(built.site):
        document = parse(path)
        for tag, attributes in document.elements:
            assert tag not in ("iframe", "svg") or "alert" not in str(attributes), (path, tag)
            for name, value in attributes.items():
                assert not (name.startswith("on") and "alert" in (value or "")), (path, tag, name)
                if name in ("href", "src"):
                    assert not (value or "").strip().lower().startswith("javascript:"), (path, tag, value)
        for script in document.scripts:
            assert "alert(" not in script, (path, script[:200])


def test_hostile_title_is_escaped_in_title_element(built: Build) -> None:
    """mkdocs puts page titles into <title> raw; the generator escapes them first."""
    source = (built.site / "papers" / HOSTILE / "index.html").read_text(encoding="utf-8")
    title = re.search(r"<title>(.*?)</title>", source, re.DOTALL).group(1)
    assert "<" not in title and "&lt;script&gt;" in title


def test_downloads_equal_the_catalog(built: Build) -> None:
    papers = load_papers(built.catalog)
    downloaded = json.loads((built.site / "catalog.json").read_text(encoding="utf-8"))
    assert downloaded == {"count": len(papers), "papers": papers}
    library = bibtexparser.parse_string((built.site / "catalog.bib").read_text(encoding="utf-8"))
    assert [entry.key for entry in library.entries] == [paper["id"] for paper in papers]


def test_home_matrix_matches_the_catalog(built: Build) -> None:
    counts = matrix(load_papers(built.catalog))
    home = parse(built.site / "index.html")
    source = (built.site / "index.html").read_text(encoding="utf-8")
    cells = dict(re.findall(r'data-cell="([a-z]+/[a-z]+)">(\d+)</a>', source))
    assert cells, "no matrix on the home page"
    for modality, row in counts.items():
        for mechanism, count in row.items():
            assert int(cells[f"{modality}/{mechanism}"]) == count, (modality, mechanism)
    assert "2507.20198" in "".join(home.text)


def test_paper_page_has_bibtex_and_related(built: Build) -> None:
    papers = load_papers(built.catalog)
    paper = next(p for p in papers if p["id"] == HOSTILE)
    page = parse(built.site / "papers" / HOSTILE / "index.html")
    shown = "".join(page.text)
    assert f"@article{{{HOSTILE}," in shown
    assert "Related papers" in shown
    # cite in plain text too: the authors in order, the title, and where it appeared
    from tools.site_pages import citation

    cited = citation(paper)
    assert cited in shown
    assert cited.startswith(paper["authors"][0]) and paper["title"].rstrip(".") in cited
    # both links are links, with their quotes and markup kept inside the attribute
    hrefs = [a.get("href") for tag, a in page.elements if tag == "a"]
    assert paper["links"]["code"] in hrefs
    assert paper["links"]["paper"] in hrefs


@pytest.mark.parametrize("name", sorted(reproductions.methods()))
def test_method_page_has_its_sections(built: Build, name: str) -> None:
    page = parse(built.site / "reproductions" / name / "index.html")
    shown = "".join(page.text)
    for section in ("Parameters", "Usage", "Differences from the official code"):
        assert section in shown, (name, section)


def test_benchmarks_show_the_latest_run(built: Build) -> None:
    from tools.site import load_results
    from tools.site_pages import latest_run

    run = latest_run(load_results(built.results))
    page = parse(built.site / "benchmarks" / "index.html")
    shown = "".join(page.text)
    assert run["file"] in shown
    images = [a["src"] for tag, a in page.elements if tag == "img"]
    assert "latest-speedup.png" in images and "latest-overhead.png" in images
    for row in run["summary"]["rows"]:
        assert f"{row['measured_speedup']:.2f}×" in shown, row["method"]
        assert row.get("family", "") in shown  # the families' rows say whose they are
        if row.get("ceiling") is not None:
            assert f"{row['ceiling']:.3f}" in shown
    method = next(r["method"] for r in run["results"] if r["method"] != "none")  # "none": uncompressed
    method_page = "".join(parse(built.site / "reproductions" / method / "index.html").text)
    assert "Benchmarks" in method_page and "Prefill speed-up" in method_page


def test_contributing_page_has_the_guide_schema_and_validator_output(built: Build) -> None:
    shown = "".join(parse(built.site / "contributing" / "index.html").text)
    guide = (Path(__file__).resolve().parents[2] / "CONTRIBUTING.md").read_text(encoding="utf-8")
    second_heading = next(line for line in guide.splitlines() if line.startswith("## "))
    assert second_heading[3:].strip() in shown
    assert "modalities" in shown and "submechanisms" in shown
    assert 'venu: found unknown key "venu"' in shown


#: the issue's budget for the search index every visitor downloads, at 600+ papers
INDEX_BUDGET_KB = 300
#: sections of a paper or method page that the index leaves out whole: lists of other papers,
#: BibTeX, links and sources, prose notes (the papers table's text filter searches those),
#: code, parameter and result tables
UNINDEXED_SECTIONS = ("#related-papers", "#checked", "#links", "#bibtex", "#notes", "#reproduction",
                      "#parameters", "#usage", "#on-a-photograph", "#benchmarks",
                      "#differences-from-the-official-code")


def test_the_search_index_holds_each_paper_once(built: Build) -> None:
    """Each paper is indexed once, by what names it (title, method, authors, venue, arXiv id,
    catalog id), on its own page; lists of other papers, BibTeX, links, notes and tables stay
    out, so the index every visitor downloads stays within the issue's budget."""
    path = built.site / "search" / "search_index.json"
    docs = json.loads(path.read_text(encoding="utf-8"))["docs"]
    texts = {doc["location"]: doc["text"] for doc in docs}
    papers = load_papers(built.catalog)
    assert all(f"papers/{paper['id']}/" in texts for paper in papers)
    for location, body in texts.items():
        if location.startswith("papers/"):
            assert "@inproceedings{" not in body and "@article{" not in body, location
        assert not location.endswith(UNINDEXED_SECTIONS), location
    one = next(p for p in papers if p["checked"]["sources"])
    assert not any(one["checked"]["sources"][0] in body for body in texts.values())
    divprune = texts["papers/alvar2025divprune/"]
    for word in ("DivPrune", "Saeed Ranjbar Alvar", "CVPR", "2503.02175", "alvar2025divprune"):
        assert word in divprune, word
    size = path.stat().st_size / 1024
    print(f"search index: {size:.0f} KB for {len(papers)} papers "
          f"({len(gzip.compress(path.read_bytes())) / 1024:.0f} KB gzip-compressed)")
    assert size <= INDEX_BUDGET_KB


def test_the_build_ships_no_unused_lunr_packs_or_source_maps(built: Build) -> None:
    """Search is English only, so the worker imports no lunr pack (tools/site_hooks.py); source
    maps are fetched only by developer tools, and no file points at a removed one."""
    assets = built.site / "assets"
    assert sorted(assets.rglob("*.map")) == []
    assert not (assets / "javascripts" / "lunr").exists()
    pointing = [p.name for p in [*assets.rglob("*.js"), *assets.rglob("*.css")] if b"sourceMappingURL" in p.read_bytes()]
    assert pointing == []
    print(f"theme assets shipped: {sum(p.stat().st_size for p in assets.rglob('*') if p.is_file()) / 1024:.0f} KB")


@pytest.mark.parametrize("strict", [True, False], ids=["make-site", "make-serve"])
def test_a_catalog_typo_is_reported_with_its_line_not_a_traceback(
    tmp_path: Path, strict: bool, mkdocs_env: dict[str, str]
) -> None:
    """`modalities: [imag]` once crashed the generator with a bare KeyError, and `mkdocs serve`
    then hung every request. A strict build stops with the validator's file:line message; the
    non-strict build `make serve` runs shows that message on the page instead."""
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    catalog = tmp_path / "catalog"
    shutil.copytree(root / "catalog", catalog)
    broken = catalog / "papers" / "chen2024image.yaml"
    text = broken.read_text(encoding="utf-8")
    assert "modalities: [image, video]" in text
    broken.write_text(text.replace("modalities: [image, video]", "modalities: [imag, video]"), encoding="utf-8")
    line = text[: text.index("modalities: [image, video]")].count("\n") + 1
    site = tmp_path / "public"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict" if strict else "--no-strict", "--site-dir", str(site)],
        cwd=root, env={**mkdocs_env, "SITE_CATALOG": str(catalog)}, capture_output=True, text=True,
        timeout=600,
    )
    log = result.stdout + result.stderr
    message = f'papers/chen2024image.yaml:{line}: modalities: found "imag"'
    assert message in log and "Traceback" not in log and "KeyError" not in log, log[-3000:]
    if strict:
        assert result.returncode != 0
    else:
        assert result.returncode == 0, log[-3000:]
        for page in ("index.html", "papers/index.html"):
            html = (site / page).read_text(encoding="utf-8")
            assert "The catalog has errors" in html and message.replace('"', "&quot;") in html


def readme_support() -> tuple[list[str], dict[str, list[str]]]:
    """The README's support matrix (`python -m tools support`): its families, and each method's
    symbols in that order."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- support:start -->")[1].split("<!-- support:end -->")[0]
    lines = [line.strip("|").split("|") for line in table.splitlines() if line.startswith("| ")]
    families = [cell.strip() for cell in lines[0][1:]]
    return families, {row[0].strip().strip("`"): [c.strip() for c in row[1:]] for row in lines[1:]}


def test_a_reproduced_papers_page_shows_its_support_matrix_row(built: Build) -> None:
    """Each reproduced paper's page says which model families its method runs in: the same
    symbols, family by family, as the README's support matrix."""
    families, rows = readme_support()
    reproduced = [(p["id"], name) for p in load_papers(built.catalog)
                  for name, cls in sorted(reproductions.methods().items()) if cls.paper == p["id"]]
    assert reproduced, "no paper in the catalog has a reproduction"
    for paper_id, name in reproduced:
        source = (built.site / "papers" / paper_id / "index.html").read_text(encoding="utf-8")
        table = re.search(r'<table data-table="support-row">(.*?)</table>', source, re.DOTALL)
        assert table, paper_id
        columns = re.findall(r"<th><code>([^<]+)</code></th>", table.group(1))
        shown = re.findall(r"<tr><th>([^<]+)</th>(.*?)</tr>", table.group(1).split("<tbody>")[1])
        assert [html.unescape(family) for family, _ in shown] == families, paper_id
        column = columns.index(name)
        symbols = [re.findall(r'<td data-support="\w+">(\S+) ', cells)[column] for _, cells in shown]
        assert symbols == rows[name], (paper_id, name)
    print(f"{len(reproduced)} reproduced papers show their support row")


def test_home_counts_equal_the_readme_tables(built: Build) -> None:
    """The home page's counts (papers, modality x mechanism, by year, by venue) equal the README
    tables generated from the same catalog (`python -m tools tables`; tests/catalog keeps the
    committed README equal to a fresh generation)."""
    from tools import tables

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    generated = tables.render(readme, load_papers(built.catalog)).split(tables.START)[1].split(tables.END)[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in generated.splitlines() if line.startswith("| ")]
    matrix_head = next(row for row in rows if row[0] == "modality")
    readme_cells = {
        f"{row[0]}/{mechanism}": row[i]
        for row in rows if row[0] in ("image", "video", "audio")
        for i, mechanism in enumerate(matrix_head[1:-1], 1)
    }
    year_head = next(row for row in rows if row[0] == "year")
    readme_years = dict(zip(year_head[1:], next(row for row in rows if row[0] == "papers")[1:], strict=True))
    venue_at = rows.index(next(row for row in rows if row[0] == "venue"))
    readme_venues = {row[0]: row[1] for row in rows[venue_at + 2:] if len(row) == 2}

    home = (built.site / "index.html").read_text(encoding="utf-8")
    total = re.search(r"<strong>(\d+)</strong> papers</a>", home).group(1)
    cells = dict(re.findall(r'data-cell="([a-z]+/[a-z]+)">(\d+)</a>', home))
    spread = re.findall(r">([^<>]+)</a>&nbsp;\((\d+)\)", home)
    years = {name: n for name, n in spread if name.isdigit()}
    venues = {html.unescape(name): n for name, n in spread if not name.isdigit()}

    assert f"**{total} papers**" in generated
    assert cells == readme_cells
    assert years == {year: n for year, n in readme_years.items() if n != "0"}
    assert venues == readme_venues
    print(f"home = README: {total} papers, {len(cells)} matrix cells, {len(years)} years, {len(venues)} venues")
