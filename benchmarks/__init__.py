"""The benchmark program, run from a checkout: `python -m benchmarks` (see `benchmarks/README.md`).

The constants every part shares live here, where importing them costs no torch (the plots
read them too).
"""

from __future__ import annotations

from pathlib import Path

#: the results format (`benchmarks/README.md`); fields may be added, never renamed
FORMAT = 1
#: where runs are committed; the site draws its tables and plots from the JSON here
RESULTS = Path(__file__).resolve().parent / "results"
#: stages whose methods shrink the prompt before the LLM sees it
PRE_LLM = ("encoder", "projector")


def write_atomic(path: Path, content: bytes) -> None:
    """Write `content` to `path` through a temporary file and a rename, so that an interrupted
    run leaves the old file or the new one, never half of one."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
