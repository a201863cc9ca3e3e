"""`python -m tools <command>`: one dispatcher for the catalog and site tooling.

Each command lives in its own module exposing `main(argv) -> int`; modules are imported only
when their command runs, so a slow or missing module costs nothing to the others.
"""

from __future__ import annotations

import importlib
import sys

#: command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "import": ("tools.importer", "import the public paper lists into catalog/papers/"),
    "validate": ("tools.validate", "check every paper file (schema and cross-file checks)"),
    "tables": ("tools.tables", "rewrite the README's generated tables"),
    "bib": ("tools.bib", "write catalog.bib"),
    "json": ("tools.export_json", "write catalog.json"),
    "add": ("tools.add", "scaffold a new paper file from an arXiv id or a BibTeX entry"),
    "schema": ("tools.schema", "regenerate catalog/schema.json from catalog/taxonomy.yaml"),
    "ids": ("tools.ids", "give papers without real authors the id their first author gives"),
    "stats": ("tools.stats", "print the catalog's coverage and completeness figures"),
    "support": ("tools.support", "rewrite the README's method x model-family support matrix"),
    "eval": ("tools.eval", "accuracy against cost: methods x budgets x tasks through lmms-eval"),
}

#: commands that live elsewhere now -> what to run instead
MOVED: dict[str, str] = {"bench": "python -m benchmarks"}


def usage() -> str:
    """The list of commands, for `python -m tools` and `--help`."""
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "usage: python -m tools <command> [options]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one command with the remaining arguments; `<command> --help` shows its options."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in MOVED:
        print(f"error: {command!r} moved: run `{MOVED[command]}`", file=sys.stderr)
        return 2
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        print(
            f"error: the {command!r} command is not available: module {module_name} is missing "
            f"(it is written separately; see CONTRIBUTING.md)",
            file=sys.stderr,
        )
        return 2
    from .catalog import CatalogError

    try:
        return int(module.main(rest) or 0)
    except CatalogError as error:
        print(f"{error}\nerror: the catalog has the errors above (`python -m tools validate`); "
              "nothing was written", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
