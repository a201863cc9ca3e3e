"""`python -m benchmarks [command] [options]`: the one entry point of the benchmark program.

Without a command it runs `generate` (`make bench`); the other commands are the focused
measurements, each a module with `main(argv) -> int`, imported only when it runs.
"""

from __future__ import annotations

import importlib
import sys

#: command -> (module, one-line help); None is the default command
COMMANDS: dict[str | None, tuple[str, str]] = {
    None: ("benchmarks.generate", "methods through compress + generate on every family (JSON under results/)"),
    "methods": ("benchmarks.methods", "each method's own call on realistic shapes"),
    "prefill": ("benchmarks.prefill", "prefill inside a LLaVA-1.5 model through compress"),
    "generate": ("benchmarks.generate", "the same as no command"),
    "sweep": ("benchmarks.sweep", "the former proxy: every method on a layer-by-layer decoder copy"),
    "plot": ("benchmarks.plots", "draw the plots of one result JSON"),
}


def usage() -> str:
    """The commands, for `python -m benchmarks --help`."""
    lines = [f"  {name or '(none)':<9} {text}" for name, (_, text) in COMMANDS.items()]
    return (
        "usage: python -m benchmarks [command] [options]   (`<command> --help`: its options)\n\n"
        "commands:\n" + "\n".join(lines)
    )


def main(argv: list[str] | None = None) -> int:
    """Run one command with the remaining arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"], ["help"]):
        print(usage())
        return 0
    command = argv[0] if argv and argv[0] in COMMANDS else None
    rest = argv[1:] if command else argv
    if argv and not argv[0].startswith("-") and command is None:
        print(f"error: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
