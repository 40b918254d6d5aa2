"""The analyzer's compiled inner loops (``_kernels.c``), when they are built.

``_kernels.c`` is built by ``pip install`` when a C compiler is there (``setup.py``; the
build carries on without it). Its loops read each value once while it sits in cache,
and release the GIL, so threads reduce tensors side by side. ``native`` is that module,
or None when it is not built or ``WINSPECT_NO_KERNELS=1`` is set; every caller then takes
its numpy path, which gives the same counts and extremes, and moments equal to rounding.

* ``count_codes(codes, counts)``: ``counts += bincount(codes)`` for 8/16-bit codes;
* ``moments_buckets(values, counts, block)``: for float32/float64 values, in blocks of
  ``block``: finite count, Chan-merged mean and M2, sum of |x|, min, max, NaN, ±Inf,
  zero and -0.0 counts, and the magnitude-major bucket counts of the finite values
  (``stats._magnitude_major``);
* ``row_signs(values, code, inner, neg, pos)``: negative and positive counts of each run
  of ``inner`` values (bf16 ``b``, f16 ``e``, float32 ``f``, float64 ``d``; NaN is neither).
"""

from __future__ import annotations

import os

import ml_dtypes
import numpy as np

try:
    from . import _kernels as native
except ImportError:  # not built: the numpy paths are used
    native = None

if os.environ.get("WINSPECT_NO_KERNELS", "") not in ("", "0"):
    native = None

_ROW_CODES = {
    np.dtype(ml_dtypes.bfloat16): "b",
    np.dtype(np.float16): "e",
    np.dtype(np.float32): "f",
    np.dtype(np.float64): "d",
}


def row_code(dtype: np.dtype) -> str | None:
    """``row_signs``' code for a dtype, or None when it has none."""
    return _ROW_CODES.get(np.dtype(dtype))


def raw(values: np.ndarray) -> np.ndarray:
    """A flat C-contiguous view (or copy) of ``values`` that the buffer protocol accepts:
    16-bit floats as uint16, 8-bit types as uint8, others as they are."""
    flat = np.ascontiguousarray(values).reshape(-1)
    if flat.dtype.itemsize == 2 and flat.dtype != np.uint16:
        return flat.view(np.uint16)
    if flat.dtype.itemsize == 1 and flat.dtype != np.uint8:
        return flat.view(np.uint8)
    return flat
