"""The Pages workflow publishes the strict build on pushes to main."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_pages_workflow_deploys_main_with_the_strict_build() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "pages.yml").read_text(encoding="utf-8"))
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert triggers["push"]["branches"] == ["main"]
    assert workflow["permissions"]["contents"] == "write"
    steps = workflow["jobs"]["deploy"]["steps"]
    commands = " ".join(step.get("run", "") for step in steps)
    assert "mkdocs gh-deploy --force" in commands
    assert any(step.get("with", {}).get("fetch-depth") == 0 for step in steps)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_MkdocsLoader)
    assert config["strict"] is True and config["theme"]["font"] is False


class _MkdocsLoader(yaml.SafeLoader):
    """mkdocs.yml uses `!ENV`; read it as its default."""


_MkdocsLoader.add_constructor("!ENV", lambda loader, node: loader.construct_sequence(node)[-1])
