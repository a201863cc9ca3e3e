"""mkdocs hooks (mkdocs.yml: hooks): after the build, drop the theme files no visitor loads.

mkdocs-material copies every lunr language pack (0.9 MB) and its source maps (1.3 MB) into
every build. A browser fetches a source map only while its developer tools are open, and the
search worker loads only the packs of the configured search languages; the rest is dead weight
in the published site.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.plugins.site_hooks")

#: the comment that points a minified file at its source map
SOURCE_MAP_COMMENT = re.compile(rb"\n?(//# sourceMappingURL=\S+|/\*# sourceMappingURL=\S+ \*/)\s*$")


def lunr_files(langs: Iterable[str]) -> set[str]:
    """The files under `assets/javascripts/lunr/` that the search worker imports for `langs`
    (mkdocs-material 9's `workers/search.*.js`: nothing for English alone)."""
    langs = list(langs)
    needed = set()
    for lang in langs:
        if lang == "ja":
            needed.add("tinyseg.js")
        if lang in ("hi", "th"):
            needed.add("wordcut.js")
        if lang != "en":
            needed.add(f"min/lunr.{lang}.min.js")
    if len(langs) > 1:
        needed.add("min/lunr.multi.min.js")
    if needed:
        needed.add("min/lunr.stemmer.support.min.js")
    return needed


def search_langs(config: Any) -> list[str]:
    """The languages of the theme's search plugin (`plugins: search: lang`; the theme sets it
    from the site language after `on_config`)."""
    plugin = config.plugins.get("material/search")
    return list(plugin.config.lang or []) if plugin else []


def prune(site: Path, langs: Iterable[str]) -> int:
    """Remove unused lunr packs and every source map under `site/assets`, and the comments that
    point at the maps (a missing map would be a 404 in developer tools); return the bytes freed."""
    assets = site / "assets"
    freed = 0
    lunr = assets / "javascripts" / "lunr"
    keep = lunr_files(langs)
    for path in sorted(lunr.rglob("*")) if lunr.is_dir() else []:
        if path.is_file() and path.relative_to(lunr).as_posix() not in keep:
            freed += path.stat().st_size
            path.unlink()
    for path in sorted(assets.rglob("*.map")):
        freed += path.stat().st_size
        path.unlink()
    for path in [*assets.rglob("*.js"), *assets.rglob("*.css")]:
        content = path.read_bytes()
        stripped = SOURCE_MAP_COMMENT.sub(b"\n", content)
        if stripped != content:
            path.write_bytes(stripped)
    for folder in sorted((p for p in lunr.rglob("*") if p.is_dir()), reverse=True) if lunr.is_dir() else []:
        if not any(folder.iterdir()):
            folder.rmdir()
    if lunr.is_dir() and not any(lunr.iterdir()):
        lunr.rmdir()
    return freed


def on_post_build(config: Any, **_: Any) -> None:
    freed = prune(Path(config.site_dir), search_langs(config))
    log.debug("removed %.0f KB of unused lunr packs and source maps", freed / 1024)
