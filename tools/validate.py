"""`python -m tools validate`: check every paper file; one line per problem, `file:line: field:
found ...; expected ...`. Exit status 1 on errors, 0 when there are only warnings. Never writes.

Checks: UTF-8, YAML syntax, duplicate keys, the JSON Schema (generated from taxonomy.yaml, formats
checked with a FormatChecker), the content rules of `rules.py` (authors, one-line values, dates,
method classification, stale checks), file name = id, duplicates across files (arXiv id, DOI, normalised
title: errors; code URL: a warning, since one repository can serve a family of papers),
sub-mechanisms whose mechanism is listed, and the registry link both ways (`reproductions:` names
exist; every registered method's `paper` exists and lists it).
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from . import rules, side_files
from .catalog import CATALOG, ROOT, load_taxonomy
from .ids import breaks_rule, rule_id
from .importer import normalised_title
from .paper_file import Loaded, Report, found, load_file, show
from .schema import build_schema

FORMATS = FormatChecker()


@FORMATS.checks("uri")
def _is_url(value: object) -> bool:
    """An absolute http(s) URL with a host and no spaces."""
    if not isinstance(value, str):
        return True
    parsed = urlparse(value)
    return parsed.scheme in ("http", "https") and "." in parsed.netloc and " " not in value


EXPECTED_FORMAT = {
    "uri": "an absolute http(s) URL",
}
REQUIRED_HINTS = {
    "checked": 'the record of where and when the facts were checked: checked: {date: "2026-11-30", '
    'sources: [https://arxiv.org/abs/..., ...]}',
}
EXPECTED_PATTERN = {
    "arxiv": "an arXiv id like 2403.06764 (no prefix, no version)",
    "doi": "a DOI like 10.1109/CVPR52733.2024.01234",
    "id": "lowercase family name + year + title word, like chen2024image",
}




def _schema_errors(loaded: Loaded, validator: Draft202012Validator, report: Report) -> None:
    """Every schema error of one paper, one line each."""
    for error in sorted(validator.iter_errors(loaded.paper), key=lambda e: list(map(str, e.path))):
        for leaf in _leaves(error):
            _schema_line(loaded, leaf, report)


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    """The errors worth showing: for `anyOf` (a nullable field), those of the non-null branch."""
    if error.validator == "anyOf" and error.context:
        branch = [e for e in error.context if e.relative_schema_path[0] == 0]
        for sub in branch or error.context:
            yield from _leaves(sub)
    else:
        yield error


def _schema_line(loaded: Loaded, error: ValidationError, report: Report) -> None:
    path = tuple(error.absolute_path)
    name = ".".join(str(part) for part in path if not isinstance(part, int)) or "file"
    line = loaded.line(*path)
    kind, schema, value = error.validator, error.validator_value, error.instance
    if kind == "additionalProperties":
        allowed = ", ".join(error.schema.get("properties", {}))
        for key in sorted(set(value) - set(error.schema.get("properties", {}))):
            report.error(loaded.shown, loaded.line(*path, key), ".".join([*map(str, path), key]) if path else key,
                         f"unknown key {found(key)}", f"one of: {allowed}")
    elif kind == "required":
        if not path:  # the top mapping: its first key's line, not the comment line above it
            line = min((number for keys, number in loaded.lines.items() if len(keys) == 1), default=line)
        for key in schema:
            if key not in value:
                report.error(loaded.shown, line, ".".join([*map(str, path), key]) if path else key,
                             "no such key", REQUIRED_HINTS.get(key, "the key to be present (null or [] where unknown)"))
    elif kind == "enum":
        report.error(loaded.shown, line, name, found(value), f"one of: {', '.join(map(str, schema))}")
    elif kind == "type" and name in ("year", "month") and isinstance(value, (datetime.date, str, float)):
        return  # rules.check says what to write instead
    elif kind == "maxLength":
        report.error(loaded.shown, line, name, f"{len(value)} characters",
                     f"at most {schema}: every visitor downloads them with the search index; "
                     "link to a page for more")
    elif kind == "type" and name in ("arxiv", "doi") and isinstance(value, float | int):
        raw = loaded.text_at(line).split(":", 1)[-1].strip()
        report.error(loaded.shown, line, name, f"{raw} (YAML reads it as the number {value})",
                     f'the id in quotes: {name}: "{raw}"')
    elif kind in ("minimum", "maximum"):
        low, high = error.schema.get("minimum"), error.schema.get("maximum")
        report.error(loaded.shown, line, name, found(value), f"a value from {low} to {high}")
    elif kind == "type":
        kinds = schema if isinstance(schema, list) else [schema]
        report.error(loaded.shown, line, name, f"{found(value)} ({type(value).__name__})",
                     f"a value of type {' or '.join(kinds)}")
    elif kind == "format":
        report.error(loaded.shown, line, name, found(value), EXPECTED_FORMAT.get(schema, schema))
    elif kind == "pattern":
        field_name = next((str(p) for p in reversed(path) if not isinstance(p, int)), name)
        expected = EXPECTED_PATTERN.get(field_name, f"a value matching {schema}")
        report.error(loaded.shown, line, name, found(value), expected)
    elif kind == "uniqueItems":
        report.error(loaded.shown, line, name, found(value), "each value once")
    else:
        report.error(loaded.shown, line, name, found(value), error.message)


def _cross_file(papers: list[Loaded], taxonomy: dict[str, Any], report: Report) -> None:
    """File name = id, duplicates, sub-mechanism parents, and warnings for gaps."""
    parents = {
        sub: mechanism
        for mechanism, entry in taxonomy["mechanisms"].items()
        for sub in entry["submechanisms"]
    }
    owners: dict[tuple[str, str], Loaded] = {}
    for loaded in papers:
        paper = loaded.paper
        if paper.get("id") != loaded.path.stem:
            report.error(loaded.shown, loaded.line("id"), "id", found(paper.get("id")),
                         f"{found(loaded.path.stem)} (the file name without .yaml)")
        links = paper.get("links") if isinstance(paper.get("links"), dict) else {}
        keys = {
            "arxiv": paper.get("arxiv"),
            "doi": (paper.get("doi") or "").lower() or None,
            "title": _normalised(paper.get("title")),
            "links.code": _normalised_url(links.get("code")),
        }
        for key, value in keys.items():
            if not value:
                continue
            first = owners.setdefault((key, value), loaded)
            if first is loaded:
                continue
            where = ("links", "code") if key == "links.code" else (key,)
            shown_value = found(links.get("code") if key == "links.code" else paper.get(key))
            if key == "links.code":
                report.warn(loaded.shown, loaded.line(*where), key, shown_value,
                            f"a repository of its own ({first.shown} has it too; fine for a family "
                            "of papers sharing one repository)")
            else:
                report.error(loaded.shown, loaded.line(*where), key, shown_value,
                             f"a paper in one file only ({first.shown} has the same {key}): merge them")
        mechanisms = paper.get("mechanisms")
        if not isinstance(mechanisms, list):
            continue  # the schema error says it; the checks below need a list
        submechanisms = paper.get("submechanisms")
        for index, sub in enumerate(submechanisms if isinstance(submechanisms, list) else []):
            parent = parents.get(sub) if isinstance(sub, str) else None
            if parent and parent not in mechanisms:
                report.error(loaded.shown, loaded.line("submechanisms", index), "submechanisms",
                             found(sub), f"its mechanism {found(parent)} listed under mechanisms")
        if breaks_rule(paper):
            expected = rule_id(paper)
            report.warn(loaded.shown, loaded.line("id"), "id", found(paper.get("id")),
                        f"{found(expected)} by the id rule (or it with a letter suffix)")


def _near_duplicates(papers: list[Loaded], report: Report) -> None:
    """A warning for a paper without an arXiv id whose title is a long prefix of another's (a
    list that cut a title short, a proceedings version): the same paper in two files?"""
    titles = [(loaded, _normalised(loaded.paper.get("title")) or "") for loaded in papers]
    for loaded, title in titles:
        if loaded.paper.get("arxiv") or len(title) < 40:
            continue
        for other, other_title in titles:
            if other is not loaded and other_title != title and other_title.startswith(title):
                report.warn(loaded.shown, loaded.line("title"), "title", found(loaded.paper.get("title")),
                            f"a paper of its own: {other.shown} has a title that begins the same way "
                            "(merge the two files if it is the same paper)")
                break


def _normalised(title: Any) -> str | None:
    return normalised_title(title) if isinstance(title, str) else None


def _normalised_url(url: Any) -> str | None:
    if not isinstance(url, str):
        return None
    url = url.lower().split("?")[0].split("#")[0].rstrip("/")
    return url.removesuffix(".git").split("/tree/")[0]


def _registry(papers: list[Loaded], report: Report, exact: bool = False) -> None:
    """`reproductions:` names exist in the registry; each registered method's paper lists it.

    The registry is read from source (`registry_scan.scan`, no torch); `exact` imports it
    instead (`--import-registry`), which also catches modules that fail to import."""
    from .registry_scan import imported, scan

    try:
        registered = imported() if exact else scan()
    except Exception as error:  # a broken method module must not hide the catalog's own errors
        report.error("reproductions/registry.py", 1, "reproductions",
                     f"the registry failed to load ({type(error).__name__}: {error})",
                     "every method module to import cleanly")
        return
    by_id = {loaded.paper.get("id"): loaded for loaded in papers}
    for loaded in papers:
        names = loaded.paper.get("reproductions")
        if not isinstance(names, list):
            continue
        for index, name in enumerate(names):
            if name not in registered:
                report.error(loaded.shown, loaded.line("reproductions", index), "reproductions",
                             found(name), f"a registered method name, one of: {', '.join(registered)}")
            elif registered[name].paper != loaded.paper.get("id"):
                report.error(loaded.shown, loaded.line("reproductions", index), "reproductions",
                             f"{found(name)}, whose class says paper = {found(registered[name].paper)}",
                             f"paper = {found(loaded.paper.get('id'))} on {registered[name].cls}")
    for name, method in registered.items():
        if method.paper is None:
            continue
        if method.paper not in by_id:
            report.error(method.file, method.line, "paper", found(method.paper),
                         f"the id of a file under catalog/papers/ (method {name!r})")
        elif name not in (by_id[method.paper].paper.get("reproductions") or []):
            loaded = by_id[method.paper]
            report.error(loaded.shown, loaded.line("reproductions"), "reproductions",
                         found(loaded.paper.get("reproductions")),
                         f"{name!r} listed ({method.cls} is registered with paper = {found(method.paper)})")


def link_registry(root: Path = CATALOG) -> list[str]:
    """Add each registered method's name to the `reproductions:` of the paper it names (and its
    stage where the paper gives none). Only on request (`--link-registry`); returns what changed."""
    from reproductions.registry import methods

    from .catalog import dump_paper, write_atomic

    changed = []
    for name, cls in methods().items():
        path = root / "papers" / f"{cls.paper}.yaml"
        if cls.paper is None or not path.exists():
            continue
        paper = yaml.safe_load(path.read_text(encoding="utf-8"))
        if name in (paper.get("reproductions") or []):
            continue
        paper["reproductions"] = sorted({*(paper.get("reproductions") or []), name})
        if not paper.get("stage") and getattr(cls, "stage", None):
            paper["stage"] = [cls.stage]
        write_atomic(path, dump_paper(paper))
        changed.append(f"{show(path)}: reproductions += {name}")
    return changed


def validate(
    root: Path = CATALOG,
    registry: bool = True,
    exact_registry: bool = False,
    today: datetime.date | None = None,
) -> Report:
    """Every check over the catalog under `root` (`today` dates the staleness of checks)."""
    report = Report()
    taxonomy = load_taxonomy(root)
    validator = Draft202012Validator(build_schema(taxonomy), format_checker=FORMATS)
    folder = root / "papers"
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.is_file() and path.suffix in (".yml", ".json") or path.name.endswith(".yaml.txt"):
            report.error(show(path), 1, "file", f"the extension {path.suffix!r}", "<id>.yaml")
    papers: list[Loaded] = []
    for path in sorted(folder.glob("*.yaml")):
        loaded = load_file(path, report)
        if loaded is None:
            continue
        before = len(report.errors)
        _schema_errors(loaded, validator, report)
        rules.check(loaded, report, today or datetime.date.today())
        if len(report.errors) == before or isinstance(loaded.paper, dict):
            papers.append(loaded)
    _cross_file(papers, taxonomy, report)
    _near_duplicates(papers, report)
    side_files.check(root, papers, report)
    if registry:
        _registry(papers, report, exact=exact_registry)
    report.errors.sort(key=_position)
    report.warnings.sort(key=_position)
    report.papers = sorted((loaded.paper for loaded in papers), key=lambda paper: str(paper.get("id")))
    return report


def _position(line: str) -> tuple[int, str, int]:
    """Sort key: paper files first, then by file and line."""
    where, number = line.split(":", 2)[:2]
    return (0 if where.endswith(".yaml") else 1, where, int(number) if number.isdigit() else 0)


def changed_since_main(root: Path) -> tuple[str, set[Path]] | None:
    """(the merge base with main, the files changed since it: committed, staged, unstaged or
    untracked), so a contributor sees the warnings of their own files first; None outside a git
    checkout or without a main branch to compare with."""

    def git(*args: str) -> str | None:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    base = next(filter(None, (git("merge-base", "HEAD", ref) for ref in ("origin/main", "main"))), None)
    if top is None or base is None:
        return None
    names = (git("diff", "--name-only", base.strip()) or "") + (git("ls-files", "--others", "--exclude-standard", "--full-name", ":/") or "")
    top_path = Path(top.strip())
    return base.strip()[:9], {(top_path / name).resolve() for name in names.splitlines() if name}


def _warning_file(line: str) -> Path:
    """The file a warning line is about (its `file:line:` prefix, relative to the repository)."""
    name = Path(line.split(":", 1)[0])
    return (name if name.is_absolute() else ROOT / name).resolve()


def main(argv: list[str] | None = None) -> int:
    """Validate the catalog; print errors, then warnings (`--quiet` hides warnings)."""
    parser = argparse.ArgumentParser(prog="python -m tools validate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=CATALOG, help="catalog folder (default: catalog/)")
    parser.add_argument("--no-registry", action="store_true",
                        help="skip the registry checks (skipped anyway for a --root other than "
                        "the repository's catalog, unless --registry)")
    parser.add_argument("--registry", action="store_true",
                        help="check the registry against a --root other than catalog/")
    parser.add_argument("--import-registry", action="store_true",
                        help="import the registry (torch: seconds) instead of reading it from source")
    parser.add_argument("--quiet", action="store_true", help="print errors only")
    parser.add_argument("--all-warnings", action="store_true",
                        help="print every warning (default: those of the files changed since the "
                        "merge base with main, and a count of the others)")
    parser.add_argument("--link-registry", action="store_true",
                        help="first write each registered method's name into its paper's "
                        "reproductions: (the one option that changes files)")
    args = parser.parse_args(argv)
    if args.link_registry:
        for line in link_registry(args.root):
            print(f"linked: {line}")
    start = time.perf_counter()
    own_catalog = args.root.resolve() == CATALOG.resolve()
    registry = (own_catalog or args.registry) and not args.no_registry
    report = validate(args.root, registry=registry, exact_registry=args.import_registry)
    for line in report.errors:
        print(line)
    if not args.quiet:
        changed = None if args.all_warnings else changed_since_main(args.root)
        shown = [w for w in report.warnings if changed is None or _warning_file(w) in changed[1]]
        for line in shown:
            print(f"warning: {line}")
        if changed is not None and len(shown) < len(report.warnings):
            print(f"({len(report.warnings) - len(shown)} more warnings in files unchanged since {changed[0]}, "
                  "the merge base with main: --all-warnings prints them)")
    count = len(list((args.root / "papers").glob("*.yaml")))
    print(
        f"{count} papers: {len(report.errors)} errors, {len(report.warnings)} warnings "
        f"({time.perf_counter() - start:.2f} s)",
        file=sys.stderr,
    )
    return 1 if report.errors else 0
