"""`timing.steady_allocator`: CPU timings run with freed memory kept in the process, so a
forward does not fault in again the pages of the buffers the one before it freed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: faults of a 16 MB, a 24 MB and again a 16 MB tensor, each made, filled and freed; with
#: glibc's defaults the third faults its ~3,900 pages in again
PROBE = """
import resource, torch
from benchmarks.timing import steady_allocator
print(steady_allocator())
def faults(n):
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(n)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
print(*[faults(n) for n in (4_000_000, 6_000_000, 4_000_000)])
"""


def test_a_freed_buffer_is_reused_without_page_faults():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
    setting, faults = out.stdout.strip().splitlines()
    assert setting == "glibc, freed memory kept"
    first, _, again = (int(f) for f in faults.split())
    assert first > 1000 and again < 100, faults  # the first touch faults; the reuse does not
