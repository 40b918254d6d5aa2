"""Numpy dtypes for every element type a checkpoint may hold (bf16 and f8 via ml_dtypes)."""

from __future__ import annotations

import ml_dtypes
import numpy as np

# safetensors dtype codes -> numpy dtypes
SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "F8_E4M3FNUZ": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "F8_E5M2FNUZ": np.dtype(ml_dtypes.float8_e5m2fnuz),
    "F8_E8M0": np.dtype(ml_dtypes.float8_e8m0fnu),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U64": np.dtype(np.uint64),
    "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}

# ml_dtypes float types (numpy does not know them as floating point)
_ML_FLOATS = {
    np.dtype(ml_dtypes.bfloat16),
    np.dtype(ml_dtypes.float8_e4m3fn),
    np.dtype(ml_dtypes.float8_e5m2),
    np.dtype(ml_dtypes.float8_e4m3fnuz),
    np.dtype(ml_dtypes.float8_e5m2fnuz),
    np.dtype(ml_dtypes.float8_e8m0fnu),
}


def is_float(dtype: np.dtype) -> bool:
    dtype = np.dtype(dtype)
    return dtype in _ML_FLOATS or np.issubdtype(dtype, np.floating)


def torch_to_numpy(torch_dtype) -> tuple[np.dtype, np.dtype | None]:
    """(numpy dtype, integer view dtype or None) for a torch dtype.

    torch cannot hand bf16 / f8 tensors to numpy directly; they are viewed as
    same-width integers first and reinterpreted with the returned numpy dtype.
    """
    import torch

    table = {
        torch.float64: (np.float64, None),
        torch.float32: (np.float32, None),
        torch.float16: (np.float16, None),
        torch.bfloat16: (ml_dtypes.bfloat16, torch.int16),
        torch.int64: (np.int64, None),
        torch.int32: (np.int32, None),
        torch.int16: (np.int16, None),
        torch.int8: (np.int8, None),
        torch.uint8: (np.uint8, None),
        torch.bool: (np.bool_, None),
        torch.complex64: (np.complex64, None),  # analysed through |z| (analysis.complex_values)
        torch.complex128: (np.complex128, None),
    }
    for name, np_t in (
        ("float8_e4m3fn", ml_dtypes.float8_e4m3fn),
        ("float8_e5m2", ml_dtypes.float8_e5m2),
        ("float8_e4m3fnuz", ml_dtypes.float8_e4m3fnuz),
        ("float8_e5m2fnuz", ml_dtypes.float8_e5m2fnuz),
        ("float8_e8m0fnu", ml_dtypes.float8_e8m0fnu),
    ):
        if hasattr(torch, name):
            table[getattr(torch, name)] = (np_t, torch.uint8)
    for name, np_t in (("uint16", np.uint16), ("uint32", np.uint32), ("uint64", np.uint64)):
        if hasattr(torch, name):
            table[getattr(torch, name)] = (np_t, None)
    if torch_dtype not in table:
        return None, None
    np_t, view = table[torch_dtype]
    return np.dtype(np_t), view
