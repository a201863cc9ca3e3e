"""The README's first Python example runs and does what its comments say."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_use_a_method_example_runs():
    block = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)[0]
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    out = scope["out"]
    assert tuple(out.features.shape) == (1, 64, 1024)
    assert tuple(out.source.shape) == (1, 577) and tuple(out.positions.shape) == (1, 64)
    assert float(out.sizes.sum()) == 577  # VisionZip's contextual tokens absorb every pruned one
