"""One page per paper (`papers/<id>.md`), and the pages that send a paper's old URL to it."""

from __future__ import annotations

from typing import Any

from ..bib import bibtex
from ..catalog import Paper, venue_label
from .data import SiteData, citation, mechanisms_of, related, reproductions_of, when
from .markup import (
    UNSEARCHED,
    fence,
    front_matter,
    heading,
    href,
    link,
    method_page,
    paper_page,
    text,
    url,
)
from .methods import method_summary
from .papers import papers_list, tags


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
        ("Modalities", tags(source, "modalities", list(paper.get("modalities") or []), data), False),
        ("Mechanisms", tags(source, "mechanisms", mechanisms_of(paper), data), False),
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
            f"{text(method_summary(data.methods[name]))}</li>"
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
