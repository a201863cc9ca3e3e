"""Small fixture catalogs in tmp_path: the taxonomy of the real catalog plus papers we write."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from catalog_fixtures import SECOND, VALID

from tools.catalog import CATALOG, dump_paper


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """A catalog folder with the real taxonomy and two valid papers."""
    root = tmp_path / "catalog"
    (root / "papers").mkdir(parents=True)
    shutil.copy(CATALOG / "taxonomy.yaml", root / "taxonomy.yaml")
    for entry in (VALID, SECOND):
        (root / "papers" / f"{entry['id']}.yaml").write_text(dump_paper(entry), encoding="utf-8")
    return root
