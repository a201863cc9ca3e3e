"""Clocks, median / p95 summaries and peak memory: the only measuring instruments of the bench."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch


class Clock:
    """Timing of a callable: CUDA events on a GPU; on a CPU wall-clock time (perf_counter) or,
    with `kind="process"`, this process's CPU time, which other work on a shared machine barely
    moves (with one thread it is the compute time of the call)."""

    def __init__(self, device: torch.device, kind: str = "wall") -> None:
        self.cuda = device.type == "cuda"
        self.kind = "cuda_events" if self.cuda else kind
        self.now = time.process_time if kind == "process" else time.perf_counter

    def time(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000.0, result
        begin = self.now()
        result = fn()
        return self.now() - begin, result


def summary(samples: Sequence[float]) -> dict[str, Any] | None:
    """Median, p95 (nearest rank) and the samples themselves; None for no samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {"median": statistics.median(ordered), "p95": p95, "samples": list(samples)}


#: glibc's mallopt parameters, and its largest mmap threshold on 64-bit systems
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, MMAP_MAX = -1, -2, -3, 32 * 1024 * 1024


def steady_allocator() -> str:
    """Keep freed CPU memory in the process for the next forward (glibc: blocks up to 32 MiB
    from the heap, which grows 64 MiB at a time and is never trimmed), as CUDA's caching
    allocator keeps GPU memory.

    Why: with glibc's defaults a freed buffer can go back to the system, and the next forward
    faults its pages in again, a cost that grows with the rows. On the families' runs it made the
    uncompressed prefill ~4% slower than its compute, lifting every efficiency, and the reruns
    of `direct.py` (which find the memory already mapped) ~2.5% faster than the runs they
    measure, lowering every overhead. Returns the setting, for the results' `settings`."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        settings = ((M_MMAP_THRESHOLD, MMAP_MAX), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, 2 * MMAP_MAX))
        ok = all(libc.mallopt(param, value) for param, value in settings)
    except (OSError, AttributeError):
        ok = False
    return "glibc, freed memory kept" if ok else "system default"


class PeakMemory:
    """Peak memory growth over a block: CUDA allocated bytes, or the CPU process's peak RSS.

    On CPU, glibc keeps freed blocks resident, so the peak resident set only grows with new
    allocations when freed memory goes back to the system: inside the block, every allocation
    above 64 KiB is its own mmap (returned on free), and the peak RSS is reset on entry
    (/proc/self/clear_refs). Used on an extra, untimed run; on exit the timings' setting
    (`steady_allocator`) is back.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind: str | None = "cuda_allocated" if device.type == "cuda" else "cpu_rss"
        self.start = 0
        self.libc: Any = None

    def __enter__(self) -> PeakMemory:
        if self.kind == "cuda_allocated":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            return self
        try:
            import ctypes

            self.libc = ctypes.CDLL("libc.so.6")
            self.libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
            self.libc.malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.start = _status_kib("VmRSS") * 1024
        except (OSError, AttributeError):
            self.kind = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.libc is not None:  # glibc's largest threshold, as `steady_allocator` sets it
            self.libc.mallopt(M_MMAP_THRESHOLD, MMAP_MAX)

    def peak(self) -> int | None:
        if self.kind == "cuda_allocated":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated(self.device) - self.start
        if self.kind == "cpu_rss":
            return max(0, _status_kib("VmHWM") * 1024 - self.start)
        return None


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {key}")



