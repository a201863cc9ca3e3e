"""The site, built once per test session from the catalog plus a hostile fixture paper.

The build copies `catalog/` to a temporary folder, adds `tests/site/fixtures/papers/*.yaml`
(papers whose text is markup and markdown that must show as text) and runs
`mkdocs build --strict` on it through `SITE_CATALOG`, with the committed benchmark results plus
`tests/site/fixtures/results/tiny-run.json` through `SITE_BENCHMARKS`. Every site test reads
that one build.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ARTIFACTS = ROOT / "test-artifacts"
#: turn off the banners mkdocs-material and mkdocs-gen-files print about MkDocs 2
QUIET = {"NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}


@dataclass
class Build:
    """A built site: its folder, the catalog it was built from, the build log and time, and the
    local server that will serve it (bound before the build, since the site's URL is built in)."""

    site: Path
    catalog: Path
    results: Path
    log: str
    seconds: float
    httpd: http.server.ThreadingHTTPServer | None = None


def build_site(catalog: Path, results: Path, site: Path, site_url: str = "http://localhost:8000/") -> Build:
    """Run `mkdocs build --strict` on `catalog` and the benchmark `results` into `site`; fail the
    test on any warning.

    `site_url` must be where the site is served: mkdocs-material's instant navigation only
    intercepts links it finds in the sitemap, whose addresses must match scheme, host and port.
    """
    env = {**os.environ, **QUIET, "SITE_CATALOG": str(catalog), "SITE_URL": site_url,
           "SITE_BENCHMARKS": str(results)}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    seconds = time.perf_counter() - start
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{log[-6000:]}"
    return Build(site=site, catalog=catalog, results=results, log=log, seconds=seconds)


@pytest.fixture
def mkdocs_env() -> dict[str, str]:
    """The environment for a mkdocs run of a test, without the MkDocs 2 banners. A fixture, not
    an import: `from conftest import ...` finds tests/catalog's conftest when both folders run."""
    return {**os.environ, **QUIET}


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Build]:
    """The site built once from a copy of the catalog plus the fixture papers."""
    base = tmp_path_factory.mktemp("site")
    catalog = base / "catalog"
    shutil.copytree(ROOT / "catalog", catalog)
    for paper in sorted((FIXTURES / "papers").glob("*.yaml")):
        shutil.copy(paper, catalog / "papers" / paper.name)
    results = base / "results"  # the committed results, plus a tiny run whose numbers we know
    results.mkdir()
    for run in [*sorted((ROOT / "benchmarks" / "results").glob("*.json")), FIXTURES / "results" / "tiny-run.json"]:
        shutil.copy(run, results / run.name)
    site = base / "public"
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    build = build_site(catalog, results, site, f"http://127.0.0.1:{httpd.server_address[1]}/")
    build.httpd = httpd
    print(f"\nsite built in {build.seconds:.1f} s")
    yield build
    httpd.server_close()


@pytest.fixture(scope="session")
def server(built: Build) -> Iterator[str]:
    """The built site served over HTTP from a local thread; yields its base URL."""
    httpd = built.httpd
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass
