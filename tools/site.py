"""The mkdocs-gen-files script: every generated page of the site, written at build time.

mkdocs.yml runs it (plugins: gen-files: scripts). It reads the catalog, the method registry and
the benchmark results, and writes pages that exist only inside the build (nothing generated is
committed). Where the data comes from is configurable so tests can build the site from a fixture:

- `SITE_CATALOG`: the catalog folder (holding `papers/`, `taxonomy.yaml`, `schema.json`);
  default `catalog/` of this repository.
- `SITE_BENCHMARKS`: the folder of benchmark result JSON; default `benchmarks/results/`.
- `SITE_ACCURACY`: the folder of accuracy sweeps (`python -m tools eval --out <folder>/<name>`);
  default `benchmarks/accuracy/`.

Hand-written pages (`site/index.md`, `site/contributing.md`) hold `<!-- site:NAME -->` markers
that the generated parts replace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # mkdocs runs this file by path; the tools package lives at ROOT
    sys.path.insert(0, str(ROOT))

from tools import site_pages  # noqa: E402
from tools.bib import bibliography  # noqa: E402
from tools.catalog import Paper, load_papers, load_taxonomy  # noqa: E402
from tools.export_json import catalog_json  # noqa: E402
from tools.ids import load_redirects  # noqa: E402
from tools.site_pages import SiteData  # noqa: E402


def catalog_root() -> Path:
    return Path(os.environ.get("SITE_CATALOG") or ROOT / "catalog")


def results_root() -> Path:
    return Path(os.environ.get("SITE_BENCHMARKS") or ROOT / "benchmarks" / "results")


def accuracy_root() -> Path:
    return Path(os.environ.get("SITE_ACCURACY") or ROOT / "benchmarks" / "accuracy")


def load_accuracy(folder: Path) -> list[dict[str, Any]]:
    """Every committed sweep `folder/<name>/results.json` (sorted by name), tagged with its name."""
    sweeps = []
    for path in sorted(folder.glob("*/results.json")) if folder.is_dir() else []:
        sweeps.append({**json.loads(path.read_text(encoding="utf-8")), "name": path.parent.name})
    return sweeps


def load_results(folder: Path) -> list[dict[str, Any]]:
    """Every `*.json` under `folder` (sorted by name), each tagged with its file name."""
    documents = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        content = json.loads(path.read_text(encoding="utf-8"))
        document = content if isinstance(content, dict) else {"results": content}
        documents.append({**document, "file": path.name})
    return documents


def added_dates(papers_dir: Path) -> dict[str, str]:
    """Paper id -> date its file was first committed (empty outside a git checkout)."""
    try:
        log = subprocess.run(
            ["git", "log", "--diff-filter=A", "--format=date %cI", "--name-only", "--", "."],
            cwd=papers_dir, capture_output=True, text=True, check=True, timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    dates: dict[str, str] = {}
    current = ""
    for line in log.splitlines():
        if line.startswith("date "):
            current = line[5:]
        elif line.endswith(".yaml"):
            dates.setdefault(Path(line).stem, current)  # the log runs newest first
    return dates


def load(repo_url: str | None = None, papers: list[Paper] | None = None) -> SiteData:
    """The catalog, the registry and the results the pages are made from; `papers` are the
    catalog's papers where the caller has validated (and so parsed) them already."""
    import reproductions

    root = catalog_root()
    return SiteData(
        papers=load_papers(root) if papers is None else papers,
        taxonomy=load_taxonomy(root) if (root / "taxonomy.yaml").exists() else {},
        methods=reproductions.methods(),
        results=load_results(results_root()),
        accuracy=load_accuracy(accuracy_root()),
        added=added_dates(root / "papers"),
        redirects=load_redirects(root),
        repo_url=repo_url,
        support=support_matrix(),
    )


def generate(data: SiteData, docs_dir: Path) -> dict[str, str | bytes]:
    """Every generated file, by its path under the docs folder."""
    from reproductions.interface import SIGNALS
    from tools import site_figures

    plots = {**benchmark_plots(data), **accuracy_plots(data)}
    files: dict[str, str | bytes] = {
        "index.md": site_pages.home((docs_dir / "index.md").read_text(encoding="utf-8"), data),
        "papers/index.md": site_pages.papers_index(data),
        "reproductions/index.md": site_pages.reproductions_index(data),
        "reproductions/support.md": site_pages.support_page(support_table(data)),
        "benchmarks.md": site_pages.benchmarks_page(data, plots),
        "contributing.md": contributing(data, docs_dir),
        "catalog.bib": bibliography(data.papers, data.taxonomy),
        "catalog.json": catalog_json(data.papers),
        **plots,
    }
    for paper in data.papers:
        files[site_pages.paper_page(paper["id"])] = site_pages.paper_markdown(paper, data)
    for old, new in data.redirects.items():
        files[f"papers/{old}/index.html"] = site_pages.redirect_page(f"../{new}/")
    files.update(site_pages.taxonomy_pages(data))
    for name, cls in data.methods.items():
        figure = None
        note = site_figures.why_not_drawn(cls)
        if note is None:
            figure = f"reproductions/{name}.png"
            files[figure], note = site_figures.draw(cls)
        files[site_pages.method_page(name)] = site_pages.method_markdown(cls, data, figure, note, SIGNALS)
    return files


def support_matrix() -> dict[str, dict[str, tuple[str, str | None]]]:
    """The support matrix (builds one tiny model per family: about 2 s), once per build: the
    support page and every reproduced paper's page read it."""
    from reproductions.hf.support import matrix

    return matrix()


def support_table(data: SiteData) -> str:
    """The support matrix's Markdown table, the README's."""
    from reproductions.hf.support import markdown

    return markdown(data.support)


def benchmark_plots(data: SiteData) -> dict[str, bytes]:
    """The latest run's plots (`benchmarks.plots.plot`), drawn from its JSON at build time."""
    run = site_pages.latest_run(data.results)
    if run is None:
        return {}
    from benchmarks.plots import plot

    with tempfile.TemporaryDirectory() as folder:
        paths = plot(run, Path(folder), "latest")
        return {f"benchmarks/{path.name}": path.read_bytes() for path in paths}


def accuracy_plots(data: SiteData) -> dict[str, bytes]:
    """The newest accuracy sweep's plots (`tools.eval_table.plot`: accuracy against TTFT and
    against kept tokens, one curve per method), drawn from its table at build time."""
    if not data.accuracy:
        return {}
    from tools.eval_table import plot

    with tempfile.TemporaryDirectory() as folder:
        paths = plot(data.accuracy[-1].get("rows") or [], Path(folder))
        return {f"benchmarks/accuracy-{path.name}": path.read_bytes() for path in paths}


#: (what is wrong, title word of the example paper, the edit that breaks its file)
BREAKS: tuple[tuple[str, str, Any], ...] = (
    ("A misspelt field", "alpha", lambda t: t.replace("\nvenue:", "\nvenu:")),
    ("A value outside the vocabulary", "beta", lambda t: t.replace("modalities: [image]", "modalities: [images]")),
    ("An arXiv id with a prefix", "gamma", lambda t: t.replace('arxiv: "2503.00003"', 'arxiv: "arXiv:2503.00003"')),
    ("A link that is not a URL", "delta", lambda t: t.replace("code: null", "code: github.com/doe/delta")),
    ("A sub-mechanism without its mechanism", "epsilon", lambda t: t.replace("submechanisms: []", "submechanisms: [merging]")),
    ("Malformed YAML", "zeta", lambda t: t.replace('"Zeta: Fewer Tokens"', '"Zeta: Fewer Tokens')),
    ("A file name that is not the id", "eta", None),
)


def example_paper(number: int, word: str) -> dict[str, Any]:
    """A valid paper file's fields, distinct per `number` so examples do not duplicate each other."""
    arxiv = f"2503.{number:05d}"
    return {
        "id": f"doe2025{word}", "title": f"{word.capitalize()}: Fewer Tokens", "method": word.capitalize(),
        "authors": ["Jane Doe"], "year": 2025, "month": 3, "venue": None, "arxiv": arxiv, "doi": None,
        "links": {"paper": f"https://arxiv.org/abs/{arxiv}", "code": None, "project": None,
                  "model": None, "dataset": None},
        "modalities": ["image"], "mechanisms": ["attention"], "submechanisms": [],
        "cost": "training-free", "architecture": ["mllm"], "stage": ["projector"], "tasks": [],
        "kind": "method", "reproductions": [], "notes": None,
    }


def validator_examples(taxonomy: Path) -> list[tuple[str, str, list[str]]]:
    """(what is wrong, the broken lines, what `python -m tools validate` prints) for each break
    in `BREAKS`, from running the real validator on broken copies of a valid file."""
    from tools.catalog import dump_paper
    from tools.validate import validate

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "catalog"
        (root / "papers").mkdir(parents=True)
        (root / "taxonomy.yaml").write_bytes(taxonomy.read_bytes())
        broken: dict[str, tuple[str, str]] = {}
        for number, (problem, word, edit) in enumerate(BREAKS, 1):
            valid = dump_paper(example_paper(number, word))
            name = f"doe2025{word}.yaml" if edit else f"doe2025{word}s.yaml"
            text = edit(valid) if edit else valid
            if edit and text == valid:
                raise ValueError(f"the example for {problem!r} no longer applies to dump_paper's format")
            changed = [line for line in text.splitlines() if line not in valid.splitlines()]
            shown = "\n".join(changed) if changed else f"# file {name}\nid: doe2025{word}"
            (root / "papers" / name).write_text(text, encoding="utf-8")
            broken[name] = (problem, shown)
        report = validate(root, registry=False)
        prefix = str(root)
        messages = [line.replace(prefix, "catalog") for line in report.errors + report.warnings]
    return [
        (problem, shown, [m for m in messages if f"/{name}:" in m])
        for name, (problem, shown) in broken.items()
    ]


def contributing(data: SiteData, docs_dir: Path) -> str:
    """`contributing.md`: the hand-written page with CONTRIBUTING.md, the schema's fields and the
    validator's messages on broken examples."""
    guide = ROOT / "CONTRIBUTING.md"
    schema = catalog_root() / "schema.json"
    taxonomy = catalog_root() / "taxonomy.yaml"
    parts = {
        "validator": site_pages.validator_section(validator_examples(taxonomy))
        if taxonomy.exists()
        else "*The catalog has no taxonomy.yaml yet.*\n",
        "contributing": site_pages.include_markdown(guide.read_text(encoding="utf-8"), data.repo_url)
        if guide.exists()
        else "*CONTRIBUTING.md is not written yet.*\n",
        "schema": site_pages.schema_fields(json.loads(schema.read_text(encoding="utf-8")))
        if schema.exists()
        else "*The catalog has no schema.json yet.*\n",
    }
    return site_pages.fill((docs_dir / "contributing.md").read_text(encoding="utf-8"), parts)


#: the generated pages of the nav: where a reader may be when the catalog breaks under `serve`
NAV_PAGES = ("index.md", "papers/index.md", "taxonomy/index.md", "reproductions/index.md", "benchmarks.md")


def error_page(errors: list[str]) -> str:
    """The page `mkdocs serve` shows while the catalog has errors, instead of a stuck server."""
    items = "\n".join(f"<li><code>{site_pages.text(line)}</code></li>" for line in errors)
    return (
        site_pages.front_matter("The catalog has errors")
        + "# The catalog has errors\n\nFix these lines (the same as `python -m tools validate` prints); "
        f"the site rebuilds when you save.\n\n<ul>\n{items}\n</ul>\n"
    )


def main() -> None:
    """Write every generated file into the mkdocs build. With catalog errors, log each as a
    warning (a strict build stops, naming file:line) and show them on every nav page, so that
    `mkdocs serve` answers with them instead of hanging on a traceback."""
    import logging

    import mkdocs_gen_files

    from tools.validate import validate

    report = validate(catalog_root(), registry=False)
    errors = report.errors
    if errors:
        log = logging.getLogger("mkdocs.plugins.catalog")
        for line in errors:
            log.warning(line)
        for path in NAV_PAGES:
            with mkdocs_gen_files.open(path, "w") as stream:
                stream.write(error_page(errors))
        return
    config = mkdocs_gen_files.config
    data = load(config.extra.get("repository"), report.papers)
    for path, content in generate(data, Path(config.docs_dir)).items():
        if isinstance(content, bytes):
            with mkdocs_gen_files.open(path, "wb") as stream:
                stream.write(content)
        else:
            with mkdocs_gen_files.open(path, "w") as stream:
                stream.write(content)


if __name__ in {"__main__", "<run_path>"}:
    main()
