"""NumPy files: one array (``.npy``) or an archive of named arrays (``.npz``).

Never ``allow_pickle``: the ``.npy`` header is a Python literal read with
``ast.literal_eval`` (what numpy itself does), and an object array, which only a pickle
could hold, is refused. Arrays stored uncompressed (every ``.npy``, a ``numpy.savez``
archive) are memory-mapped where they lie; members of a ``savez_compressed`` archive
are inflated chunk by chunk. Names in an archive are its member names without
``.npy``; their kinds come from the names as for safetensors.
"""

from __future__ import annotations

import ast
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import CorruptCheckpoint, UnsafeCheckpoint, UnsupportedSource
from ..kinds import default_out_axis, infer_kinds
from ..records import TensorRecord
from ..safety.zipcheck import check_zip, stored_data_start
from . import Loader, LoadOptions, OpenedSource, register
from .mapped import MappedRange
from ..remote.path import as_path
from .safetensors import FileRange, stream_chunks

MAGIC = b"\x93NUMPY"
MAX_HEADER = 1 << 16
MAX_NDIM = 64
MAX_NUMEL = 1 << 56


@dataclass
class NpyHeader:
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran: bool
    size: int  # bytes of magic + header: the data starts there

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_npy_header(f, where: str) -> NpyHeader:
    """The header of the ``.npy`` data that ``f`` is positioned at (a file or a zip member)."""
    pre = f.read(10)
    if len(pre) < 10 or pre[:6] != MAGIC:
        raise CorruptCheckpoint(f"{where}: not a .npy array (no \\x93NUMPY magic)")
    major = pre[6]
    if major == 1:
        (hlen,), start = struct.unpack("<H", pre[8:10]), 10
    elif major in (2, 3):
        more = f.read(2)
        if len(more) < 2:
            raise CorruptCheckpoint(f"{where}: truncated .npy header")
        (hlen,), start = struct.unpack("<I", pre[8:10] + more), 12
    else:
        raise UnsupportedSource(f"{where}: .npy format version {major}.{pre[7]}, which winspect does not read")
    if hlen > MAX_HEADER:
        raise CorruptCheckpoint(f"{where}: .npy header of {hlen} bytes (at most {MAX_HEADER} read)")
    text = f.read(hlen)
    if len(text) < hlen:
        raise CorruptCheckpoint(f"{where}: truncated .npy header")
    dtype, shape, fortran = _header_fields(text.decode("utf-8" if major == 3 else "latin1", errors="replace"), where)
    return NpyHeader(dtype, shape, fortran, start + hlen)


def _header_fields(text: str, where: str) -> tuple[np.dtype, tuple[int, ...], bool]:
    try:
        d = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
        raise CorruptCheckpoint(f"{where}: .npy header is not a Python literal") from None
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise CorruptCheckpoint(f"{where}: .npy header must hold exactly descr, fortran_order and shape")
    shape, fortran = d["shape"], d["fortran_order"]
    if not (isinstance(shape, tuple) and len(shape) <= MAX_NDIM and
            all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s for s in shape)) or \
            math.prod(shape) > MAX_NUMEL or not isinstance(fortran, bool):
        raise CorruptCheckpoint(f"{where}: .npy header has an invalid shape or fortran_order ({text[:80]!r})")
    try:
        dtype = np.lib.format.descr_to_dtype(d["descr"])
    except (TypeError, ValueError, KeyError, SyntaxError, RecursionError):
        raise CorruptCheckpoint(f"{where}: .npy header has an invalid descr {d['descr']!r:.80}") from None
    if dtype.hasobject:
        raise UnsafeCheckpoint(f"{where}: an object array: reading it means unpickling, which winspect never does "
                               "(allow_pickle=False); refused")
    if dtype.names is not None or dtype.subdtype is not None or dtype.kind not in "biuf":
        raise UnsupportedSource(f"{where}: array of type {dtype}, which winspect does not read (numbers only)")
    return dtype, tuple(shape), fortran


def _native(reader, dtype: np.dtype):
    """Chunks in native byte order (a big-endian array is swapped chunk by chunk)."""
    if dtype.isnative:
        return reader
    return lambda n: (c.astype(dtype.newbyteorder("=")) for c in reader(n))


@dataclass
class _Array:
    name: str
    header: NpyHeader
    reader: object
    range_reader: object | None


class NumpySource(OpenedSource):
    def __init__(self, source: str, fmt: str, arrays: list[_Array], single: bool):
        super().__init__(source, fmt)
        self.arrays = arrays
        self.kinds = infer_kinds([(a.name, a.header.shape) for a in arrays])
        if single:
            h = arrays[0].header
            self.kinds[arrays[0].name] = "weight" if len(h.shape) >= 2 and h.dtype.kind == "f" else "other"
            self.note("one array: its kind is guessed from its shape and its output axis is unknown")
        fortran = [a.name for a in arrays if a.header.fortran and len(a.header.shape) > 1]
        if fortran:
            self.note(f"{len(fortran)} arrays stored in Fortran order are read in storage order (no per-unit "
                      "analysis)")
        self.single = single

    def totals(self) -> tuple[int, int]:
        return len(self.arrays), sum(a.header.nbytes for a in self.arrays)

    def records(self) -> Iterator[TensorRecord]:
        for a in self.arrays:
            h, kind = a.header, self.kinds[a.name]
            axis = None if self.single or (h.fortran and len(h.shape) > 1) else default_out_axis(kind, h.shape, a.name)
            native = h.dtype.newbyteorder("=")
            yield TensorRecord(name=a.name, kind=kind, np_dtype=native, shape=h.shape,
                               reader=_native(a.reader, h.dtype), out_axis=axis, nbytes=h.nbytes,
                               range_reader=a.range_reader if h.dtype.isnative else None)


def _mapped(path: Path, begin: int, header: NpyHeader, size: int, where: str) -> tuple[object, MappedRange]:
    if begin + header.nbytes > size:
        raise CorruptCheckpoint(f"{where}: array data needs {header.nbytes} bytes but the file ends first "
                                "(truncated?)")
    # a remote file is read by byte range, a local one through a memory mapping
    rng = FileRange(path, begin, header.dtype) if hasattr(path, "open_range") else MappedRange(path, begin, header.dtype)
    numel = math.prod(header.shape)
    return (lambda n: rng(0, numel, n)), rng


def open_npy(source: str, path: Path) -> NumpySource:
    with path.open("rb") as f:
        header = read_npy_header(f, str(path))
    reader, rng = _mapped(path, header.size, header, path.stat().st_size, str(path))
    return NumpySource(source, "numpy", [_Array(path.name.removesuffix(".npy"), header, reader, rng)], True)


def open_npz(source: str, path: Path) -> NumpySource:
    arrays = []
    skipped = 0
    with check_zip(path) as zf:
        size = path.stat().st_size
        for info in zf.infolist():
            if not info.filename.endswith(".npy") or info.is_dir():
                skipped += 1
                continue
            arrays.append(_member(path, zf, info, size))
    if not arrays:
        raise CorruptCheckpoint(f"{path}: a zip archive holding no .npy arrays")
    names = [a.name for a in arrays]
    if len(set(names)) != len(names):
        raise CorruptCheckpoint(f"{path}: an array name appears twice in the archive")
    src = NumpySource(source, "numpy-npz", arrays, False)
    if skipped:
        src.note(f"{skipped} archive members that are not .npy arrays were ignored")
    return src


def _member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int) -> _Array:
    where = f"{path}: member {info.filename!r}"
    name = info.filename.removesuffix(".npy")
    try:
        with zf.open(info) as f:
            header = read_npy_header(f, where)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError, ValueError) as e:
        raise CorruptCheckpoint(f"{where}: unreadable ({str(e) or type(e).__name__})") from None
    if header.size + header.nbytes != info.file_size:
        raise CorruptCheckpoint(f"{where}: holds {info.file_size} bytes where its header describes "
                                f"{header.size + header.nbytes}")
    if info.compress_type == zipfile.ZIP_STORED:
        begin = stored_data_start(path, info) + header.size
        reader, rng = _mapped(path, begin, header, size, where)
        return _Array(name, header, reader, rng)
    return _Array(name, header, _inflating_reader(path, info.filename, header, where), None)


def _inflating_reader(path: Path, member: str, header: NpyHeader, where: str):
    numel = math.prod(header.shape)

    def read(max_elems: int) -> Iterator[np.ndarray]:
        try:
            with check_zip(path) as zf, zf.open(member) as f:
                f.read(header.size)
                yield from stream_chunks(f, header.dtype, numel, max_elems, f"{where}: ended while reading array data")
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, ValueError) as e:
            raise CorruptCheckpoint(f"{where}: unreadable ({str(e) or type(e).__name__})") from None

    return read


@register
class NumpyLoader(Loader):
    name = "numpy"
    title = "NumPy .npy"
    suffixes = (".npy",)
    order = 85
    reads_ranges = True

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        return head[:6] == MAGIC

    @classmethod
    def open(cls, source: str, options: LoadOptions) -> OpenedSource:
        return open_npy(source, as_path(source))


@register
class NpzLoader(Loader):
    name = "numpy-npz"
    title = "NumPy .npz"
    suffixes = (".npz",)
    order = 90

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        if head[:4] != b"PK\x03\x04":
            return False
        with zipfile.ZipFile(path) as z:
            names = z.namelist()[:10_000]
        return bool(names) and all(n.endswith(".npy") for n in names)

    @classmethod
    def open(cls, source: str, options: LoadOptions) -> OpenedSource:
        return open_npz(source, Path(source))
