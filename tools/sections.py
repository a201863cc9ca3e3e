"""Generated sections of a hand-written file (the README's catalog tables and support matrix):
the text between two marker comments is replaced by a fresh generation, and `--check` reports
a stale section instead of writing it."""

from __future__ import annotations

from pathlib import Path

from .catalog import write_atomic


def replace_between(text: str, start: str, end: str, body: str) -> str:
    """`text` with what lies between the markers `start` and `end` replaced by `body`."""
    if start not in text or end not in text or text.index(start) > text.index(end):
        raise ValueError(f"the file lacks the markers {start} ... {end}; add them where the section goes")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}{end}{tail}"


def rewrite(path: Path, fresh: str, check: bool, command: str) -> int:
    """Write `fresh` to `path` where it differs (atomically), or with `check` only say whether it
    is stale: exit status 1 when it is."""
    current = path.read_text(encoding="utf-8")
    if check:
        if fresh != current:
            print(f"{path}: a generated section is stale; run `{command}`")
            return 1
        return 0
    if fresh != current:
        write_atomic(path, fresh)
        print(f"rewrote {path}")
    else:
        print(f"{path}: already up to date")
    return 0
