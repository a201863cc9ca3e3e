"""One paper file read with the line of every key, and the `Report` every check writes to.

`validate` reads each paper file with `load_file`; the content rules (`rules.py`) and the side-file
checks (`side_files.py`) report through `Report` and point at lines with `Loaded.line`. Every
problem is one line: `file:line: field: found ...; expected ...`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .catalog import ROOT, Paper, normalise

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Report:
    """Errors and warnings, each one line."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: every paper parsed, sorted by id: what `load_papers` returns when there is no error, so
    #: a caller that validates first need not read the catalog again
    papers: list[Paper] = field(default_factory=list)

    def error(self, where: str, line: int, field_name: str, found: str, expected: str) -> None:
        self.errors.append(f"{where}:{line}: {field_name}: found {found}; expected {expected}")

    def warn(self, where: str, line: int, field_name: str, found: str, expected: str) -> None:
        self.warnings.append(f"{where}:{line}: {field_name}: found {found}; expected {expected}")


@dataclass
class Loaded:
    """One parsed paper file and the line of every field in it."""

    path: Path
    shown: str
    paper: Paper
    lines: dict[tuple, int]

    def text_at(self, line: int) -> str:
        """The text of line `line` of the file."""
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else ""

    def line(self, *keys: Any) -> int:
        """The line of the deepest known key on this path (1 where none is known)."""
        while keys:
            if keys in self.lines:
                return self.lines[keys]
            keys = keys[:-1]
        return 1


def show(path: Path) -> str:
    """A path as errors print it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def found(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, Path) else str(value)


def line_map(node: yaml.Node, report: Report, shown: str, prefix: tuple = ()) -> dict[tuple, int]:
    """Line of every key and list item below `node`; duplicate keys are reported."""
    lines: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            path = (*prefix, key)
            if key in seen:
                report.error(shown, key_node.start_mark.line + 1, ".".join(map(str, path)),
                             "a second value for this key", "each key once")
            seen.add(key)
            lines[path] = key_node.start_mark.line + 1
            lines.update(line_map(value_node, report, shown, path))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*prefix, index)] = item.start_mark.line + 1
            lines.update(line_map(item, report, shown, (*prefix, index)))
    return lines


def load_file(path: Path, report: Report) -> Loaded | None:
    """Read and parse one paper file, reporting encoding, syntax and shape problems."""
    shown = show(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        report.error(shown, line, "file", f"byte 0x{raw[error.start]:02x} that is not UTF-8",
                     "a UTF-8 text file (save it as UTF-8)")
        return None
    if text.startswith("\ufeff"):
        report.error(shown, 1, "file", "a byte-order mark (U+FEFF) at the start",
                     "UTF-8 without a BOM (save it without the byte-order mark)")
        return None
    if "\r\n" in text:
        report.warn(shown, text[: text.index("\r\n")].count("\n") + 1, "file", "Windows line endings (CRLF)",
                    "LF line endings, as every generated file has (git config core.autocrlf input)")
    try:
        node = yaml.compose(text, Loader=Loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        lines = text.splitlines()
        if 0 < line <= len(lines) and "\t" in lines[line - 1]:
            report.error(shown, line, "file", "a tab character", "spaces: YAML does not allow tabs for "
                         "indentation (replace the tab with spaces)")
            return None
        report.error(shown, line, "file", f"malformed YAML ({problem})",
                     "valid YAML, like the other files under catalog/papers/")
        return None
    if node is None:
        report.error(shown, 1, "file", "an empty file", "a paper: copy an existing file or run "
                     "`python -m tools add <arXiv id>`")
        return None
    if not isinstance(node, yaml.MappingNode):
        report.error(shown, node.start_mark.line + 1, "file", f"a YAML {node.id}",
                     "a mapping of field: value")
        return None
    lines = line_map(node, report, shown)
    paper = normalise(yaml.load(text, Loader=Loader))
    return Loaded(path, shown, paper, lines)
