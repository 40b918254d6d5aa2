"""Giving back the pages of a memory-mapped checkpoint once their values are read.

Pages of a file mapping count as resident memory once touched, so reading a
memory-mapped checkpoint would grow the process to the checkpoint's size. After a
chunk has been reduced, its whole pages are dropped from the process with
``madvise(MADV_DONTNEED)``; the file's page cache keeps them, and a later read
(a tied tensor) maps them again from the file. Only pages inside a read-only use
of a private mapping of the checkpoint file itself are released (found in
``/proc/self/maps``); elsewhere (not Linux, anonymous memory) this does nothing.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

import numpy as np

MADV_DONTNEED = 4


def file_mappings(path: Path) -> list[tuple[int, int]]:
    """[start, end) addresses where this process maps ``path``."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    target = os.path.realpath(path)
    ranges = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == target:
            start, end = (int(a, 16) for a in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


class PageReleaser:
    """Drops the pages under a numpy array when they lie in one of the given mappings."""

    def __init__(self, ranges: list[tuple[int, int]]):
        self.ranges = ranges
        self._madvise = None
        if ranges:
            libc = ctypes.CDLL(None, use_errno=True)
            self._madvise = libc.madvise
            self._madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)

    def release(self, arr: np.ndarray) -> None:
        if self._madvise is None or arr.nbytes == 0:
            return
        lo = arr.ctypes.data
        hi = lo + arr.nbytes
        page = mmap.PAGESIZE
        start, end = -(-lo // page) * page, hi // page * page  # whole pages only
        for a, b in self.ranges:
            if a <= start and end <= b and end > start:
                self._madvise(start, end - start, MADV_DONTNEED)
                return
