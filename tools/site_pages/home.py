"""The home page (`index.md`): counts, the modality x mechanism matrix, the spread by year and
venue, and the newest papers, filled into the hand-written page."""

from __future__ import annotations

from ..catalog import MECHANISMS, MODALITIES, by_venue, by_year, matrix
from .data import UNCLASSIFIED, SiteData, code_url, newest, reproductions_of
from .markup import fill, href, link, query, taxonomy_page, text
from .papers import papers_list


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
