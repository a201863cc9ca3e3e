"""The wheel holds `reproductions` alone, and it runs from a fresh venv outside the checkout.

`tools/` and `benchmarks/` work only in a checkout, so a wheel that shipped them would put a
top-level `tools` into every user's site-packages. This test builds the wheel from a clean copy
of the tree (a stale `build/` folder would otherwise leak old files into it), installs it with
`--no-deps` into a new venv, and runs a method and one `compress` forward from a folder outside
the repository. The venv borrows the already installed dependencies (torch, transformers, PyYAML)
through a `.pth` line naming their folder, so nothing is downloaded: a `.pth` path line adds a
folder to `sys.path` without running that folder's own `.pth` files, so an editable install of
this project there stays inert. It prints the wheel's size and the time of each step.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what the build must not see: caches, local environments and earlier build outputs
IGNORED = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "public",
           "test-artifacts")
#: run inside the fresh venv, from a folder outside the repository
SCRIPT = r"""
import importlib.util, pathlib, sys
import torch
import reproductions
from reproductions import Tokens, get
from reproductions.hf import compress
from reproductions.hf.tiny import llava

here = pathlib.Path(reproductions.__file__).resolve()
assert here.is_relative_to(pathlib.Path(sys.prefix).resolve()), here
assert importlib.util.find_spec("tools") is None, "a top-level `tools` package is installed"
assert importlib.util.find_spec("benchmarks") is None, "a `benchmarks` package is installed"
assert (here.parent / "py.typed").is_file()

x = torch.randn(1, 37, 8, generator=torch.Generator().manual_seed(0))
out = get("tome", r=5)(Tokens(features=x, layout=(6, 6), special=1))
assert out.features.shape == (1, 37 - 5, 8), out.features.shape

model, inputs = llava()
with torch.no_grad():
    full = model(**inputs).logits
    with compress(model, "random", keep=4) as report:
        short = model(**inputs).logits
# 16 image tokens per image kept down to 4: the sequence the LLM reads is shorter
assert short.shape[1] < full.shape[1], (short.shape, full.shape)
assert torch.isfinite(short[:, -1]).all()
print("ok", report)
"""


def dependency_folders() -> list[str]:
    """The site folders of this interpreter that hold the wheel's dependencies."""
    import torch
    import transformers
    import yaml

    return sorted({str(Path(m.__file__).resolve().parents[1]) for m in (torch, transformers, yaml)})


def build_wheel(out: Path) -> Path:
    """Build the wheel from a clean copy of the tree; return its path."""
    source = out / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*IGNORED))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--wheel-dir", str(out / "dist"), str(source)],
        check=True, capture_output=True, text=True, timeout=120,
    )
    (wheel,) = (out / "dist").glob("*.whl")
    return wheel


@pytest.mark.wheel
def test_wheel_holds_reproductions_only_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    times: dict[str, float] = {}
    start = time.perf_counter()
    wheel = build_wheel(tmp_path)
    times["build"] = time.perf_counter() - start

    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"reproductions", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    assert "reproductions/py.typed" in names
    assert "reproductions/hf/tiny/llava.py" in names  # subpackages are found, not just the top

    start = time.perf_counter()
    env = tmp_path / "venv"
    venv.create(env, with_pip=False, symlinks=True)
    python = env / "bin" / "python"
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip())
    (site / "dependencies.pth").write_text("\n".join(dependency_folders()) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "--quiet", str(wheel)],
        check=True, capture_output=True, text=True, timeout=120,
    )
    times["install"] = time.perf_counter() - start

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    start = time.perf_counter()
    run = subprocess.run(
        [str(python), "-c", SCRIPT], cwd=outside, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    times["run"] = time.perf_counter() - start
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("ok"), run.stdout

    figures = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in times.items())
    print(f"\nwheel {wheel.name}: {wheel.stat().st_size / 1024:.0f} KiB, {len(names)} files; "
          f"{figures}")
