"""Read buffers, reused from one tensor to the next.

A fresh buffer of a few megabytes is a new memory mapping: the first write to each of its 4 KiB
pages faults, and the pages go back to the OS when it is freed. Reading a model of many
medium-sized tensors that way spent more time in page faults than in copying the values.
Buffers of at least ``MIN_BYTES`` are therefore given back when a read is over, and the next
read takes one that fits (sizes are rounded up to a power of two, so that one fits many reads)
provided nothing refers to it any more: a caller may still hold the last chunk a reader gave it
(a ``for`` loop's variable does, while the reader finishes), and a buffer with a live view is
never handed out again. At most ``KEEP`` buffers are kept.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

MIN_BYTES = 1 << 16  # smaller buffers come from malloc's own free lists, without page faults
MAX_BYTES = 1 << 23  # larger ones are not kept
KEEP = 4  # buffers kept at most (about one per worker reading, and one to spare)
_kept: list[np.ndarray] = []  # newest last
_lock = threading.Lock()


def take(nbytes: int) -> np.ndarray:
    """A uint8 buffer of at least ``nbytes`` bytes: a kept one that nothing refers to, or a new one."""
    if nbytes < MIN_BYTES:
        return np.empty(nbytes, dtype=np.uint8)
    with _lock:
        free = [i for i in range(len(_kept)) if _kept[i].size >= nbytes and _unused(i)]
        if free:
            return _kept.pop(min(free, key=lambda i: _kept[i].size))
    return np.empty(1 << (nbytes - 1).bit_length(), dtype=np.uint8)


def _unused(i: int) -> bool:
    """Whether nothing but this module refers to the kept buffer ``i`` (no view of it is alive), by
    CPython's reference count; where there is none, no buffer is reused."""
    count = getattr(sys, "getrefcount", None)
    return count is not None and count(_kept[i]) == 2  # the list's reference and getrefcount's argument


def give(buf: np.ndarray) -> None:
    """Keep a buffer from :func:`take` for a later read (see the module docstring)."""
    if MIN_BYTES <= buf.size <= MAX_BYTES:
        with _lock:
            _kept.append(buf)
            del _kept[:-KEEP]
