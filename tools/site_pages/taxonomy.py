"""The taxonomy pages: `taxonomy/index.md` and one page per modality and per mechanism."""

from __future__ import annotations

from ..catalog import Paper
from .data import SiteData, submechanisms, vocabulary
from .markup import front_matter, href, link, query, taxonomy_page, text
from .papers import mechanism_values, modality_values, papers_table


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
