"""The generated parts of the contributing page: the validator's examples, the schema's fields,
and CONTRIBUTING.md made fit for a docs page."""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .markup import fence, text


def validator_section(examples: Iterable[tuple[str, str, list[str]]]) -> str:
    """Each broken example: what is wrong, the broken lines, and the validator's exact output."""
    out = []
    for problem, lines, messages in examples:
        out.append(
            f"### {text(problem)}\n\n" + fence(lines, "yaml") + "\nprints\n\n"
            + fence("\n".join(messages) or "(nothing: the validator accepts it)", "text")
        )
    return "\n".join(out)


def schema_fields(schema: Mapping[str, Any]) -> str:
    """A table of a paper file's fields from `catalog/schema.json`: type, allowed values, meaning."""
    required = set(schema.get("required") or [])
    rows = []
    for name, spec in (schema.get("properties") or {}).items():
        rows.append(
            f"<tr><td><code>{text(name)}</code>{' (required)' if name in required else ''}</td>"
            f"<td>{text(_schema_type(spec))}</td><td>{text(spec.get('description', ''))}</td></tr>"
        )
    return (
        '<table data-table="schema-fields"><thead><tr><th>Field</th><th>Type / allowed values</th>'
        "<th>Meaning</th></tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>\n"
    )


def _schema_type(spec: Mapping[str, Any]) -> str:
    if "enum" in spec:
        return " | ".join(json.dumps(v) for v in spec["enum"])
    for key in ("anyOf", "oneOf"):
        if key in spec:
            return " or ".join(_schema_type(option) for option in spec[key])
    kind = spec.get("type", "")
    kind = " | ".join(kind) if isinstance(kind, list) else str(kind)
    if kind == "array" and isinstance(spec.get("items"), Mapping):
        return f"list of {_schema_type(spec['items'])}"
    if kind == "object" and spec.get("properties"):
        return "{" + ", ".join(spec["properties"]) + "}"
    if spec.get("format"):
        return f"{kind} ({spec['format']})"
    if spec.get("pattern"):
        return f"{kind} matching {spec['pattern']}"
    return kind or ("null" if spec.get("const", 0) is None else "")


def include_markdown(markdown: str, repo_url: str | None) -> str:
    """A repository markdown file made fit for a docs page: its title dropped (the page has one),
    and links to repository files pointed at the repository (or shown as code) so none breaks."""

    def relink(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        if re.match(r"^(https?:|mailto:|#)", target):
            return match.group(0)
        if repo_url:
            path = posixpath.normpath(target).lstrip("/")
            return f"[{label}]({repo_url.rstrip('/')}/blob/main/{path})"
        return f"{label} (`{target}`)"

    source = markdown.splitlines()
    while source and not source[0].strip():
        source.pop(0)
    if source and source[0].startswith("# "):  # the page has its own title
        source.pop(0)
    lines = []
    in_fence = False
    for line in source:
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        if not in_fence:
            line = re.sub(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)", relink, line)
        lines.append(line)
    return "\n".join(lines) + "\n"
