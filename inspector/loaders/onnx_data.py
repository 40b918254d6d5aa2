"""Reading an ONNX tensor's values chunk by chunk, wherever the model stores them.

``raw_data`` embedded in the model is read by its byte offsets in the file, like any
other tensor; external data is memory-mapped lazily (see :mod:`.mapped`) after its
location is checked to stay inside the model's folder; typed fields (``float_data``,
``int32_data`` — which also carries f16/bf16/int8/f8/int4 —, ``int64_data``,
``double_data``, ``uint64_data``) are decoded a block at a time, varints vectorised;
sparse tensors are expanded to their dense values chunk by chunk. Every count is
checked against the tensor's dims: a mismatch is a :class:`CorruptCheckpoint`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import ml_dtypes
import numpy as np

from ..errors import CorruptCheckpoint, UnsafeCheckpoint, UnsupportedSource
from ..safety.protobuf import I32, I64, VARINT, ProtoFile, decode_varints
from .mapped import MappedRange
from .onnx_proto import TensorInfo
from .safetensors import FileRange, file_reader

# ONNX data_type -> (numpy dtype of the values read, name shown in the dtype column)
ONNX_TYPES: dict[int, tuple[np.dtype, str]] = {
    code: (np.dtype(t), name)
    for code, t, name in [
        (1, np.float32, "float32"), (2, np.uint8, "uint8"), (3, np.int8, "int8"), (4, np.uint16, "uint16"),
        (5, np.int16, "int16"), (6, np.int32, "int32"), (7, np.int64, "int64"), (9, np.bool_, "bool"),
        (10, np.float16, "float16"), (11, np.float64, "float64"), (12, np.uint32, "uint32"),
        (13, np.uint64, "uint64"), (16, ml_dtypes.bfloat16, "bfloat16"),
        (17, ml_dtypes.float8_e4m3fn, "float8_e4m3fn"), (18, ml_dtypes.float8_e4m3fnuz, "float8_e4m3fnuz"),
        (19, ml_dtypes.float8_e5m2, "float8_e5m2"), (20, ml_dtypes.float8_e5m2fnuz, "float8_e5m2fnuz"),
        (21, np.uint8, "uint4"), (22, np.int8, "int4"), (24, ml_dtypes.float8_e8m0fnu, "float8_e8m0fnu"),
    ]
}
FOUR_BIT = (21, 22)
UNREAD_TYPES = {8: "string", 14: "complex64", 15: "complex128", 23: "float4_e2m1", 25: "uint2", 26: "int2",
                27: "float6_e2m3", 28: "float6_e3m2"}
VALUE_BLOCK = 1 << 20  # bytes of a typed field decoded at a time
MAX_SMALL = 1 << 26  # values of a tensor read whole (sparse indices, scales, zero points)

Reader = Callable[[int], Iterator[np.ndarray]]


@dataclass
class Values:
    """How to read one tensor: element type, chunk reader, optional range reader, bytes stored."""

    dtype: np.dtype
    stored: str
    reader: Reader
    range_reader: Callable | None
    nbytes: int


class DataContext:
    """The model file (mapped) and its folder, for resolving external data."""

    def __init__(self, pf: ProtoFile):
        self.pf = pf
        self.path = pf.path
        self.folder = Path(os.path.realpath(pf.path.parent))

    def values(self, t: TensorInfo) -> Values:
        if t.data_type in UNREAD_TYPES or t.data_type not in ONNX_TYPES:
            name = UNREAD_TYPES.get(t.data_type, f"data type {t.data_type}")
            raise UnsupportedSource(f"{self.path}: tensor {t.name!r} holds {name} values, which winspect does not read")
        if t.segmented:
            raise UnsupportedSource(f"{self.path}: tensor {t.name!r} is segmented, which winspect does not read")
        dtype, stored = ONNX_TYPES[t.data_type]
        if t.sparse is not None:
            return Values(dtype, stored, self.sparse_reader(t, dtype), None, t.numel * dtype.itemsize)
        if t.value is not None:
            arr = t.value.reshape(-1)
            return Values(dtype, stored, lambda n: iter([arr] if arr.size else []), None, arr.nbytes)
        if t.external is not None:
            path, begin = self.external(t, dtype)
            return self.contiguous(t, dtype, stored, path, begin, MappedRange(path, begin, dtype))
        if t.raw is not None:
            self.check_raw_size(t, dtype, t.raw[1])
            return self.contiguous(t, dtype, stored, self.path, t.raw[0], FileRange(self.path, t.raw[0], dtype))
        return Values(dtype, stored, self.typed_reader(t, dtype), None, t.numel * dtype.itemsize)

    def contiguous(self, t: TensorInfo, dtype, stored, path: Path, begin: int, rng) -> Values:
        numel = t.numel
        if t.data_type in FOUR_BIT:
            packed = file_reader(path, begin, np.dtype(np.uint8), (numel + 1) // 2)
            signed = t.data_type == 22
            return Values(dtype, stored, lambda n: rechunk(unpack4(packed(max(1, n // 2)), signed), numel, n, t.name,
                                                           self.path, numel % 2), None, (numel + 1) // 2)
        return Values(dtype, stored, lambda n: rng(0, numel, n), rng, numel * dtype.itemsize)

    def check_raw_size(self, t: TensorInfo, dtype: np.dtype, length: int) -> None:
        want = stored_bytes(t, dtype)
        if length != want:
            raise CorruptCheckpoint(f"{self.path}: tensor {t.name!r} has {length} bytes of data where its dims "
                                    f"{list(t.dims)} need {want}")

    def external(self, t: TensorInfo, dtype: np.dtype) -> tuple[Path, int]:
        """The external file and offset of a tensor, refused when it lies outside the model's folder."""
        ext = t.external or {}
        loc = ext.get("location", "")
        p = Path(loc)
        if not loc or p.is_absolute() or ".." in p.parts or "\\" in loc or "\x00" in loc:
            raise UnsafeCheckpoint(f"{self.path}: tensor {t.name!r} points at external data {loc!r} outside the "
                                   "model's folder; refused")
        target = Path(os.path.realpath(self.folder / p))
        if not target.is_relative_to(self.folder):
            raise UnsafeCheckpoint(f"{self.path}: tensor {t.name!r}: external data {loc!r} leads outside the "
                                   f"model's folder (to {target}); refused")
        if not target.is_file():
            raise CorruptCheckpoint(f"{self.path}: tensor {t.name!r}: external data file {loc!r} is missing")
        offset, length = (_count(ext.get(k), self.path, t.name, k) for k in ("offset", "length"))
        want = stored_bytes(t, dtype)
        if length is not None and length != want:
            raise CorruptCheckpoint(f"{self.path}: tensor {t.name!r} declares {length} external bytes where its "
                                    f"dims {list(t.dims)} need {want}")
        size = target.stat().st_size
        if (offset or 0) + want > size:
            raise CorruptCheckpoint(f"{self.path}: tensor {t.name!r} ends at byte {(offset or 0) + want} of {loc}, "
                                    f"past its end ({size} bytes)")
        return target, offset or 0

    def typed_reader(self, t: TensorInfo, dtype: np.dtype) -> Reader:
        pf, numel = self.pf, t.numel
        four = t.data_type in FOUR_BIT
        convert = _converter(t.data_type, dtype)
        wire = I32 if t.data_type == 1 else I64 if t.data_type == 11 else VARINT
        if any(r.wire != wire for r in t.typed) or len({r.number for r in t.typed}) > 1:
            raise CorruptCheckpoint(f"{self.path}: tensor {t.name!r} stores its values in fields that do not "
                                    "match its data type")

        def read(max_elems: int) -> Iterator[np.ndarray]:
            raw = (convert(a) for a in region_values(pf, t.typed))
            if four:
                raw = unpack4(raw, t.data_type == 22)
            return rechunk(raw, numel, max_elems, t.name, self.path, numel % 2 if four else 0)

        return read

    def small(self, t: TensorInfo) -> np.ndarray:
        """A small tensor's values, whole (scales, zero points, sparse indices)."""
        if t.numel > MAX_SMALL:
            raise UnsupportedSource(f"{self.path}: tensor {t.name!r} has {t.numel} values, more than the "
                                    f"{MAX_SMALL} read at once")
        v = self.values(t)
        parts = list(a.copy() for a in v.reader(max(1, t.numel)))
        return np.concatenate(parts).astype(v.dtype) if parts else np.empty(0, v.dtype)

    def sparse_reader(self, t: TensorInfo, dtype: np.dtype) -> Reader:
        values_info, indices_info = t.sparse
        numel = t.numel

        def read(max_elems: int) -> Iterator[np.ndarray]:
            values, flat = self.sparse_parts(t, values_info, indices_info)
            for s in range(0, numel, max_elems):
                e = min(numel, s + max_elems)
                out = np.zeros(e - s, dtype)
                lo, hi = np.searchsorted(flat, [s, e])
                out[flat[lo:hi] - s] = values[lo:hi]
                yield out

        return read

    def sparse_parts(self, t: TensorInfo, values_info: TensorInfo, indices_info: TensorInfo):
        values = self.small(values_info)
        indices = self.small(indices_info).astype(np.int64)
        nnz = values.size
        if indices_info.dims == (nnz,) or nnz == 0 and len(indices_info.dims) == 1:
            flat = indices
        elif indices_info.dims == (nnz, len(t.dims)):
            strides = np.array([math.prod(t.dims[i + 1 :]) for i in range(len(t.dims))], np.int64)
            coords = indices.reshape(nnz, len(t.dims))
            if ((coords < 0) | (coords >= np.array(t.dims, np.int64))).any():
                raise CorruptCheckpoint(f"{self.path}: sparse tensor {t.name!r} has an index outside its dims")
            flat = coords @ strides
        else:
            raise CorruptCheckpoint(f"{self.path}: sparse tensor {t.name!r} has {nnz} values but indices of shape "
                                    f"{list(indices_info.dims)}")
        if nnz and (flat.min() < 0 or flat.max() >= t.numel or (np.diff(flat) <= 0).any()):
            raise CorruptCheckpoint(f"{self.path}: sparse tensor {t.name!r} has indices out of range, repeated or "
                                    "not in ascending order")
        return values, flat


def stored_bytes(t: TensorInfo, dtype: np.dtype) -> int:
    return (t.numel + 1) // 2 if t.data_type in FOUR_BIT else t.numel * dtype.itemsize


def _count(text, path, name, key) -> int | None:
    if text is None:
        return None
    if not (isinstance(text, str) and text.isdigit() and len(text) <= 19):
        raise CorruptCheckpoint(f"{path}: tensor {name!r} has external data {key} {text!r:.40}, not a byte count")
    return int(text)


def _converter(data_type: int, dtype: np.dtype):
    """From the numbers a typed field holds to the tensor's element type."""
    if data_type in (1, 11):
        return lambda a: a.astype(dtype, copy=False)
    if data_type in (7, 13):
        return lambda a: a.view(dtype)
    if data_type == 12:
        return lambda a: a.astype(np.uint32)
    if data_type in (10, 16, 4, 5):  # 16-bit patterns in int32_data
        return lambda a: a.astype(np.uint16).view(dtype)
    if data_type == 3:
        return lambda a: a.view(np.int64).astype(np.int8)
    if data_type == 6:
        return lambda a: a.view(np.int64).astype(np.int32)
    return lambda a: a.astype(np.uint8).view(dtype)  # uint8, bool, f8, uint4 (packed pairs)


def region_values(pf: ProtoFile, regions) -> Iterator[np.ndarray]:
    """The numbers stored in regions of a repeated field, a block at a time: float32 for fixed32,
    float64 for fixed64, uint64 for varints."""
    for r in regions:
        if r.packed and r.wire in (I32, I64):
            dtype = np.dtype("<f4" if r.wire == I32 else "<f8")
            if (r.end - r.start) % dtype.itemsize:
                raise pf.fail("packed field is not a whole number of values", r.start)
            step = VALUE_BLOCK - VALUE_BLOCK % dtype.itemsize
            for a in range(r.start, r.end, step):
                yield np.frombuffer(pf.data[a : min(r.end, a + step)], dtype)
        elif r.packed:
            yield from _packed_varints(pf, r.start, r.end)
        else:
            yield from _unpacked(pf, r)


def _packed_varints(pf: ProtoFile, start: int, end: int) -> Iterator[np.ndarray]:
    pos = start
    while pos < end:
        block = np.frombuffer(pf.data[pos : min(end, pos + VALUE_BLOCK)], np.uint8)
        try:
            values, used = decode_varints(block)
        except ValueError:
            raise pf.fail("varint longer than 10 bytes", pos) from None
        if used == 0:
            raise pf.fail("packed varints cut off", pos)
        yield values
        pos += used


def _unpacked(pf: ProtoFile, r) -> Iterator[np.ndarray]:
    dtype = {I32: "<f4", I64: "<f8"}.get(r.wire)
    out: list = []
    for g in pf.fields(r.start, r.end):
        if g.number != r.number:
            continue
        out.append(pf.fixed(g, dtype) if dtype else g.value)
        if len(out) >= 1 << 16:
            yield np.array(out, dtype=dtype or np.uint64)
            out = []
    if out:
        yield np.array(out, dtype=dtype or np.uint64)


def unpack4(chunks: Iterator[np.ndarray], signed: bool) -> Iterator[np.ndarray]:
    """Two 4-bit values per byte, low nibble first; sign-extended for int4."""
    for packed in chunks:
        b = packed.astype(np.uint8, copy=False)
        out = np.empty(b.size * 2, np.uint8)
        out[0::2] = b & 0x0F
        out[1::2] = b >> 4
        yield ((out.astype(np.int8) ^ 8) - 8).astype(np.int8) if signed else out


def rechunk(parts: Iterator[np.ndarray], numel: int, max_elems: int, name: str, path,
            slack: int = 0) -> Iterator[np.ndarray]:
    """Chunks of exactly ``max_elems`` values (the last shorter) from pieces of any size, checking
    that there are ``numel`` values in all (``slack``: the pad nibble of an odd 4-bit tensor)."""
    buf: list[np.ndarray] = []
    have = done = 0
    for a in parts:
        if done + have + a.size > numel + slack:
            raise CorruptCheckpoint(f"{path}: tensor {name!r} holds more values than its dims ({numel})")
        buf.append(a)
        have += a.size
        while have >= max_elems and done + max_elems <= numel:
            joined = np.concatenate(buf)
            yield joined[:max_elems]
            done += max_elems
            buf, have = [joined[max_elems:]], have - max_elems
    if done + have < numel:
        raise CorruptCheckpoint(f"{path}: tensor {name!r} holds {done + have} values where its dims need {numel}")
    if numel > done:
        yield np.concatenate(buf)[: numel - done]
