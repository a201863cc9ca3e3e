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


def test_site_url_is_the_pages_address_in_ci_and_unset_locally(monkeypatch) -> None:
    """Canonical links and the sitemap name the published address, never localhost: the Pages
    workflow passes it, `make site` leaves it unset, and `mkdocs serve` sets its own."""
    from mkdocs.config import load_config

    monkeypatch.delenv("SITE_URL", raising=False)
    assert load_config(str(ROOT / "mkdocs.yml"))["site_url"] is None
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "pages.yml").read_text(encoding="utf-8"))
    address = workflow["jobs"]["deploy"]["env"]["SITE_URL"]
    assert address.startswith("https://${{ github.repository_owner }}.github.io/")
    monkeypatch.setenv("SITE_URL", "https://example.github.io/project/")
    assert load_config(str(ROOT / "mkdocs.yml"))["site_url"] == "https://example.github.io/project/"


class _MkdocsLoader(yaml.SafeLoader):
    """mkdocs.yml uses `!ENV`; read it as its default."""


_MkdocsLoader.add_constructor("!ENV", lambda loader, node: loader.construct_sequence(node)[-1])
