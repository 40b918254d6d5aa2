"""Arrow arrays of a scan's tables, built from their buffers.

``pyarrow.array`` imports pandas the first time it is called (pyarrow looks for pandas objects among
its input): 0.3 s of CPU in every pool process and in the table writer, which need no pandas at all.
The arrays here are assembled with ``pyarrow.Array.from_buffers`` from numpy buffers instead, which
imports nothing more. Each takes plain values and a missing mask, and gives the same array as
``pyarrow.array`` with ``mask`` would (tests/test_scan_arrow.py compares the two).
"""

from __future__ import annotations

import numpy as np

TEXT_ERRORS = "backslashreplace"  # text that is not valid Unicode (a lone surrogate from a file) is escaped


def _validity(missing: np.ndarray | None):
    """(the validity bitmap buffer, bit set where a value is present, or None when nothing is missing;
    the null count)."""
    import pyarrow as pa

    if missing is None or not missing.any():
        return None, 0
    return pa.py_buffer(np.packbits(~missing, bitorder="little")), int(missing.sum())


def number_array(values: np.ndarray, kind, missing: np.ndarray | None = None):
    """An int64 or float64 array (``kind``: ``pa.int64()`` or ``pa.float64()``) of ``values``, null where
    ``missing`` is True (the values there are ignored)."""
    import pyarrow as pa

    dtype = np.int64 if kind == pa.int64() else np.float64
    if missing is not None and missing.any():
        values = np.where(missing, 0, values)
    data = np.ascontiguousarray(values, dtype=dtype)
    valid, nulls = _validity(missing)
    return pa.Array.from_buffers(kind, len(data), [valid, pa.py_buffer(data)], null_count=nulls)


def text_array(values, large: bool = False):
    """A string array (large_string with ``large``) of ``values``: each a str, or None (or NaN) for a null."""
    items = list(values)
    missing = np.fromiter((v is None or v != v for v in items), bool, len(items))
    encoded = [b"" if m else str(v).encode("utf-8", TEXT_ERRORS) for v, m in zip(items, missing)]
    return _strings(encoded, missing, large)


def repeated_text(value: str, n: int):
    """A string array of ``n`` copies of ``value``."""
    return _strings([value.encode("utf-8", TEXT_ERRORS)] * n, None)


def _strings(encoded: list[bytes], missing: np.ndarray | None, large: bool = False):
    import pyarrow as pa

    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    if offsets[-1] >= 2**31 and not large:  # (beyond 32-bit offsets: the general route)
        return pa.array([None if missing is not None and m else b.decode() for b, m in
                         zip(encoded, missing if missing is not None else [False] * len(encoded))], pa.string())
    valid, nulls = _validity(missing)
    buffers = [valid, pa.py_buffer(offsets if large else offsets.astype(np.int32)), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.large_string() if large else pa.string(), len(encoded), buffers, null_count=nulls)
