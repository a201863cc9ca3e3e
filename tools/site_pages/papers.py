"""The papers table (`papers/index.md`), the smaller tables of taxonomy pages, and the compact
lists of papers (home page, related papers)."""

from __future__ import annotations

from collections.abc import Iterable

from ..catalog import MECHANISMS, MODALITIES, Paper, venue_label
from .data import (
    ID_PATTERN,
    UNCLASSIFIED,
    SiteData,
    code_url,
    mechanisms_of,
    reproductions_of,
    venue_name,
    vocabulary,
    when,
)
from .markup import (
    UNSEARCHED,
    front_matter,
    href,
    link,
    method_page,
    paper_page,
    taxonomy_page,
    text,
)

#: joins a row's values of one facet in its data attribute (venue names hold spaces)
FACET_SEPARATOR = "|"
FACETS: tuple[tuple[str, str], ...] = (
    ("modality", "Modality"),
    ("mechanism", "Mechanism"),
    ("cost", "Cost"),
    ("venue", "Venue"),
    ("year", "Year"),
    ("code", "Has code"),
    ("repro", "Has reproduction"),
)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("title", "Title"),
    ("method", "Method"),
    ("year", "Year"),
    ("venue", "Venue"),
    ("modality", "Modalities"),
    ("mechanism", "Mechanisms"),
    ("cost", "Cost"),
    ("code", "Code"),
    ("repro", "Reproduction"),
)


def facet_values(paper: Paper, data: SiteData) -> dict[str, list[str]]:
    """The values a paper has for every facet of the papers table (what the filters match)."""
    return {
        "modality": list(paper.get("modalities") or []),
        "mechanism": mechanisms_of(paper),
        "cost": [paper["cost"]] if paper.get("cost") else [],
        "venue": [venue_name(paper)],
        "year": [str(paper["year"])],
        "code": ["yes" if code_url(paper) else "no"],
        "repro": ["yes" if reproductions_of(paper, data) else "no"],
    }


def facet_options(data: SiteData) -> dict[str, list[tuple[str, str]]]:
    """(value, label) choices of each facet filter, in display order."""
    venues = sorted({venue_name(p) for p in data.papers}, key=lambda v: (v == "arXiv", v.lower()))
    costs = list(vocabulary(data.taxonomy, "cost")) or sorted(
        {p["cost"] for p in data.papers if p.get("cost")}
    )
    years = sorted({str(p["year"]) for p in data.papers}, reverse=True)
    return {
        "modality": [(m, m) for m in modality_values(data)],
        "mechanism": [(m, m) for m in mechanism_values(data)] + [(UNCLASSIFIED, UNCLASSIFIED)],
        "cost": [(c, c) for c in costs],
        "venue": [(v, v) for v in venues],
        "year": [(y, y) for y in years],
        "code": [("yes", "yes"), ("no", "no")],
        "repro": [("yes", "yes"), ("no", "no")],
    }


def modality_values(data: SiteData) -> list[str]:
    """The modalities that have a taxonomy page: taxonomy.yaml's, else the survey's three."""
    return _slugs(list(vocabulary(data.taxonomy, "modalities")) or list(MODALITIES))


def mechanism_values(data: SiteData) -> list[str]:
    """The mechanisms that have a taxonomy page: taxonomy.yaml's, else the survey's four."""
    return _slugs(list(vocabulary(data.taxonomy, "mechanisms")) or list(MECHANISMS))


def _slugs(values: list[str]) -> list[str]:
    for value in values:
        if not ID_PATTERN.match(value):
            raise ValueError(f"taxonomy value {value!r} is not a URL slug: use lowercase letters, digits and -")
    return values


def search_text(paper: Paper) -> str:
    """What the free-text filter searches: title, method, authors, venue, tasks, notes."""
    parts = [
        paper.get("title"),
        paper.get("method"),
        " ".join(paper.get("authors") or []),
        venue_label(paper),
        paper.get("arxiv"),
        " ".join(paper.get("tasks") or []),
        " ".join(paper.get("submechanisms") or []),
        paper.get("notes"),
    ]
    return " ".join(str(part) for part in parts if part).lower()


def paper_row(paper: Paper, data: SiteData, source: str) -> str:
    """One `<tr>` of the papers table, carrying its facet values as data attributes."""
    facets = facet_values(paper, data)
    attributes = " ".join(
        f'data-{name}="{text(FACET_SEPARATOR.join(values))}"' for name, values in facets.items()
    )
    code = code_url(paper)
    reproductions = ", ".join(
        link(href(source, method_page(name)), f"<code>{text(name)}</code>")
        for name in reproductions_of(paper, data)
    )
    # A cell sorts by its text unless it carries a data-sort key (the code and reproduction
    # columns sort by whether there is one); fewer attributes keep the page small.
    cells = [
        (None, link(href(source, paper_page(paper["id"])), text(paper["title"]))),
        (None, text(paper.get("method") or "")),
        (None, text(when(paper))),
        (None, text(venue_label(paper))),
        (None, tags(source, "modalities", facets["modality"], data)),
        (None, tags(source, "mechanisms", facets["mechanism"], data)),
        (None, text(paper.get("cost") or "")),
        ("1" if code else "0", link(code, "code", external=True) if code else ""),
        ("1" if reproductions else "0", reproductions),
    ]
    tds = "".join(f'<td data-sort="{key}">{body}</td>' if key else f"<td>{body}</td>" for key, body in cells)
    return f'<tr data-id="{paper["id"]}" {attributes} data-text="{text(search_text(paper))}">{tds}</tr>'


def tags(source: str, kind: str, values: list[str], data: SiteData) -> str:
    """Category values, each linked to its taxonomy page where it has one (others as text)."""
    pages = set(modality_values(data) if kind == "modalities" else mechanism_values(data))
    return " ".join(
        link(href(source, taxonomy_page(kind, value)), text(value)) if value in pages else text(value)
        for value in values
    )


def papers_table(papers: Iterable[Paper], data: SiteData, source: str, interactive: bool) -> str:
    """The table of `papers`; with `interactive`, the markup `papers.js` wires filters to."""
    head = "".join(
        f'<th data-column="{key}" aria-sort="none"><button type="button" data-sort-key="{key}">{label}</button></th>'
        if interactive
        else f"<th>{label}</th>"
        for key, label in COLUMNS
    )
    rows = "\n".join(paper_row(paper, data, source) for paper in papers)
    return (
        '<div class="papers-table-wrap">\n'
        f'<table data-table="papers"{" data-papers-table" if interactive else ""} {UNSEARCHED}>\n'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>\n</div>\n"
    )


def papers_index(data: SiteData) -> str:
    """`papers/index.md`: every paper in one filterable, sortable table."""
    source = "papers/index.md"
    selects = []
    for facet, label in FACETS:
        options = "".join(
            f'<option value="{text(value)}">{text(shown)}</option>'
            for value, shown in facet_options(data)[facet]
        )
        selects.append(
            f'<label class="papers-facet">{label}<select data-facet="{facet}" name="{facet}">'
            f'<option value="">any</option>{options}</select></label>'
        )
    order = sorted(data.papers, key=lambda p: (-p["year"], -(p.get("month") or 0), p["id"]))
    downloads = (
        f'<p class="papers-downloads">Download the catalog: '
        f'{link(href(source, "catalog.bib"), "catalog.bib")} (BibTeX) · '
        f'{link(href(source, "catalog.json"), "catalog.json")} (JSON)</p>'
    )
    controls = (
        '<div class="papers-filters" data-papers-filters>\n'
        '<label class="papers-search">Search<input type="search" name="q" data-filter-text '
        'placeholder="title, method, author, note…" autocomplete="off"></label>\n'
        + "\n".join(selects)
        + '\n<button type="button" class="md-button" data-filter-reset>Reset</button>\n</div>\n'
    )
    count = (
        f'<p class="papers-count" data-papers-count aria-live="polite">{len(data.papers)} papers</p>\n'
        '<p class="papers-notice" data-papers-notice role="status" hidden></p>\n'
        '<p class="papers-empty" data-papers-empty hidden>No papers match these filters. '
        '<button type="button" class="md-button" data-filter-reset>Show all papers</button></p>\n'
    )
    return (
        front_matter("Papers", hide=["navigation", "toc"])
        + "# Papers\n\n"
        + f"{downloads}\n\n"
        + '<div class="papers" data-papers>\n'
        + controls
        + count
        + papers_table(order, data, source, interactive=True)
        + "</div>\n"
    )


def papers_list(papers: Iterable[Paper], source: str) -> str:
    """A compact list of papers: linked title, then method, venue, date and classification."""
    items = []
    for p in papers:
        meta = [p.get("method") or "", venue_label(p), when(p),
                "/".join(p.get("modalities") or []), "/".join(p.get("mechanisms") or [])]
        shown = " · ".join(text(part) for part in meta if part)
        items.append(
            f"<li>{link(href(source, paper_page(p['id'])), text(p['title']))} "
            f'<span class="paper-meta">{shown}</span></li>'
        )
    return f'<ul class="papers-list" {UNSEARCHED}>\n' + "\n".join(items) + "\n</ul>\n"
