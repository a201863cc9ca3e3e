"""tools/site_hooks.py on the theme's real assets: it keeps exactly the lunr files the search
worker imports for the configured languages, and removes every source map."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import material
import pytest

from tools.site_hooks import lunr_files, prune

THEME_ASSETS = Path(material.__file__).parent / "templates" / "assets"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    shutil.copytree(THEME_ASSETS, tmp_path / "assets")
    return tmp_path


def test_the_worker_imports_the_files_named(site: Path) -> None:
    """The theme's worker names each file `lunr_files` may keep: a theme upgrade that renames
    them fails here instead of shipping a search that cannot load its language."""
    worker = next((site / "assets" / "javascripts" / "workers").glob("search.*.min.js")).read_text(encoding="utf-8")
    for name in ("tinyseg.js", "wordcut.js", "lunr.multi.min.js", "lunr.stemmer.support.min.js"):
        assert name in worker, name
    assert re.search(r'case"ja".*?tinyseg\.js.*?case"hi":case"th".*?wordcut\.js', worker)


@pytest.mark.parametrize(
    ("langs", "kept"),
    [
        (["en"], set()),
        (["de"], {"min/lunr.de.min.js", "min/lunr.stemmer.support.min.js"}),
        (["en", "ja"], {"tinyseg.js", "min/lunr.ja.min.js", "min/lunr.multi.min.js", "min/lunr.stemmer.support.min.js"}),
    ],
)
def test_prune_keeps_what_the_worker_loads(site: Path, langs: list[str], kept: set[str]) -> None:
    lunr = site / "assets" / "javascripts" / "lunr"
    before = {p.relative_to(lunr).as_posix() for p in lunr.rglob("*") if p.is_file()}
    assert kept <= before and lunr_files(langs) == kept
    freed = prune(site, langs)
    after = {p.relative_to(lunr).as_posix() for p in lunr.rglob("*") if p.is_file()} if lunr.exists() else set()
    assert after == kept
    assert sorted(site.rglob("*.map")) == []
    assert not any(b"sourceMappingURL" in p.read_bytes() for p in site.rglob("*.js"))
    print(f"{langs}: {freed / 1024:.0f} KB removed")
