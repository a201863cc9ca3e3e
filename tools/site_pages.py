"""The site's generated pages, as pure functions from the catalog and the registry to text.

`tools/site.py` (the mkdocs-gen-files script) loads the data and writes what these functions
return; tests call them directly. Nothing here touches the file system or mkdocs, so a page can be
checked without building the site.

Every value that comes from a paper file (title, authors, notes, venue, links, ...) reaches a page
only through `text` (HTML-escaped, inside a raw HTML block that Markdown leaves alone) or `url`
(escaped, and only http(s) links become links), so a contributor's markup shows as text.
"""

from __future__ import annotations

import dataclasses
import html
import inspect
import json
import posixpath
import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from .bib import bibtex
from .catalog import MECHANISMS, MODALITIES, Paper, by_venue, by_year, matrix, venue_label

#: the label the papers table and the matrix give papers that no mechanism classifies yet
UNCLASSIFIED = "unclassified"
#: ids are URL slugs: lowercase ASCII letters and digits (the id rule), nothing that walks paths
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
#: how many papers the home page lists under "newest additions"
NEWEST = 10
#: how many related papers a paper page lists
RELATED = 12
#: the docstring heading every method uses for its deviations
DIFFERENCES = "Differences from the official code"
#: the stage a method acts at, in words (DESIGN.md)
STAGES = {
    "encoder": "inside the vision / audio encoder, layer by layer",
    "projector": "on the encoder output, before the LLM",
    "llm": "inside the LLM, at a decoder layer during prefill",
    "cache": "on the KV cache during decoding",
}


@dataclass
class SiteData:
    """Everything the generated pages are made from."""

    papers: list[Paper]
    taxonomy: dict[str, Any]
    #: registry name -> method class (`reproductions.methods()`)
    methods: dict[str, type] = field(default_factory=dict)
    #: benchmark result documents (`benchmarks/results/*.json`), each with its file name
    results: list[dict[str, Any]] = field(default_factory=list)
    #: paper id -> ISO date the paper file was first committed (missing: not committed yet)
    added: dict[str, str] = field(default_factory=dict)
    #: repository URL (for links to files outside the docs), or None
    repo_url: str | None = None
    #: old paper id -> current id (`catalog/redirects.yaml`): the old URLs redirect
    redirects: dict[str, str] = field(default_factory=dict)
    #: registry name -> model family -> (kind, reason): the support matrix
    #: (`reproductions.hf.support.matrix()`, computed once per build)
    support: dict[str, dict[str, tuple[str, str | None]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for paper in self.papers:
            if not isinstance(paper.get("id"), str) or not ID_PATTERN.match(paper["id"]):
                raise ValueError(
                    f"paper id {paper.get('id')!r} is not a URL slug: use lowercase ASCII letters "
                    "and digits (run `python -m tools validate`)"
                )

    @property
    def by_id(self) -> dict[str, Paper]:
        return {paper["id"]: paper for paper in self.papers}


# --------------------------------------------------------------------------------------------
# escaping and links


def text(value: Any) -> str:
    """`value` as HTML text: markup in it shows as characters, never as elements."""
    return html.escape("" if value is None else str(value), quote=True)


def url(value: Any) -> str | None:
    """An external link target, escaped; None unless it is http(s) (no `javascript:` links)."""
    if not isinstance(value, str) or not re.match(r"^https?://", value.strip(), re.IGNORECASE):
        return None
    return html.escape(value.strip(), quote=True)


def link(href: str | None, label: str, external: bool = False) -> str:
    """An anchor with an already-escaped `label`; the label alone where there is no target."""
    if not href:
        return label
    rel = ' rel="noopener"' if external else ""
    return f'<a href="{href}"{rel}>{label}</a>'


def page_dir(path: str) -> str:
    """The directory URL mkdocs gives a docs page: `papers/x.md` -> `papers/x`, `index.md` -> ``."""
    stem = path[: -len(".md")]
    if stem == "index" or stem.endswith("/index"):
        stem = stem[: -len("index")].rstrip("/")
    return stem


def href(source: str, target: str, query: str = "") -> str:
    """Relative link from docs page `source` to docs path `target` (a page or a file).

    Raw HTML is not rewritten by mkdocs, so the generator computes the directory URLs itself.
    """
    base = page_dir(source) or "."
    if target.endswith(".md"):
        relative = posixpath.relpath(page_dir(target) or ".", base)
        relative = "./" if relative == "." else relative + "/"
    else:
        relative = posixpath.relpath(target, base)
    return relative + (f"?{query}" if query else "")


def query(**pairs: str) -> str:
    """A URL query string, percent-encoded and HTML-escaped for an attribute."""
    return text(urlencode(pairs))


def paper_page(paper_id: str) -> str:
    return f"papers/{paper_id}.md"


def method_page(name: str) -> str:
    return f"reproductions/{name}.md"


def taxonomy_page(kind: str, value: str) -> str:
    return f"taxonomy/{kind}/{value}.md"


def front_matter(title: str, hide: Iterable[str] = ()) -> str:
    """YAML front matter whose title is escaped: mkdocs puts `page.title` into HTML unescaped."""
    lines = ["---", f"title: {json.dumps(text(title), ensure_ascii=False)}"]
    hidden = list(hide)
    if hidden:
        lines.append("hide:")
        lines += [f"  - {item}" for item in hidden]
    lines.append("---")
    return "\n".join(lines) + "\n\n"


#: the attribute that keeps an element out of the search index (mkdocs-material's search plugin):
#: lists of other papers, BibTeX and link lists repeat what each paper's own page indexes once
UNSEARCHED = "data-search-exclude"


def heading(title: str, searched: bool = True) -> str:
    """A `##` heading; `searched=False` keeps its whole section out of the search index (the
    theme's search skips a section whose heading carries the attribute), so a section whose
    content is all excluded adds no empty entry to the index every visitor downloads."""
    return f"## {title}\n\n" if searched else f'## {title} {{ {UNSEARCHED}="" }}\n\n'


def fence(code: str, language: str) -> str:
    """A fenced code block that `code` cannot close early (the fence outgrows any backtick run)."""
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks} {language}\n{code.rstrip()}\n{ticks}\n"


def fill(template: str, parts: Mapping[str, str]) -> str:
    """Replace each `<!-- site:NAME -->` marker of a hand-written page with generated text."""
    for name, value in parts.items():
        marker = f"<!-- site:{name} -->"
        if marker not in template:
            raise ValueError(f"the page has no {marker} marker: add it where {name} belongs")
        template = template.replace(marker, value)
    left = re.findall(r"<!-- site:([\w-]+) -->", template)
    if left:
        raise ValueError(f"no generated content for markers {left}: remove them or generate them")
    return template


# --------------------------------------------------------------------------------------------
# the vocabularies


def vocabulary(taxonomy: Mapping[str, Any], key: str) -> dict[str, str]:
    """value -> one-line description for one vocabulary of `taxonomy.yaml` (`modalities`, ...)."""
    entries = taxonomy.get(key) or {}
    if isinstance(entries, Mapping):
        items = entries.items()
    else:  # a list of {name/id/value: ..., description: ...} or of bare values
        items = [
            (entry.get("name") or entry.get("id") or entry.get("value"), entry)
            if isinstance(entry, Mapping)
            else (entry, "")
            for entry in entries
        ]
    return {str(name): _description(entry) for name, entry in items}


def submechanisms(taxonomy: Mapping[str, Any], mechanism: str) -> dict[str, str]:
    """The finer sub-mechanisms `taxonomy.yaml` lists under `mechanism`, with descriptions."""
    entry = (taxonomy.get("mechanisms") or {}).get(mechanism)
    nested = entry.get("submechanisms") if isinstance(entry, Mapping) else None
    if nested is None:
        flat = taxonomy.get("submechanisms") or {}
        nested = {
            name: value
            for name, value in (flat.items() if isinstance(flat, Mapping) else [])
            if isinstance(value, Mapping) and value.get("mechanism") == mechanism
        }
    return vocabulary({"values": nested}, "values")


def _description(entry: Any) -> str:
    if isinstance(entry, Mapping):
        return str(entry.get("description") or entry.get("definition") or "")
    return "" if entry is None else str(entry)


# --------------------------------------------------------------------------------------------
# facts of a paper


def mechanisms_of(paper: Paper) -> list[str]:
    return list(paper.get("mechanisms") or []) or [UNCLASSIFIED]


def code_url(paper: Paper) -> str | None:
    return url((paper.get("links") or {}).get("code"))


def reproductions_of(paper: Paper, data: SiteData) -> list[str]:
    """The registered methods of a paper: those its `reproductions:` lists, and those whose
    registry entry names it (the validator keeps the two in agreement; the site shows either)."""
    listed = [name for name in paper.get("reproductions") or [] if name in data.methods]
    named = [name for name, cls in data.methods.items() if getattr(cls, "paper", None) == paper["id"]]
    return list(dict.fromkeys(listed + named))


def when(paper: Paper) -> str:
    """`2024-03` (year and month where the month is known)."""
    month = paper.get("month")
    return f"{paper['year']}-{month:02d}" if isinstance(month, int) else str(paper["year"])


def citation(paper: Paper) -> str:
    """The paper as a plain-text reference: authors, title, where and when it appeared."""
    authors = list(paper.get("authors") or [])
    parts = [authors[0] if len(authors) == 1 else ", ".join(authors[:-1]) + f" and {authors[-1]}"]
    parts.append(paper["title"].rstrip("."))
    if paper.get("venue"):
        parts.append(venue_label(paper))
    elif paper.get("arxiv"):
        parts.append(f"arXiv:{paper['arxiv']}, {paper['year']}")
    return ". ".join(parts) + "."


def venue_name(paper: Paper) -> str:
    return (paper.get("venue") or {}).get("name") or "arXiv"


def newest(data: SiteData, count: int = NEWEST) -> list[Paper]:
    """The papers added last: by first-commit date, uncommitted files first, then newest paper."""
    never = "9999"

    def key(paper: Paper) -> tuple[str, int, int, str]:
        return (data.added.get(paper["id"], never), paper["year"], paper.get("month") or 0, paper["id"])

    return sorted(data.papers, key=key, reverse=True)[:count]


def related(paper: Paper, papers: Iterable[Paper], count: int = RELATED) -> list[Paper]:
    """Papers sharing a modality and a mechanism with `paper`: most shared pairs first, then newest."""
    pairs = {(m, k) for m in paper.get("modalities") or [] for k in paper.get("mechanisms") or []}
    scored = []
    for other in papers:
        if other["id"] == paper["id"]:
            continue
        shared = {(m, k) for m in other.get("modalities") or [] for k in other.get("mechanisms") or []}
        overlap = len(pairs & shared)
        if overlap:
            scored.append((-overlap, -other["year"], -(other.get("month") or 0), other["id"], other))
    return [item[-1] for item in sorted(scored, key=lambda item: item[:-1])[:count]]


# --------------------------------------------------------------------------------------------
# the papers table (papers/index.md) and the smaller tables of taxonomy pages

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
        (None, _tags(source, "modalities", facets["modality"], data)),
        (None, _tags(source, "mechanisms", facets["mechanism"], data)),
        (None, text(paper.get("cost") or "")),
        ("1" if code else "0", link(code, "code", external=True) if code else ""),
        ("1" if reproductions else "0", reproductions),
    ]
    tds = "".join(f'<td data-sort="{key}">{body}</td>' if key else f"<td>{body}</td>" for key, body in cells)
    return f'<tr data-id="{paper["id"]}" {attributes} data-text="{text(search_text(paper))}">{tds}</tr>'


def _tags(source: str, kind: str, values: list[str], data: SiteData) -> str:
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


# --------------------------------------------------------------------------------------------
# one page per paper


def paper_markdown(paper: Paper, data: SiteData) -> str:
    """`papers/<id>.md`: every fact of one paper, its links, BibTeX, reproduction and neighbours."""
    source = paper_page(paper["id"])
    venue = paper.get("venue")
    venue_text = text(venue_label(paper))
    if venue and venue.get("presentation"):
        venue_text += f" ({text(venue['presentation'])})"
    arxiv = paper.get("arxiv")
    doi = paper.get("doi")
    # (label, value, searched): the index keeps what a reader types to find one paper (method,
    # authors, venue, arXiv id, catalog id); dates and category values match hundreds of papers,
    # and the papers table filters and sorts on them
    facts = [
        ("Method", text(paper.get("method") or ""), True),
        ("Authors", text(", ".join(paper.get("authors") or [])), True),
        ("Date", text(when(paper)), False),
        ("Venue", venue_text, True),
        ("arXiv", link(url(f"https://arxiv.org/abs/{arxiv}"), text(arxiv), external=True) if arxiv else "", True),
        ("DOI", link(url(f"https://doi.org/{doi}"), text(doi), external=True) if doi else "", True),
        ("Modalities", _tags(source, "modalities", list(paper.get("modalities") or []), data), False),
        ("Mechanisms", _tags(source, "mechanisms", mechanisms_of(paper), data), False),
        ("Sub-mechanisms", text(", ".join(paper.get("submechanisms") or [])), False),
        ("Cost", text(paper.get("cost") or ""), False),
        ("Architecture", text(_join(paper.get("architecture"))), False),
        ("Stage", text(_join(paper.get("stage"))), False),
        ("Tasks", text(", ".join(paper.get("tasks") or [])), False),
        ("Kind", text(paper.get("kind") or ""), False),
        ("Catalog file", link(
            url(f"{data.repo_url.rstrip('/')}/blob/main/catalog/papers/{paper['id']}.yaml") if data.repo_url else None,
            # a span styled as code: the index keeps <code> tags, and only the id is searched
            f'<span class="paper-file"><span {UNSEARCHED}>catalog/papers/</span>{paper["id"]}'
            f"<span {UNSEARCHED}>.yaml</span></span>",
            external=True), True),
    ]
    # labels stay out of the index; the spaces keep values apart in it ("Saeed", not "AuthorsSaeed")
    rows = "\n".join(
        f'<tr><th {UNSEARCHED}>{name}</th> <td>{value}</td> </tr>' if searched
        else f"<tr {UNSEARCHED}><th>{name}</th> <td>{value}</td> </tr>"
        for name, value, searched in facts
        if value
    )
    method, title = paper.get("method"), paper["title"]
    out = [  # the method name first in the page title: search ranks title words, researchers search "FastV"
        front_matter(f"{method}: {title}" if method and not title.lower().startswith(method.lower()) else title),
        f'<h1 class="paper-title" {UNSEARCHED}>{text(paper["title"])}</h1>\n',  # indexed as the page title
        f'<table data-table="paper-facts">\n{rows}\n</table>\n',
    ]
    links = [
        f'<li>{name}: {link(target, target, external=True)}</li>'
        for name, value in (paper.get("links") or {}).items()
        if (target := url(value))
    ]
    if links:
        out.append(heading("Links", searched=False) + '<ul class="paper-links">\n' + "\n".join(links) + "\n</ul>\n")
    if paper.get("notes"):
        # prose about the paper, found by the papers table's own text filter; the site-wide index
        # keeps what names one paper
        out.append(heading("Notes", searched=False) + f'<p class="paper-notes">{text(paper["notes"])}</p>\n')
    checked = paper.get("checked")
    if checked:
        sources = "\n".join(
            f"<li>{link(target, target, external=True)}</li>"
            for value in checked.get("sources") or []
            if (target := url(value))
        )
        out.append(
            heading("Checked", searched=False) + '<p class="paper-checked">These facts were checked against '
            f'the pages below on {text(str(checked.get("date")))}.</p>\n\n'
            f'<ul class="paper-sources">\n{sources}\n</ul>\n'
        )
    names = reproductions_of(paper, data)
    if names:
        items = "\n".join(
            f"<li>{link(href(source, method_page(name)), f'<code>{text(name)}</code>')}: "
            f"{text(summary(data.methods[name]))}</li>"
            for name in names
        )
        out.append(  # the method page is indexed
            heading("Reproduction", searched=False) + f"<ul>\n{items}\n</ul>\n" + support_rows(names, data, source)
        )
    out.append(
        heading("Cite", searched=False) + f'<p class="paper-citation">{text(citation(paper))}</p>\n\n'
        + fence(bibtex(paper, data.taxonomy), "bibtex")
    )
    neighbours = related(paper, data.papers)
    if neighbours:
        out.append(
            heading("Related papers", searched=False) + "<p>Papers that share a modality and a mechanism "
            "with this one, most shared pairs first.</p>\n\n" + papers_list(neighbours, source)
        )
    return "\n".join(out)


def support_rows(names: list[str], data: SiteData, source: str) -> str:
    """The support matrix's rows of `names`, turned on their side: which model families each
    method runs in through `reproductions.hf.compress`, and why not where it does not."""
    from reproductions.hf.support import SYMBOLS

    rows = [name for name in names if name in data.support]
    if not rows:
        return ""
    families = list(data.support[rows[0]])
    head = "".join(f"<th><code>{text(name)}</code></th>" for name in rows)
    body = "\n".join(
        f"<tr><th>{text(family)}</th>"
        + "".join(
            f'<td data-support="{kind}">{SYMBOLS[kind]} {kind}{": " + text(reason) if reason else ""}</td>'
            for kind, reason in (data.support[name][family] for name in rows)
        )
        + "</tr>"
        for family in families
    )
    matrix_link = link(href(source, "reproductions/support.md"), "support matrix")
    return (
        f"\n<p>Where it runs in transformers, by model family (its row of the {matrix_link}):</p>\n\n"
        f'<table data-table="support-row">\n<thead><tr><th>Model family</th>{head}</tr></thead>\n'
        f"<tbody>\n{body}\n</tbody>\n</table>\n"
    )


def redirect_page(target: str) -> str:
    """A static page that sends an old paper URL to the paper's current page (ids change when a
    paper's real first author replaces a placeholder)."""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<title>Moved</title><link rel="canonical" href="{target}">'
        f'<meta http-equiv="refresh" content="0; url={target}"></head>'
        f'<body><p>This paper moved to <a href="{target}">{target}</a>.</p></body></html>\n'
    )


def _join(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value)
    return "" if value is None else str(value)


# --------------------------------------------------------------------------------------------
# the home page


def matrix_table(data: SiteData, source: str) -> str:
    """Modality x mechanism counts (`tools.catalog.matrix`), each cell a link to that filter."""
    counts = matrix(data.papers)
    columns = [*MECHANISMS, UNCLASSIFIED]
    head = "".join(
        f"<th>{link(href(source, taxonomy_page('mechanisms', c)), text(c)) if c != UNCLASSIFIED else text(c)}</th>"
        for c in columns
    )
    rows = []
    for modality in MODALITIES:
        cells = []
        for mechanism in columns:
            n = counts[modality][mechanism]
            target = href(source, "papers/index.md", query(modality=modality, mechanism=mechanism))
            cells.append(f'<td><a href="{target}" data-cell="{modality}/{mechanism}">{n}</a></td>')
        label = link(href(source, taxonomy_page("modalities", modality)), text(modality))
        rows.append(f"<tr><th>{label}</th>{''.join(cells)}</tr>")
    return (
        '<table data-table="matrix">\n'
        f"<thead><tr><th>modality \\ mechanism</th>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody>\n</table>\n"
    )


def counts_block(data: SiteData, source: str) -> str:
    """Headline counts, each a link to the papers (or methods) it counts."""
    papers = data.papers
    with_code = sum(1 for p in papers if code_url(p))
    reproduced = sum(1 for p in papers if reproductions_of(p, data))
    unclassified = sum(1 for p in papers if not p.get("mechanisms"))
    facts = [
        (len(papers), "papers", href(source, "papers/index.md")),
        (with_code, "with code", href(source, "papers/index.md", query(code="yes"))),
        (len(data.methods), "reproduced methods", href(source, "reproductions/index.md")),
        (reproduced, "papers with a reproduction", href(source, "papers/index.md", query(repro="yes"))),
        (unclassified, "not yet classified by mechanism", href(source, "papers/index.md", query(mechanism=UNCLASSIFIED))),
    ]
    items = "".join(f'<li><a href="{target}"><strong>{n}</strong> {label}</a></li>' for n, label, target in facts)
    return f'<ul class="counts">{items}</ul>\n'


def spread_block(data: SiteData, source: str) -> str:
    """Papers by year and by venue (`tools.catalog.by_year` / `by_venue`), each a filter link."""
    years = " · ".join(
        f'<a href="{href(source, "papers/index.md", query(year=str(year)))}">{year}</a>&nbsp;({n})'
        for year, n in sorted(by_year(data.papers).items(), reverse=True)
    )
    venues = " · ".join(
        f'<a href="{href(source, "papers/index.md", query(venue=name))}">{text(name)}</a>&nbsp;({n})'
        for name, n in by_venue(data.papers).items()
    )
    return f'<p class="spread"><strong>By year:</strong> {years}</p>\n<p class="spread"><strong>By venue:</strong> {venues}</p>\n'


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


def newest_list(data: SiteData, source: str) -> str:
    return papers_list(newest(data), source)


def home(template: str, data: SiteData) -> str:
    """`index.md`: the hand-written home page with its counts, matrix and newest papers filled in."""
    source = "index.md"
    return fill(
        template,
        {
            "counts": counts_block(data, source),
            "matrix": matrix_table(data, source),
            "spread": spread_block(data, source),
            "newest": newest_list(data, source),
        },
    )


# --------------------------------------------------------------------------------------------
# taxonomy pages


def taxonomy_pages(data: SiteData) -> dict[str, str]:
    """`taxonomy/index.md` and one page per modality and per mechanism."""
    pages: dict[str, str] = {}
    facets = {
        "modalities": ("modality", {v: vocabulary(data.taxonomy, "modalities").get(v, "") for v in modality_values(data)}),
        "mechanisms": ("mechanism", {v: vocabulary(data.taxonomy, "mechanisms").get(v, "") for v in mechanism_values(data)}),
    }
    index = [front_matter("Taxonomy"), "# Taxonomy\n\n",
             "<p>The survey classifies each paper by the data modality it compresses and by the "
             "mechanism it compresses with. A paper may have several of each.</p>\n"]
    for kind, (facet, values) in facets.items():
        items = []
        for value, description in values.items():
            members = [p for p in data.papers if value in (p.get(kind) or [])]
            page = taxonomy_page(kind, value)
            pages[page] = taxonomy_value_page(data, kind, facet, value, description, members)
            items.append(
                f"<li>{link(href('taxonomy/index.md', page), text(value))} ({len(members)}): "
                f"{text(description)}</li>"
            )
        index.append(f"## {kind.capitalize()}\n\n<ul>\n" + "\n".join(items) + "\n</ul>\n")
    for key in ("cost", "architecture", "stage", "tasks", "kind"):
        values = vocabulary(data.taxonomy, key)
        if values:
            rows = "".join(f"<tr><td><code>{text(v)}</code></td><td>{text(d)}</td></tr>" for v, d in values.items())
            index.append(f"## {key.capitalize()}\n\n<table><tbody>{rows}</tbody></table>\n")
    pages["taxonomy/index.md"] = "\n".join(index)
    return pages


def taxonomy_value_page(
    data: SiteData, kind: str, facet: str, value: str, description: str, members: list[Paper]
) -> str:
    source = taxonomy_page(kind, value)
    out = [
        front_matter(f"{value.capitalize()} ({facet})", hide=["navigation", "toc"]),
        f"# {text(value.capitalize())}\n\n<p>A {facet} of the survey's taxonomy: {len(members)} papers.</p>\n",
    ]
    if description:
        out.append(f'<blockquote class="definition"><p>{text(description)}</p></blockquote>\n')
    if kind == "mechanisms":
        finer = submechanisms(data.taxonomy, value)
        if finer:
            rows = "".join(
                f"<tr><td><code>{text(name)}</code></td><td>{text(d)}</td>"
                f"<td>{sum(1 for p in members if name in (p.get('submechanisms') or []))}</td></tr>"
                for name, d in finer.items()
            )
            out.append(
                "## Sub-mechanisms\n\n<table><thead><tr><th>Sub-mechanism</th><th>Definition</th>"
                f"<th>Papers</th></tr></thead><tbody>{rows}</tbody></table>\n"
            )
    filtered = href(source, "papers/index.md", query(**{facet: value}))
    out.append(
        f'## Papers\n\n<p>{len(members)} papers. <a href="{filtered}">Open them in the filterable '
        "table</a>.</p>\n"
    )
    order = sorted(members, key=lambda p: (-p["year"], -(p.get("month") or 0), p["id"]))
    out.append(papers_table(order, data, source, interactive=False))
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# reproductions


def docstring_parts(cls: type) -> tuple[str, str | None]:
    """(what the method computes, its "Differences from the official code" section or None)."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    lines = doc.splitlines()
    heading = re.compile(rf"^#*\s*{re.escape(DIFFERENCES)}\s*:?\s*$", re.IGNORECASE)
    for i, line in enumerate(lines):
        if heading.match(line.strip()):
            rest = lines[i + 1 :]
            if rest and re.fullmatch(r"[-=~]{3,}", rest[0].strip()):
                rest = rest[1:]
            return "\n".join(lines[:i]).strip(), textwrap.dedent("\n".join(rest)).strip() or None
        inline = re.match(rf"^{re.escape(DIFFERENCES)}\s*:\s*(\S.*)$", line.strip(), re.IGNORECASE)
        if inline:
            rest = [inline.group(1), *lines[i + 1 :]]
            return "\n".join(lines[:i]).strip(), textwrap.dedent("\n".join(rest)).strip()
    return doc.strip(), None


def summary(cls: type) -> str:
    """The first sentence-paragraph of a method's docstring."""
    body, _ = docstring_parts(cls)
    first = body.split("\n\n", 1)[0]
    return " ".join(first.split())


def usage_snippet(cls: type) -> str:
    """A snippet that runs: the method built from its `example` params on `example_tokens`."""
    params = ", ".join(f"{name}={value!r}" for name, value in dict(cls.example).items())
    arguments = f"{cls.name!r}, {params}" if params else repr(cls.name)
    return (
        "from reproductions import get\n"
        "from reproductions.examples import example_tokens\n"
        "\n"
        f"method = get({arguments})\n"
        "tokens = example_tokens(method)  # random tokens, plus every signal it needs\n"
        "out = method(tokens)\n"
        'print(tokens.features.shape, "->", out.features.shape)\n'
        "print(out.positions[0])  # the original index each output token stands at\n"
    )


def method_markdown(
    cls: type,
    data: SiteData,
    figure: str | None,
    figure_note: str | None,
    signals: Mapping[str, str],
) -> str:
    """`reproductions/<name>.md`: one method from its registry entry and its docstring."""
    name = cls.name
    source = method_page(name)
    body, differences = docstring_parts(cls)
    paper = data.by_id.get(cls.paper) if cls.paper else None
    if paper:
        paper_cell = link(href(source, paper_page(paper["id"])), text(paper["title"]))
    else:
        paper_cell = text(cls.paper or "a baseline, not from one paper")
    needs = "".join(
        f"<li><code>{text(s)}</code>: {text(signals.get(s, ''))}</li>" for s in cls.needs
    ) or "<li>none: the token features alone</li>"
    facts = [
        ("Registry name", f"<code>{text(name)}</code>"),
        ("Paper", paper_cell),
        ("Stage", f"<code>{text(cls.stage)}</code>: {text(STAGES.get(cls.stage, ''))}"),
        ("Modalities", text(", ".join(cls.modality))),
        ("Mechanisms", _tags(source, "mechanisms", list(cls.mechanisms), data) or "none (baseline)"),
        ("Signals it needs", f"<ul>{needs}</ul>"),
        ("Output tokens", "an output token that stands for one input token is that token, unchanged"
         if cls.copies else "new vectors (pooled, projected or otherwise recomputed)"),
        ("Batch rows", "independent" if cls.batch_independent else "one statistic spans the batch"),
    ]
    if cls.trainable:
        facts.append(("Trainable", "yes: an <code>nn.Module</code> with learned weights"))
    rows = "\n".join(f"<tr><th>{label}</th><td>{value}</td></tr>" for label, value in facts)
    parameters = "\n".join(f"| `{param}` | `{default}` |" for param, default in parameter_defaults(cls))
    out = [
        front_matter(f"{name}: reproduction"),
        f"# `{name}`\n",
        textwrap.dedent(body) + "\n",
        f'<table data-table="method-facts" {UNSEARCHED}>\n{rows}\n</table>\n',  # the docstring says it in prose
        heading("Parameters", searched=False) + "| Parameter | Default |\n| --- | --- |\n" + parameters + "\n",
        heading("Usage", searched=False) + fence(usage_snippet(cls), "python"),
    ]
    if figure:
        out.append(
            heading("On a photograph", searched=False)
            + f"![{name} on scikit-image's astronaut photograph]({posixpath.basename(figure)})\n\n"
            f"{figure_note or ''}\n"
        )
    elif figure_note:
        out.append(heading("On a photograph", searched=False) + f"{figure_note}\n")
    # found on the method page; the index, which every visitor downloads, keeps what names it
    out.append(heading(DIFFERENCES, searched=False) + (differences or "None stated in the docstring.") + "\n")
    results = method_results(data, name)
    if results:
        out.append(heading("Benchmarks", searched=False) + results)
    return "\n".join(out)


def parameter_defaults(cls: type) -> list[tuple[str, str]]:
    """(name, default as code) of each hyperparameter in `cls.parameters()`; factories are called,
    fields the caller cannot set (init=False) are left out."""
    settable = {f.name: f for f in dataclasses.fields(cls) if f.init}
    rows = []
    for name, default in cls.parameters():
        spec = settable.get(name)
        if spec is None:
            continue
        if default is dataclasses.MISSING and spec.default_factory is not dataclasses.MISSING:
            default = spec.default_factory()
        rows.append((name, "required" if default is dataclasses.MISSING else repr(default)))
    return rows


def reproductions_index(data: SiteData) -> str:
    source = "reproductions/index.md"
    rows = []
    for name, cls in data.methods.items():
        paper = data.by_id.get(cls.paper) if cls.paper else None
        paper_cell = link(href(source, paper_page(paper["id"])), text(paper["title"])) if paper else text(cls.paper or "baseline")
        rows.append(
            f"<tr><td>{link(href(source, method_page(name)), f'<code>{text(name)}</code>')}</td>"
            f"<td>{text(', '.join(cls.modality))}</td><td>{text(', '.join(cls.mechanisms) or '-')}</td>"
            f"<td>{text(cls.stage)}</td><td>{text(', '.join(cls.needs) or '-')}</td><td>{paper_cell}</td></tr>"
        )
    table = (
        '<table data-table="methods"><thead><tr><th>Method</th><th>Modalities</th><th>Mechanisms</th>'
        "<th>Stage</th><th>Needs</th><th>Paper</th></tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>\n"
    )
    return (
        front_matter("Reproductions", hide=["navigation", "toc"])
        + "# Reproductions\n\n"
        + "Small, readable reimplementations of the methods behind one interface: a method is a "
        "dataclass of hyperparameters whose call maps `Tokens` to a `Compression`. Each page says "
        "what the method computes, its parameters, the signals it reads, where it acts, a snippet "
        "that runs, and where it departs from the authors' code.\n\n"
        + f"{len(data.methods)} methods are registered. Which of them run in which transformers "
        f"model family: the {link(href(source, 'reproductions/support.md'), 'support matrix')}.\n\n"
        + table
    )


def support_page(table: str) -> str:
    """`reproductions/support.md`: the method x model-family matrix (`reproductions.hf.support`),
    the same table as the README's."""
    return (
        front_matter("Support matrix", hide=["navigation", "toc"])
        + "# Support matrix\n\n"
        + "Every registered method against every model family that `reproductions.hf.compress` "
        "supports, each family stood for by its tiny model (same structure, random weights). "
        "The tests run every cell marked ✓ and check that every other cell is refused with the "
        "reason `why_unsupported(model, method)` gives.\n\n"
        + table
    )


# --------------------------------------------------------------------------------------------
# benchmarks (the JSON of `python -m benchmarks`, format 1, documented in benchmarks/README.md)

#: (heading, how to read it from a record) of the benchmark tables, in column order
RESULT_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("Modality", lambda r: r.get("modality")),
    ("Budget", lambda r: r.get("budget")),
    ("Parameters", lambda r: ", ".join(f"{k}={v}" for k, v in (r.get("params") or {}).items())),
    ("Tokens", lambda r: f"{r.get('tokens_in')} → {r.get('tokens_out')}" if r.get("tokens_out") is not None else r.get("tokens_in")),
    ("Method (ms)", lambda r: _median_ms(r.get("method_time_s"))),
    ("Prefill (ms)", lambda r: _median_ms(r.get("prefill_time_s"))),
    ("TTFT (ms)", lambda r: _median_ms(r.get("ttft_s"))),
    ("Decode / token (ms)", lambda r: _median_ms(r.get("decode_time_per_token_s"))),
    ("Prefill speed-up", lambda r: _times((r.get("speedup") or {}).get("measured"))),
    ("FLOP speed-up", lambda r: _times((r.get("speedup") or {}).get("flops"))),
    ("Prefill GFLOPs", lambda r: _scaled((r.get("flops") or {}).get("total_prefill"), 1e9)),
    ("KV cache (KiB)", lambda r: _scaled(r.get("kv_cache_bytes"), 1024)),
    ("Peak memory (MiB)", lambda r: _scaled(r.get("peak_memory_bytes"), 2**20)),
    ("Error", lambda r: r.get("error")),
)


def _median_ms(timing: Any) -> str:
    median = timing.get("median") if isinstance(timing, Mapping) else None
    return "" if median is None else f"{1000 * median:.3g}"


def _times(value: Any) -> str:
    return "" if value is None else f"{value:.2f}×"


def _percent(value: Any) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


def _scaled(value: Any, unit: float) -> str:
    return "" if value is None else f"{value / unit:.3g}"


def method_link(source: str, name: Any, methods: Mapping[str, type]) -> str:
    """A registry name as code, linked to its page where the method is registered."""
    label = f"<code>{text(name)}</code>"
    return link(href(source, method_page(name)), label) if name in methods else label


def latest_run(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest results document of a format this page reads (format 1), or None."""
    readable = [doc for doc in results if doc.get("format") == 1 and isinstance(doc.get("results"), list)]
    return max(readable, key=lambda doc: (str(doc.get("created", "")), doc["file"])) if readable else None


def results_table(
    records: list[dict[str, Any]], source: str, methods: Mapping[str, type], with_method: bool
) -> str:
    """The benchmark records as one HTML table (times are medians over the run's repeats)."""
    columns = list(RESULT_COLUMNS)
    if with_method:
        columns.insert(0, ("Method", None))
    head = "".join(f"<th>{text(name)}</th>" for name, _ in columns)
    rows = []
    for record in records:
        cells = []
        for _, read in columns:
            if read is None:
                cells.append(method_link(source, record.get("method"), methods))
            else:
                cells.append(text(read(record)))
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return (
        f'<div class="results-wrap"><table data-table="results" {UNSEARCHED}>'
        f"<thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table></div>\n"
    )


def run_description(run: dict[str, Any]) -> str:
    """Where and how a run was measured: model, device, settings, command."""
    env = run.get("environment") or {}
    model = run.get("model") or {}
    decoder = model.get("decoder") or {}
    settings = run.get("settings") or {}
    facts = [
        ("File", f"<code>benchmarks/results/{text(run['file'])}</code>"),
        ("Created", text(run.get("created"))),
        ("Model", text(f"{model.get('name')} ({model.get('source')}): " + ", ".join(f"{k} {v}" for k, v in decoder.items()))),
        ("Device", text(f"{env.get('device')} ({env.get('device_name')}), {env.get('threads')} threads, {env.get('dtype')}")),
        ("Software", text(f"torch {env.get('torch')}, transformers {env.get('transformers')}, Python {env.get('python')}")),
        ("Settings", text(", ".join(f"{k} {v}" for k, v in settings.items()))),
        ("Command", f"<code>{text(run.get('command'))}</code>"),
    ]
    rows = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in facts)
    return f'<table data-table="run">{rows}</table>\n'


def summary_table(run: dict[str, Any], source: str, methods: Mapping[str, type]) -> str:
    """The held figure: pre-LLM methods at the summary budget, efficiency and overhead."""
    summary = run.get("summary") or {}
    thresholds = summary.get("thresholds") or {}
    rows = "".join(
        f"<tr><td>{method_link(source, r.get('method'), methods)}</td>"
        f"<td>{text(r.get('stage'))}</td><td>{text(r.get('tokens_out'))}</td>"
        f"<td>{_times(r.get('measured_speedup'))}</td><td>{_times(r.get('flops_speedup'))}</td>"
        f"<td>{'' if r.get('efficiency') is None else format(r['efficiency'], '.3f')}</td>"
        f"<td>{_percent(r.get('overhead'))}</td></tr>"
        for r in summary.get("rows") or []
    )
    verdict = {True: "holds", False: "does not hold"}.get(summary.get("holds"), "was not evaluated")
    return (
        f"<p>At a budget of {text(summary.get('budget'))} image tokens, efficiency (measured prefill "
        f"speed-up / FLOP-ratio speed-up) should be at least {text(thresholds.get('efficiency'))} and "
        f"each method's own time below {_percent(thresholds.get('overhead'))} of the uncompressed "
        f"prefill. In this run the figure <strong>{verdict}</strong>.</p>\n"
        '<table data-table="summary"><thead><tr><th>Method</th><th>Stage</th><th>Tokens</th>'
        "<th>Measured speed-up</th><th>FLOP speed-up</th><th>Efficiency</th><th>Overhead</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>\n"
    )


def method_results(data: SiteData, name: str) -> str | None:
    """The benchmark section of a method page, from the latest run, or None without results."""
    run = latest_run(data.results)
    records = [r for r in run["results"] if r.get("method") == name] if run else []
    if not records:
        return None
    source = method_page(name)
    return (
        f"<p>From the latest run ({text(run.get('created'))}, {text((run.get('model') or {}).get('name'))} "
        f"on {text((run.get('environment') or {}).get('device'))}); times are medians. See "
        f"{link(href(source, 'benchmarks.md'), 'Benchmarks')} for the setup.</p>\n"
        + results_table(records, source, data.methods, with_method=False)
    )


def benchmarks_page(data: SiteData, plots: Iterable[str] = ()) -> str:
    """`benchmarks.md`: the latest run in full (setup, plots, the held figure, every record)."""
    source = "benchmarks.md"
    out = [front_matter("Benchmarks", hide=["navigation", "toc"]), "# Benchmarks\n\n"]
    run = latest_run(data.results)
    if run is None:
        out.append(
            "No benchmark results are committed yet. Run `make bench` (or `python -m benchmarks`): "
            "it writes JSON under `benchmarks/results/`, and the next site build shows it here and "
            "on each method's page.\n"
        )
        return "\n".join(out)
    out.append(
        "Every registered method on the same footing: its own time, the LLM prefill, time to first "
        "token, decode time per token, KV cache and FLOPs, with warm-up runs and medians over "
        "repeats (`python -m benchmarks`; the JSON format is documented in `benchmarks/README.md`). "
        "Measured on one machine: compare rows of one run, not runs on different machines.\n"
    )
    out.append("## Setup\n\n" + run_description(run))
    shown = list(plots)
    if shown:
        images = "\n".join(
            f'<p><img src="{href(source, path)}" alt="{text(posixpath.basename(path))}"></p>' for path in shown
        )
        out.append(heading("Plots", searched=False) + f"{images}\n")
    out.append("## The held figure\n\n" + summary_table(run, source, data.methods))
    out.append("## Every measurement\n\n" + results_table(run["results"], source, data.methods, with_method=True))
    earlier = [doc for doc in data.results if doc is not run]
    if earlier:
        items = "".join(
            f"<li><code>{text(doc['file'])}</code> ({text(doc.get('created'))}, "
            f"{text((doc.get('environment') or {}).get('device_name'))})</li>"
            for doc in sorted(earlier, key=lambda d: str(d.get("created", "")), reverse=True)
        )
        out.append(f"## Earlier runs\n\n<ul>{items}</ul>\n")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# contributing


def validator_section(examples: Iterable[tuple[str, str, list[str]]]) -> str:
    """Each broken example: what is wrong, the broken lines, and the validator's exact output."""
    out = []
    for problem, lines, messages in examples:
        out.append(
            f"### {text(problem)}\n\n" + fence(lines, "yaml") + "\nprints\n\n"
            + fence("\n".join(messages) or "(nothing: the validator accepts it)", "text")
        )
    return "\n".join(out)


def schema_fields(schema: Mapping[str, Any]) -> str:
    """A table of a paper file's fields from `catalog/schema.json`: type, allowed values, meaning."""
    required = set(schema.get("required") or [])
    rows = []
    for name, spec in (schema.get("properties") or {}).items():
        rows.append(
            f"<tr><td><code>{text(name)}</code>{' (required)' if name in required else ''}</td>"
            f"<td>{text(_schema_type(spec))}</td><td>{text(spec.get('description', ''))}</td></tr>"
        )
    return (
        '<table data-table="schema-fields"><thead><tr><th>Field</th><th>Type / allowed values</th>'
        "<th>Meaning</th></tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>\n"
    )


def _schema_type(spec: Mapping[str, Any]) -> str:
    if "enum" in spec:
        return " | ".join(json.dumps(v) for v in spec["enum"])
    for key in ("anyOf", "oneOf"):
        if key in spec:
            return " or ".join(_schema_type(option) for option in spec[key])
    kind = spec.get("type", "")
    kind = " | ".join(kind) if isinstance(kind, list) else str(kind)
    if kind == "array" and isinstance(spec.get("items"), Mapping):
        return f"list of {_schema_type(spec['items'])}"
    if kind == "object" and spec.get("properties"):
        return "{" + ", ".join(spec["properties"]) + "}"
    if spec.get("format"):
        return f"{kind} ({spec['format']})"
    if spec.get("pattern"):
        return f"{kind} matching {spec['pattern']}"
    return kind or ("null" if spec.get("const", 0) is None else "")


def include_markdown(markdown: str, repo_url: str | None) -> str:
    """A repository markdown file made fit for a docs page: its title dropped (the page has one),
    and links to repository files pointed at the repository (or shown as code) so none breaks."""

    def relink(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        if re.match(r"^(https?:|mailto:|#)", target):
            return match.group(0)
        if repo_url:
            path = posixpath.normpath(target).lstrip("/")
            return f"[{label}]({repo_url.rstrip('/')}/blob/main/{path})"
        return f"{label} (`{target}`)"

    source = markdown.splitlines()
    while source and not source[0].strip():
        source.pop(0)
    if source and source[0].startswith("# "):  # the page has its own title
        source.pop(0)
    lines = []
    in_fence = False
    for line in source:
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        if not in_fence:
            line = re.sub(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)", relink, line)
        lines.append(line)
    return "\n".join(lines) + "\n"
