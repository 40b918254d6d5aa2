"""GGUF (ggml) tensor types and the dequantization of quantized blocks into real values.

``TYPES`` names every ggml type id with its block shape (values per block, bytes per block);
plain types also have a numpy dtype. :func:`dequantize` decodes whole blocks of a type in
``DECODED`` into float32, with the compiled kernels (``_dequant.c``) when they are built and
the numpy functions below otherwise (``WINSPECT_NO_KERNELS=1`` forces numpy). Both compute
each value as ggml's reference does, in float32 with the same order of operations, so they
agree with ``gguf.quants.dequantize`` bit for bit. Other quantized types are decoded by gguf-py
when it is installed (:func:`gguf_decoder`), or not at all.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import ml_dtypes
import numpy as np

try:
    from . import _dequant as native
except ImportError:  # not built: numpy decodes
    native = None

if os.environ.get("WINSPECT_NO_KERNELS", "") not in ("", "0"):
    native = None

QK_K = 256


@dataclass(frozen=True)
class GGMLType:
    id: int
    name: str
    block: int  # values per block
    size: int  # bytes per block
    dtype: np.dtype | None = None  # plain (unquantized) types: the element type


def _t(id_, name, block, size, dtype=None) -> GGMLType:
    return GGMLType(id_, name, block, size, np.dtype(dtype) if dtype is not None else None)


TYPES: dict[int, GGMLType] = {t.id: t for t in (
    _t(0, "F32", 1, 4, np.float32), _t(1, "F16", 1, 2, np.float16), _t(2, "Q4_0", 32, 18),
    _t(3, "Q4_1", 32, 20), _t(6, "Q5_0", 32, 22), _t(7, "Q5_1", 32, 24), _t(8, "Q8_0", 32, 34),
    _t(9, "Q8_1", 32, 40), _t(10, "Q2_K", QK_K, 84), _t(11, "Q3_K", QK_K, 110), _t(12, "Q4_K", QK_K, 144),
    _t(13, "Q5_K", QK_K, 176), _t(14, "Q6_K", QK_K, 210), _t(15, "Q8_K", QK_K, 292),
    _t(16, "IQ2_XXS", QK_K, 66), _t(17, "IQ2_XS", QK_K, 74), _t(18, "IQ3_XXS", QK_K, 98),
    _t(19, "IQ1_S", QK_K, 50), _t(20, "IQ4_NL", 32, 18), _t(21, "IQ3_S", QK_K, 110), _t(22, "IQ2_S", QK_K, 82),
    _t(23, "IQ4_XS", QK_K, 136), _t(24, "I8", 1, 1, np.int8), _t(25, "I16", 1, 2, np.int16),
    _t(26, "I32", 1, 4, np.int32), _t(27, "I64", 1, 8, np.int64), _t(28, "F64", 1, 8, np.float64),
    _t(29, "IQ1_M", QK_K, 56), _t(30, "BF16", 1, 2, ml_dtypes.bfloat16), _t(34, "TQ1_0", QK_K, 54),
    _t(35, "TQ2_0", QK_K, 66), _t(39, "MXFP4", 32, 17), _t(40, "NVFP4", 64, 36), _t(41, "Q1_0", 128, 18),
)}
# ids ggml once used and retired; a file may still carry them (block shape unknown here)
RETIRED = {4: "Q4_2", 5: "Q4_3", 31: "Q4_0_4_4", 32: "Q4_0_4_8", 33: "Q4_0_8_8", 36: "IQ4_NL_4_4",
           37: "IQ4_NL_4_8", 38: "IQ4_NL_8_8"}

KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32)


def _f16(b: np.ndarray, at: int) -> np.ndarray:
    """The little-endian float16 at byte ``at`` of each block, as float32 of shape (n, 1)."""
    return np.ascontiguousarray(b[:, at : at + 2]).view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, k) bytes -> (n, 2k): the k low nibbles, then the k high nibbles."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _bits32(b: np.ndarray, at: int) -> np.ndarray:
    """The 32 bits of the little-endian uint32 at byte ``at``, as (n, 32) uint8, bit 0 first."""
    return np.unpackbits(np.ascontiguousarray(b[:, at : at + 4]), axis=1, bitorder="little")


def _q4_0(b):
    return _f16(b, 0) * (_nibbles(b[:, 2:18]).astype(np.float32) - np.float32(8))


def _q4_1(b):
    return _f16(b, 0) * _nibbles(b[:, 4:20]).astype(np.float32) + _f16(b, 2)


def _q5_0(b):
    q = _nibbles(b[:, 6:22]) | (_bits32(b, 2) << 4)
    return _f16(b, 0) * (q.astype(np.float32) - np.float32(16))


def _q5_1(b):
    q = _nibbles(b[:, 8:24]) | (_bits32(b, 4) << 4)
    return _f16(b, 0) * q.astype(np.float32) + _f16(b, 2)


def _q8_0(b):
    return np.ascontiguousarray(b[:, 2:34]).view(np.int8).astype(np.float32) * _f16(b, 0)


def _iq4_nl(b):
    return _f16(b, 0) * KVALUES_IQ4NL[_nibbles(b[:, 2:18])]


def _crumbs(qs: np.ndarray) -> np.ndarray:
    """(n, 64) bytes -> (n, 256) 2-bit values in k-quant order: per 32-byte half, shifts 0, 2, 4, 6."""
    n = qs.shape[0]
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    return ((qs.reshape(n, 2, 1, 32) >> shifts) & 3).reshape(n, QK_K)


def _q2_k(b):
    n = b.shape[0]
    sc = b[:, :16]
    dl = (_f16(b, 80) * (sc & 0x0F).astype(np.float32)).reshape(n, 16, 1)
    ml = (_f16(b, 82) * (sc >> 4).astype(np.float32)).reshape(n, 16, 1)
    q = _crumbs(b[:, 16:80]).reshape(n, 16, 16).astype(np.float32)
    return (dl * q - ml).reshape(n, QK_K)


def _q3_k_scales(sc: np.ndarray) -> np.ndarray:
    low = np.concatenate([sc[:, :8] & 0x0F, sc[:, :8] >> 4], axis=1)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 4, 1)
    high = ((sc[:, 8:12].reshape(-1, 1, 4) >> shifts) & 3).reshape(-1, 16)
    return (low | (high << 4)).astype(np.float32) - np.float32(32)


def _q3_k(b):
    n = b.shape[0]
    dl = (_f16(b, 108) * _q3_k_scales(b[:, 96:108])).reshape(n, 16, 1)
    bits = np.arange(8, dtype=np.uint8).reshape(1, 8, 1)
    h = ((b[:, :32].reshape(n, 1, 32) >> bits) & 1).reshape(n, QK_K)
    q = _crumbs(b[:, 32:96]).astype(np.int8) - ((h ^ 1) << 2).astype(np.int8)
    return (dl * q.reshape(n, 16, 16).astype(np.float32)).reshape(n, QK_K)


def _k_scale_min(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eight 6-bit scales and mins of a Q4_K / Q5_K super-block's 12 scale bytes."""
    d, m, md = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=1)
    return sc.astype(np.float32), mn.astype(np.float32)


def _k_nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, 128) bytes -> (n, 8, 32): per 32-byte chunk, its low nibbles then its high nibbles."""
    n = qs.shape[0]
    q = qs.reshape(n, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    return (q & 0x0F).reshape(n, 8, 32)


def _q4_k(b):
    n = b.shape[0]
    sc, mn = _k_scale_min(b[:, 4:16])
    dl, ml = (_f16(b, 0) * sc).reshape(n, 8, 1), (_f16(b, 2) * mn).reshape(n, 8, 1)
    return (dl * _k_nibbles(b[:, 16:144]).astype(np.float32) - ml).reshape(n, QK_K)


def _q5_k(b):
    n = b.shape[0]
    sc, mn = _k_scale_min(b[:, 4:16])
    dl, ml = (_f16(b, 0) * sc).reshape(n, 8, 1), (_f16(b, 2) * mn).reshape(n, 8, 1)
    h = (b[:, 16:48].reshape(n, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & 1
    q = _k_nibbles(b[:, 48:176]) | (h << 4)
    return (dl * q.astype(np.float32) - ml).reshape(n, QK_K)


def _q6_k(b):
    n = b.shape[0]
    dl = (_f16(b, 208) * b[:, 192:208].view(np.int8).astype(np.float32)).reshape(n, 16, 1)
    lo = (b[:, :128].reshape(n, 2, 1, 64) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)) & 0x0F
    hi = _crumbs(b[:, 128:192]).reshape(n, 2, 2, 64)
    q = (lo | (hi << 4)).astype(np.int8) - np.int8(32)
    return (dl * q.reshape(n, 16, 16).astype(np.float32)).reshape(n, QK_K)


def _iq4_xs(b):
    n = b.shape[0]
    sl = b[:, 4:8].reshape(n, 4, 1) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2)
    sh = np.ascontiguousarray(b[:, 2:4]).view("<u2") >> np.arange(0, 16, 2, dtype=np.uint16).reshape(1, 8)
    scales = ((sl.reshape(n, 8) & 0x0F) | ((sh & 3).astype(np.uint8) << 4)).astype(np.float32) - np.float32(32)
    dl = (_f16(b, 0) * scales).reshape(n, 8, 1)
    q = b[:, 8:136].reshape(n, 8, 1, 16) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    return (dl * KVALUES_IQ4NL[(q & 0x0F).reshape(n, 8, 32)]).reshape(n, QK_K)


NUMPY_DECODERS = {2: _q4_0, 3: _q4_1, 6: _q5_0, 7: _q5_1, 8: _q8_0, 10: _q2_k, 11: _q3_k, 12: _q4_k, 13: _q5_k,
                  14: _q6_k, 20: _iq4_nl, 23: _iq4_xs}
DECODED = frozenset(NUMPY_DECODERS)


def dequantize(type_id: int, raw, out: np.ndarray | None = None, use_native: bool | None = None) -> np.ndarray:
    """The float32 values of the whole blocks in ``raw`` (bytes-like) of a type in ``DECODED``.

    ``out``: a float32 array to write into (at least blocks * block values); the values are
    its first ones. ``use_native``: force the compiled (True) or numpy (False) path.
    """
    t = TYPES[type_id]
    blocks = np.frombuffer(raw, dtype=np.uint8)
    if blocks.size % t.size:
        raise ValueError(f"{t.name}: {blocks.size} bytes are not whole {t.size}-byte blocks")
    n = blocks.size // t.size * t.block
    if out is None:
        out = np.empty(n, dtype=np.float32)
    native_ok = native is not None if use_native is None else use_native
    if native_ok:
        native.dequantize(type_id, blocks, out)
    else:
        with np.errstate(all="ignore"):
            out[:n] = NUMPY_DECODERS[type_id](blocks.reshape(-1, t.size)).reshape(-1)
    return out[:n]


@functools.lru_cache(maxsize=None)
def lookup(type_id: int) -> GGMLType | None:
    """The type of an id: from ``TYPES``, or from gguf-py for types newer than this table; None if unknown."""
    if type_id in TYPES:
        return TYPES[type_id]
    try:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        qtype = GGMLQuantizationType(type_id)
        block, size = GGML_QUANT_SIZES[qtype]
    except (ImportError, ValueError, KeyError):
        return None
    return GGMLType(type_id, qtype.name, block, size)


def gguf_installed() -> bool:
    """Whether gguf-py can be imported."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def gguf_decoder(type_id: int):
    """gguf-py's dequantization of a type (a function bytes -> float32 values), or None when
    gguf-py is not installed or cannot decode that type."""
    try:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize as gguf_dequantize
    except ImportError:
        return None
    try:
        qtype = GGMLQuantizationType(type_id)
    except ValueError:
        return None
    t = lookup(type_id)
    if t is None or t.dtype is not None:
        return None
    probe = np.zeros(t.size, dtype=np.uint8)
    try:
        with np.errstate(all="ignore"):
            gguf_dequantize(probe, qtype)
    except (NotImplementedError, KeyError, ValueError):
        return None

    def decode(raw) -> np.ndarray:
        with np.errstate(all="ignore"):  # hostile scales overflow to ±inf; they are counted, not warned about
            return np.asarray(gguf_dequantize(np.frombuffer(raw, dtype=np.uint8), qtype), np.float32).reshape(-1)

    return decode
