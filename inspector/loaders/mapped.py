"""Values stored contiguously in a file, read through a memory mapping made when first needed.

:class:`MappedRange` maps only the byte range it is asked for, at the first chunk,
and hands out views of the mapping (no copy). Once the consumer asks for the next
chunk, the pages of the previous one are given back with ``madvise(MADV_DONTNEED)``
(the page cache keeps them), so reading a tensor of any size keeps about one chunk
resident.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import CorruptCheckpoint


@dataclass(frozen=True)
class MappedRange:
    """Range reader (see TensorRecord.range_chunks) over values stored from byte ``begin`` of ``path``."""

    path: Path
    begin: int
    dtype: np.dtype

    def __call__(self, start: int, stop: int, max_elems: int) -> Iterator[np.ndarray]:
        if stop <= start:
            return
        item = self.dtype.itemsize
        lo, hi = self.begin + start * item, self.begin + stop * item
        base = lo - lo % mmap.ALLOCATIONGRANULARITY
        try:
            with open(self.path, "rb") as f:
                if f.seek(0, 2) < hi:
                    raise CorruptCheckpoint(f"{self.path}: file ended before byte {hi} (was it truncated?)")
                mm = mmap.mmap(f.fileno(), hi - base, access=mmap.ACCESS_READ, offset=base)
        except OSError as e:
            raise CorruptCheckpoint(f"{self.path}: cannot map ({e.strerror or e})") from None
        yield from _views(mm, lo - base, stop - start, self.dtype, max_elems)


def _views(mm: mmap.mmap, offset: int, numel: int, dtype: np.dtype, max_elems: int) -> Iterator[np.ndarray]:
    item, page = dtype.itemsize, mmap.PAGESIZE
    done = 0
    while done < numel:
        k = min(max_elems, numel - done)
        a = offset + done * item
        view = np.frombuffer(mm, dtype=dtype, count=k, offset=a)
        yield view if a % item == 0 else view.copy()  # (values stored unaligned: the kernels take aligned ones)
        done += k
        first, last = -(-a // page) * page, (offset + done * item) // page * page
        if last > first and hasattr(mm, "madvise"):
            mm.madvise(mmap.MADV_DONTNEED, first, last - first)


def mapped_reader(path: Path, begin: int, dtype: np.dtype, numel: int):
    """Chunked reader (see TensorRecord.chunks) over ``numel`` values from byte ``begin``."""
    rng = MappedRange(Path(path), begin, np.dtype(dtype))
    return lambda max_elems: rng(0, numel, max_elems)
