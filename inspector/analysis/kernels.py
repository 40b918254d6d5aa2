"""The analyzer's inner loops: one interface, implemented in C or in numpy, chosen once at import.

``_kernels.c`` is built by ``pip install`` when a C compiler is there (``setup.py``; the
build carries on without it). Its loops read each value once while it sits in cache, check
every buffer's element type, and release the GIL, so threads reduce tensors side by side.
:mod:`~inspector.analysis.numpy_kernels` has the same functions in numpy (same counts,
extremes, keys and selections; moments equal to rounding). The compiled module is used when
it is built and ``WINSPECT_NO_KERNELS`` is unset (or ``0``); callers never ask which.

* ``count_codes(codes, counts)``: ``counts += bincount(codes)`` for uint8/uint16 codes;
* ``moments_buckets(values, counts, block)``: for float32/float64 values, in blocks of
  ``block``: finite count, Chan-merged mean and M2, sum of |x|, min, max, NaN, ±Inf, zero
  and -0.0 counts, and the magnitude-major bucket counts of the finite values
  (``numpy_kernels.bucket_keys``) with the range of keys they touched;
* ``select_buckets(values, bitmap, out)``: the nonzero values whose bucket has its bit set in
  ``bitmap`` (``bucket_bitmap(keys)``: 2^20 bits, one per sign and leading magnitude bits), into
  ``out``; returns how many there were;
* ``row_signs(values, code, inner, neg, pos)``: negative and positive counts of each run of
  ``inner`` values (bf16 ``b`` and f16 ``e`` as uint16 bits, float32 ``f``, float64 ``d``);
* ``locate(counts, klo, zero, neg_zero, ranks, edges, width)``: one walk over the bucket counts of
  keys klo.. in value order (``numpy_kernels.value_order``): the buckets of sorted ranks, the counts
  before them and theirs; the buckets of histogram edges and the counts of those straddling them;
  the bin counts of the other buckets; and the negative count.
"""

from __future__ import annotations

import os

import ml_dtypes
import numpy as np

from . import numpy_kernels


def _choose():
    if os.environ.get("WINSPECT_NO_KERNELS", "") not in ("", "0"):
        return numpy_kernels
    try:
        from . import _kernels
    except ImportError:  # not built: numpy it is
        return numpy_kernels
    return _kernels


impl = _choose()
COMPILED = impl is not numpy_kernels
BUCKETS = numpy_kernels.BUCKETS
bucket_keys = numpy_kernels.bucket_keys
bucket_bitmap = numpy_kernels.bucket_bitmap
count_codes = impl.count_codes
moments_buckets = impl.moments_buckets
select_buckets = impl.select_buckets
row_signs = impl.row_signs
locate = impl.locate

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
    """A flat C-contiguous view (or copy) of ``values`` as the kernels take it: 16-bit floats
    as uint16, 8-bit types as uint8, others as they are."""
    flat = np.ascontiguousarray(values).reshape(-1)
    if flat.dtype.itemsize == 2 and flat.dtype != np.uint16:
        return flat.view(np.uint16)
    if flat.dtype.itemsize == 1 and flat.dtype != np.uint8:
        return flat.view(np.uint8)
    return flat


def use(module) -> object:
    """Make ``module`` (``numpy_kernels`` or the compiled one) the implementation; returns the previous
    one. For tests that compare the two; callers look the functions up here at each call."""
    global impl, count_codes, moments_buckets, select_buckets, row_signs, locate
    previous = impl
    impl = module
    count_codes, moments_buckets = module.count_codes, module.moments_buckets
    select_buckets, row_signs, locate = module.select_buckets, module.row_signs, module.locate
    return previous
