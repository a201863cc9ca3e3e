"""Escaping, links and the small pieces of markup every generated page is built from.

Every value that comes from a paper file reaches a page only through `text` (HTML-escaped) or
`url` (escaped, and only http(s) links become links), so a contributor's markup shows as text.
"""

from __future__ import annotations

import html
import json
import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode


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
