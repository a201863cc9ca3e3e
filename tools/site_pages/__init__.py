"""The site's generated pages, as pure functions from the catalog and the registry to text.

`tools/site.py` (the mkdocs-gen-files script) loads the data and writes what these functions
return; tests call them directly. Nothing here touches the file system or mkdocs, so a page can be
checked without building the site.

One module per kind of page:

- `markup`: escaping, links, front matter, fences, the `<!-- site:NAME -->` markers;
- `data`: `SiteData` (what the pages are made from), the taxonomy's vocabularies, facts of a paper;
- `papers`: the papers table (`papers/index.md`) and the lists of papers other pages show;
- `paper`: one page per paper (`papers/<id>.md`) and the redirects from old paper ids;
- `home`: the home page's counts, matrix, spread and newest papers;
- `taxonomy`: `taxonomy/index.md` and a page per modality and per mechanism;
- `methods`: a page per reproduced method, their index, the support matrix page;
- `benchmarks`: the benchmarks page and the results section of a method page;
- `contributing`: the generated parts of the contributing page.

Every value that comes from a paper file (title, authors, notes, venue, links, ...) reaches a page
only through `markup.text` (HTML-escaped, inside a raw HTML block that Markdown leaves alone) or
`markup.url` (escaped, and only http(s) links become links), so a contributor's markup shows as text.

Every public name of the modules is importable from here too (`from tools.site_pages import ...`).
"""

from __future__ import annotations

from .benchmarks import (
    RESULT_COLUMNS,
    benchmarks_page,
    latest_run,
    method_link,
    method_results,
    results_table,
    run_description,
    summary_table,
)
from .contributing import (
    include_markdown,
    schema_fields,
    validator_section,
)
from .data import (
    ID_PATTERN,
    NEWEST,
    RELATED,
    UNCLASSIFIED,
    SiteData,
    citation,
    code_url,
    mechanisms_of,
    newest,
    related,
    reproductions_of,
    submechanisms,
    venue_name,
    vocabulary,
    when,
)
from .home import (
    counts_block,
    home,
    matrix_table,
    newest_list,
    spread_block,
)
from .markup import (
    UNSEARCHED,
    fence,
    fill,
    front_matter,
    heading,
    href,
    link,
    method_page,
    page_dir,
    paper_page,
    query,
    taxonomy_page,
    text,
    url,
)
from .methods import (
    DIFFERENCES,
    STAGES,
    docstring_parts,
    method_markdown,
    method_summary,
    parameter_defaults,
    reproductions_index,
    support_page,
    usage_snippet,
)
from .paper import (
    paper_markdown,
    redirect_page,
    support_rows,
)
from .papers import (
    COLUMNS,
    FACET_SEPARATOR,
    FACETS,
    facet_options,
    facet_values,
    mechanism_values,
    modality_values,
    paper_row,
    papers_index,
    papers_list,
    papers_table,
    search_text,
    tags,
)
from .taxonomy import (
    taxonomy_pages,
    taxonomy_value_page,
)

__all__ = [
    "text",
    "url",
    "link",
    "page_dir",
    "href",
    "query",
    "paper_page",
    "method_page",
    "taxonomy_page",
    "front_matter",
    "UNSEARCHED",
    "heading",
    "fence",
    "fill",
    "UNCLASSIFIED",
    "ID_PATTERN",
    "NEWEST",
    "RELATED",
    "SiteData",
    "vocabulary",
    "submechanisms",
    "mechanisms_of",
    "code_url",
    "reproductions_of",
    "when",
    "citation",
    "venue_name",
    "newest",
    "related",
    "FACET_SEPARATOR",
    "FACETS",
    "COLUMNS",
    "facet_values",
    "facet_options",
    "modality_values",
    "mechanism_values",
    "search_text",
    "paper_row",
    "tags",
    "papers_table",
    "papers_index",
    "papers_list",
    "paper_markdown",
    "support_rows",
    "redirect_page",
    "matrix_table",
    "counts_block",
    "spread_block",
    "newest_list",
    "home",
    "taxonomy_pages",
    "taxonomy_value_page",
    "DIFFERENCES",
    "STAGES",
    "docstring_parts",
    "method_summary",
    "usage_snippet",
    "method_markdown",
    "parameter_defaults",
    "reproductions_index",
    "support_page",
    "RESULT_COLUMNS",
    "method_link",
    "latest_run",
    "results_table",
    "run_description",
    "summary_table",
    "method_results",
    "benchmarks_page",
    "validator_section",
    "schema_fields",
    "include_markdown",
]
