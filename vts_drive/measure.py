"""Honest wall-clock and memory measurement for pipeline stages.

CUDA work is asynchronous, so a stage's clock is read only after
synchronising the device. Peak memory is what a block allocated beyond the level
when it began: on GPU the CUDA allocator's peak (its statistics reset per block);
on CPU the bytes handed out by the C heap, which torch's CPU tensors come from
(glibc's mallinfo2), sampled by a background thread since torch's CPU allocator
keeps no peak. Not the resident set: pages that one block freed stay resident, so
the next block reuses them without a rise, and whatever ran first would be charged
for all. Where libc has no mallinfo2 (not glibc 2.33+), the resident set is used.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class StageTimer:
    """Accumulates milliseconds per named stage; `with timer.stage("vision"): ...`."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = device
        self.ms: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.ms[name] += (time.perf_counter() - start) * 1000.0

    def as_dict(self) -> dict[str, float]:
        return {name: round(value, 3) for name, value in self.ms.items()}


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_BYTES


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_mallinfo2 = getattr(ctypes.CDLL(None), "mallinfo2", None)
if _mallinfo2 is not None:
    _mallinfo2.restype = _MallInfo2


def heap_bytes() -> int:
    """Bytes the C heap has handed out and not yet taken back (in its arenas and mmapped
    chunks); the resident set where libc has no mallinfo2."""
    if _mallinfo2 is None:
        return resident_bytes()
    info = _mallinfo2()
    return info.uordblks + info.hblkhd


class PeakMemory:
    """`with PeakMemory(device) as peak: ...; peak.mb` is the peak extra memory used inside the block."""

    def __init__(self, device: torch.device | str = "cpu", interval_s: float = 0.002) -> None:
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.mb = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = heap_bytes()
            self._peak = self._base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, heap_bytes())
            time.sleep(self.interval_s)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, heap_bytes())
        self.mb = max(0.0, (peak - self._base) / 2**20)
