"""Reading a strided view of a memory-mapped storage in bounded chunks.

A tensor saved as a view (transposed, sliced, expanded with stride 0) is read through its own
offset, shape and strides: the values come out flat in C order, ``max_elems`` at a time, and no
chunk ever needs more memory than that however large the view is. Contiguous views are handed
out as views of the mapping (no copy) and their pages are given back to the OS once used, so the
process never grows to the checkpoint's size. Big-endian storages are swapped chunk by chunk,
so every view of a storage sees the same, correctly ordered values.
"""

from __future__ import annotations

import math
import mmap
from dataclasses import dataclass
from typing import Iterator

import numpy as np


def flat_chunks(v: np.ndarray, start: int, stop: int, max_elems: int) -> Iterator[np.ndarray]:
    """The values [start, stop) of ``v`` in C order, at most ``max_elems`` per chunk, copying one chunk at a time."""
    if stop <= start:
        return
    if v.ndim == 0 or v.flags.c_contiguous:
        flat = v.reshape(-1)
        for s in range(start, stop, max_elems):
            yield flat[s : min(s + max_elems, stop)]
        return
    inner = math.prod(v.shape[1:])
    if inner > max_elems:
        for row in range(start // inner, -(-stop // inner)):
            base = row * inner
            yield from flat_chunks(v[row], max(start - base, 0), min(stop - base, inner), max_elems)
        return
    rows_per = max(1, max_elems // inner)
    while start < stop:
        row, off = divmod(start, inner)
        if off or stop - start < inner:  # a partial row
            end = min(stop, (row + 1) * inner)
            yield np.ascontiguousarray(v[row]).reshape(-1)[off : end - row * inner]
            start = end
            continue
        n = min(rows_per, (stop - start) // inner)
        yield np.ascontiguousarray(v[row : row + n]).reshape(-1)
        start += n * inner


@dataclass(frozen=True)
class ViewRange:
    """Range reader (see TensorRecord.range_chunks) over a view of a storage stored in a file.

    ``data`` is (path, byte offset
    of the storage, its byte length); ``dtype`` is the stored element type, ``big_endian`` its
    byte order in the file; ``quant`` is None, ("tensor", scale, zero_point) or ("channel", scales, zero_points, axis).
    """

    data: tuple
    dtype: np.dtype
    offset: int
    shape: tuple
    stride: tuple
    quant: tuple | None = None
    big_endian: bool = False

    def __call__(self, start: int, stop: int, max_elems: int) -> Iterator[np.ndarray]:
        path, begin, length = self.data
        if stop <= start:
            return
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            yield from self._chunks(mm, begin, length, start, stop, max_elems)
        finally:
            _close(mm)

    def _chunks(self, mm, begin: int, length: int, start: int, stop: int, max_elems: int):
        item = self.dtype.itemsize
        swap = self.big_endian and item > 1
        if self.dtype.type.__module__ == "numpy":  # numpy's own types: read with their byte order
            raw = self.dtype.newbyteorder(">" if swap else "=")
        else:  # ml_dtypes (bf16, f8): as_strided needs a numpy type of the same width
            raw = np.dtype(f">u{item}" if swap else f"=u{item}")
        base = np.frombuffer(mm, dtype=raw, count=length // item, offset=begin)
        map_start = base.ctypes.data - begin
        view = np.lib.stride_tricks.as_strided(base[self.offset :], self.shape, tuple(s * item for s in self.stride),
                                               writeable=False)
        for chunk in flat_chunks(view, start, stop, max_elems):
            out = (chunk.astype(raw.newbyteorder("=")) if swap else chunk).view(self.dtype)
            if self.quant is not None:
                out = dequantize(out, self.quant, self.shape, start)
            yield out
            if np.may_share_memory(chunk, base):
                _release(mm, chunk, map_start)
            start += chunk.size
        del base, view


def dequantize(q: np.ndarray, quant: tuple, shape: tuple, start: int) -> np.ndarray:
    """Real values ``(q - zero_point) * scale`` in float32, rounded as torch's dequantize rounds them
    (per tensor: float32 arithmetic; per channel: float64, then float32)."""
    if quant[0] == "tensor":
        _, scale, zero_point = quant
        return (q.astype(np.int64) - zero_point).astype(np.float32) * np.float32(scale)
    _, scales, zero_points, axis = quant
    inner = math.prod(shape[axis + 1 :])
    channel = (np.arange(start, start + q.size, dtype=np.int64) // inner) % shape[axis]
    return ((q.astype(np.int64) - zero_points[channel]) * scales[channel]).astype(np.float32)


def _release(mm: mmap.mmap, chunk: np.ndarray, map_start: int) -> None:
    """Give back the whole pages under a contiguous chunk of the mapping (they stay in the page cache)."""
    lo = chunk.ctypes.data - map_start
    hi = lo + chunk.nbytes
    page = mmap.PAGESIZE
    first, last = -(-lo // page) * page, hi // page * page
    if last > first and hasattr(mm, "madvise"):
        mm.madvise(mmap.MADV_DONTNEED, first, last - first)


def _close(mm: mmap.mmap) -> None:
    try:
        mm.close()
    except BufferError:  # a chunk still refers to the mapping; it closes when the last one goes
        pass
