"""GGUF (versions 2 and 3): the files of llama.cpp, Ollama and LM Studio.

The header, the metadata and the tensor infos are parsed and validated against the file
size before any tensor data is read: every declared length (strings, arrays, counts) must fit
in the bytes that remain, dimensions must multiply to a sane element count, types must be
ggml types, and tensors must lie inside the data section without overlapping. Shapes are
given in numpy order (GGUF stores them innermost first).

Plain tensors (F32, F16, BF16, F64, I8…I64) are read as they are stored. Quantized tensors
are read as their real values, block by block (:mod:`.dequant`): the types in
``dequant.DECODED`` by winspect's own kernels, any other that gguf-py can dequantize through
it, and the rest are skipped with a note. ``dtype`` shows the stored GGUF type (``Q4_K``).
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import CorruptCheckpoint, UnsupportedSource
from ..records import TensorRecord, exact_chunks, layer_of
from . import Loader, LoadOptions, OpenedSource, gguf_names, register
from .dequant import DECODED, RETIRED, dequantize, gguf_decoder, gguf_installed, lookup
from ..remote.path import HEAD_BYTES, as_path, open_at
from .safetensors import FileRange

MAGIC = b"GGUF"
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME = 1 << 16
MAX_DEPTH = 4  # arrays of arrays
MAX_NUMEL = (1 << 63) - 1
KEPT_STRING = 200  # metadata strings longer than this are shortened in the report
LONG_STRING = 1 << 16  # longer metadata strings are not read whole
KEPT_ARRAY = 16  # numeric arrays longer than this are summarised
SCALARS = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4), 6: ("<f", 4),
           7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8)}
STRING, ARRAY = 8, 9
VALUE_NAMES = {0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32", 6: "float32", 7: "bool",
               STRING: "string", ARRAY: "array", 10: "uint64", 11: "int64", 12: "float64"}


MAX_REMOTE_HEADER = 256 * 1024 * 1024


class _Cursor:
    """Bounded little-endian reads from the file's bytes; running past the end is a corrupt file."""

    def __init__(self, buf, path: Path):
        self.buf, self.path, self.pos, self.size = buf, path, 0, len(buf)

    def fail(self, what: str):
        raise CorruptCheckpoint(f"{self.path}: {what}")

    def left(self) -> int:
        return self.size - self.pos

    def unpack(self, fmt: str, n: int, what: str):
        if n > self.left():
            self.fail(f"file ends inside {what} at byte {self.pos} (truncated GGUF file, {self.size} bytes)")
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v

    def u32(self, what: str) -> int:
        return self.unpack("<I", 4, what)

    def u64(self, what: str) -> int:
        return self.unpack("<Q", 8, what)

    def string(self, what: str, limit: int | None = None, keep: int | None = None) -> str:
        """A length-prefixed UTF-8 string, shortened to ``keep`` characters when longer; one longer than
        ``LONG_STRING`` bytes is never copied whole (it is kept as its first characters and its length)."""
        n = self.u64(f"the length of {what}")
        if n > self.left() or (limit is not None and n > limit):
            self.fail(f"{what} declares {n} bytes at byte {self.pos - 8}, more than the "
                      f"{'file holds' if n > self.left() else f'{limit}-byte limit'}")
        raw = bytes(self.buf[self.pos : self.pos + min(n, LONG_STRING)])
        self.pos += n
        if n > LONG_STRING:
            return raw.decode("utf-8", errors="ignore")[: keep or KEPT_STRING] + f"… ({n} bytes)"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{what} is not UTF-8 text")
        return text if keep is None or len(text) <= keep else text[:keep] + f"… ({len(text)} characters)"

    def value(self, vtype: int, what: str, depth: int = 0):
        """One metadata value; long arrays are walked (bounded) and summarised."""
        if vtype in SCALARS:
            return self.unpack(*SCALARS[vtype], what)
        if vtype == STRING:
            return self.string(what, keep=KEPT_STRING)
        if vtype == ARRAY and depth < MAX_DEPTH:
            return self.array(what, depth)
        self.fail(f"{what} has value type {vtype}, which is not a GGUF value type"
                  if vtype != ARRAY else f"{what} nests arrays deeper than {MAX_DEPTH}")

    def array(self, what: str, depth: int):
        etype = self.u32(f"the element type of {what}")
        count = self.u64(f"the length of {what}")
        least = SCALARS[etype][1] if etype in SCALARS else 8 if etype in (STRING, ARRAY) else 1
        if count * least > self.left():
            self.fail(f"{what} declares {count} elements, more than the file holds")
        if etype in SCALARS and count > KEPT_ARRAY:
            self.pos += count * least
            return f"[{count} × {VALUE_NAMES[etype]}]"
        items = [self.value(etype, what, depth + 1) for _ in range(count)]
        return items if count <= KEPT_ARRAY else f"[{count} × {VALUE_NAMES.get(etype, etype)}]"


@dataclass
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # numpy order
    type_id: int
    begin: int  # absolute file offset
    nbytes: int

    @property
    def type_name(self) -> str:
        t = lookup(self.type_id)
        return t.name if t else RETIRED.get(self.type_id, str(self.type_id))

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class GGUFHeader:
    version: int
    metadata: dict
    tensors: list[GGUFTensor]
    alignment: int
    data_start: int


def _version(cur: _Cursor) -> int:
    if bytes(cur.buf[:4]) != MAGIC:
        cur.fail("not a GGUF file (no GGUF magic)")
    cur.pos = 4
    version = cur.u32("the GGUF version")
    if version in (2, 3):
        return version
    if version == 1:
        raise UnsupportedSource(f"{cur.path}: GGUF version 1 (the 2023 draft) is not read; convert it with a "
                                "current llama.cpp")
    if int.from_bytes(version.to_bytes(4, "little"), "big") in (2, 3):
        raise UnsupportedSource(f"{cur.path}: a big-endian GGUF file, which winspect does not read")
    cur.fail(f"unknown GGUF version {version}")


def _metadata(cur: _Cursor, count: int) -> dict:
    meta = {}
    for i in range(count):
        key = cur.string(f"metadata key {i}", MAX_NAME)
        vtype = cur.u32(f"the value type of {key!r}")
        if key in meta:
            cur.fail(f"metadata key {key!r} appears twice")
        meta[key] = cur.value(vtype, f"metadata {key!r}")
    return meta


def _alignment(cur: _Cursor, meta: dict) -> int:
    align = meta.get("general.alignment", 32)
    if not isinstance(align, int) or isinstance(align, bool) or align <= 0 or align & (align - 1):
        cur.fail(f"general.alignment {align!r:.40} is not a power of two")
    return align


def _tensor_info(cur: _Cursor, i: int):
    name = cur.string(f"the name of tensor {i}", MAX_NAME)
    ndim = cur.u32(f"the dimension count of {name!r}")
    if ndim > MAX_DIMS:
        cur.fail(f"tensor {name!r} has {ndim} dimensions (GGUF allows at most {MAX_DIMS})")
    dims = [cur.u64(f"the dimensions of {name!r}") for _ in range(ndim)]
    type_id = cur.u32(f"the type of {name!r}")
    offset = cur.u64(f"the data offset of {name!r}")
    if lookup(type_id) is None and type_id not in RETIRED:
        cur.fail(f"tensor {name!r} has type {type_id}, which is not a ggml tensor type")
    numel = math.prod(dims)
    if numel > MAX_NUMEL:
        cur.fail(f"tensor {name!r} has dimensions {dims} whose product overflows 64 bits")
    return name, tuple(reversed(dims)), type_id, offset, numel


def _tensor_size(cur: _Cursor, name: str, dims: tuple[int, ...], type_id: int, numel: int) -> int:
    t = lookup(type_id)
    if t is None:  # retired type: the extent is unknown, the tensor will be skipped
        return 0
    row = dims[-1] if dims else 1
    if row % t.block:
        cur.fail(f"tensor {name!r} of type {t.name} has rows of {row} values, not whole {t.block}-value blocks")
    return numel // t.block * t.size


def read_header(path: Path) -> GGUFHeader:
    """The validated header of a GGUF file: version, metadata, tensor infos in file order."""
    if hasattr(path, "open_range"):
        return _remote_header(path)
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size < 24:
            raise CorruptCheckpoint(f"{path}: truncated GGUF file ({size} bytes)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            cur = _Cursor(memoryview(mm), path)
            try:
                header = _parse(cur)
            finally:
                cur.buf.release()
    return header


def _remote_header(path) -> GGUFHeader:
    """The header of a remote GGUF file, read from its front in growing range requests (the first
    ``HEAD_BYTES``, then four times as much each time) until it parses."""
    size = path.stat().st_size
    if size < 24:
        raise CorruptCheckpoint(f"{path}: truncated GGUF file ({size} bytes)")
    blob, want = b"", HEAD_BYTES
    while True:
        with open_at(path, len(blob), min(want, size)) as f:
            blob += f.read()
        cur = _Cursor(memoryview(blob), path)
        cur.size = size  # checks against the file's end, reads within what has come
        try:
            header = _parse(cur)
            if cur.pos <= len(blob):
                return header
        except (struct.error, CorruptCheckpoint):  # ran past what has come (or a string cut in two)
            if len(blob) >= min(size, MAX_REMOTE_HEADER):
                raise
        finally:
            cur.buf.release()
        if len(blob) >= min(size, MAX_REMOTE_HEADER):
            raise CorruptCheckpoint(f"{path}: GGUF header larger than {MAX_REMOTE_HEADER} bytes")
        want *= 4


def _parse(cur: _Cursor) -> GGUFHeader:
    version = _version(cur)
    n_tensors = cur.u64("the tensor count")
    n_kv = cur.u64("the metadata count")
    if n_tensors * 24 > cur.left() or n_kv * 13 > cur.left():
        cur.fail(f"header declares {n_tensors} tensors and {n_kv} metadata entries, more than the file holds")
    meta = _metadata(cur, n_kv)
    align = _alignment(cur, meta)
    infos = [_tensor_info(cur, i) for i in range(n_tensors)]
    data_start = -(-cur.pos // align) * align
    tensors, seen = [], set()
    for name, dims, type_id, offset, numel in infos:
        if name in seen:
            cur.fail(f"tensor {name!r} appears twice")
        seen.add(name)
        nbytes = _tensor_size(cur, name, dims, type_id, numel)
        if offset % align:
            cur.fail(f"tensor {name!r} starts at data offset {offset}, not a multiple of the alignment {align}")
        if data_start + offset + nbytes > cur.size:
            cur.fail(f"tensor {name!r} ends at byte {data_start + offset + nbytes}, past the end of the file "
                     f"({cur.size} bytes)")
        tensors.append(GGUFTensor(name, dims, type_id, data_start + offset, nbytes))
    _check_overlaps(cur, sorted(tensors, key=lambda t: (t.begin, t.nbytes)))
    return GGUFHeader(version, meta, tensors, align, data_start)


def _check_overlaps(cur: _Cursor, ordered: list[GGUFTensor]) -> None:
    for prev, t in zip(ordered, ordered[1:]):
        if t.begin < prev.begin + prev.nbytes:
            cur.fail(f"tensors {prev.name!r} and {t.name!r} overlap in the data section")


# --- reading values -------------------------------------------------------------------------


def _read_exact(f, view: memoryview, path: Path) -> None:
    got = 0
    while got < len(view):
        more = f.readinto(view[got:])
        if not more:
            raise CorruptCheckpoint(f"{path}: file ended while reading tensor data")
        got += more


@dataclass(frozen=True)
class QuantRange:
    """Range reader (TensorRecord.range_chunks) over the real values of a quantized tensor stored from
    byte ``begin``: whole blocks are read and decoded, then cut to [start, stop)."""

    path: Path
    begin: int
    type_id: int

    def __call__(self, start: int, stop: int, max_elems: int) -> Iterator[np.ndarray]:
        return exact_chunks(self._segments(start, stop, max_elems), max_elems, np.float32)

    def _segments(self, start: int, stop: int, max_elems: int) -> Iterator[np.ndarray]:
        if stop <= start:
            return
        t = lookup(self.type_id)
        decode = None if self.type_id in DECODED else gguf_decoder(self.type_id)
        first, last = start // t.block, -(-stop // t.block)
        per = max(1, -(-max_elems // t.block))  # blocks per read: at least one chunk's worth
        raw = bytearray(per * t.size)
        out = np.empty(per * t.block, dtype=np.float32)
        with open_at(self.path, self.begin + first * t.size, self.begin + last * t.size) as f:
            for b0 in range(first, last, per):
                nb = min(per, last - b0)
                view = memoryview(raw)[: nb * t.size]
                _read_exact(f, view, self.path)
                vals = dequantize(self.type_id, view, out) if decode is None else decode(view)
                lo, hi = max(start - b0 * t.block, 0), min(stop - b0 * t.block, nb * t.block)
                yield vals[lo:hi]


# --- names, kinds, axes ---------------------------------------------------------------------

BUFFERS = ("rope_freqs", "rope_factors_long", "rope_factors_short")
EMBEDDINGS = ("token_embd", "pos_embd", "token_types", "per_layer_token_embd")


def kind_of(name: str, shape: tuple[int, ...]) -> str:
    """The kind of a GGUF tensor from llama.cpp's naming (``blk.N.attn_q.weight``, ``output_norm.weight``)."""
    leaf = name.rsplit(".", 1)[-1]
    base = layer_of(name).rsplit(".", 1)[-1]
    if base in BUFFERS:
        return "buffer"
    if "norm" in base and leaf in ("weight", "bias"):
        return "norm"
    if leaf == "bias":
        return "bias"
    if leaf == "weight" and len(shape) >= 2:
        return "weight"
    return "other"


def out_axis_of(name: str, kind: str, shape: tuple[int, ...]) -> int | None:
    """Rows of a matrix are its output units: axis 0, or 1 for a stack of expert matrices; none for embeddings."""
    if kind != "weight" or len(shape) < 2:
        return None
    if layer_of(name).rsplit(".", 1)[-1] in EMBEDDINGS:
        return None
    return 1 if len(shape) == 3 else 0


class GGUFSource(OpenedSource):
    def __init__(self, source: str, path: Path):
        super().__init__(source, "gguf")
        self.path = path
        self.header = header = read_header(path)
        meta = header.metadata
        arch = meta.get("general.architecture")
        self.meta["files"] = [str(path)]
        self.meta["metadata"] = meta
        self.meta["gguf"] = {"version": header.version, "architecture": arch, "alignment": header.alignment,
                             "quantization_version": meta.get("general.quantization_version"),
                             "file_type": meta.get("general.file_type")}
        self.note(f"GGUF v{header.version}, architecture {arch or 'not given'}, alignment {header.alignment}"
                  + (f", quantization version {meta['general.quantization_version']}"
                     if "general.quantization_version" in meta else ""))
        self.readable = [t for t in header.tensors if self._decoder_for(t) is not None]
        self._note_skipped([t for t in header.tensors if self._decoder_for(t) is None])
        self.meta["quantized_dtypes"] = sorted({t.type_name for t in self.readable if lookup(t.type_id).dtype is None})

    @staticmethod
    def _decoder_for(t: GGUFTensor):
        """'plain', 'native' or 'gguf' for a tensor winspect can read, None for one it cannot."""
        gt = lookup(t.type_id)
        if gt is None:
            return None
        if gt.dtype is not None:
            return "plain"
        if t.type_id in DECODED:
            return "native"
        return "gguf" if gguf_decoder(t.type_id) is not None else None

    def _note_skipped(self, tensors: list[GGUFTensor]) -> None:
        skipped: dict[str, int] = {}
        for t in tensors:
            skipped[t.type_name] = skipped.get(t.type_name, 0) + 1
        why = "neither winspect nor gguf-py dequantizes that type" if gguf_installed() else \
            "winspect does not dequantize that type and gguf-py, which may, is not installed (pip install gguf)"
        for name, n in skipped.items():
            self.note(f"{n} tensor(s) of type {name} skipped: {why}")

    def adopt(self, records: list[TensorRecord]) -> tuple[list[TensorRecord], list[str]]:
        return gguf_names.adopt(records, {t.name for t in self.readable}, self.header.metadata)

    def totals(self) -> tuple[int, int]:
        return len(self.readable), sum(t.nbytes for t in self.readable)

    def records(self) -> Iterator[TensorRecord]:
        for t in self.readable:
            yield self.record(t)

    def record(self, t: GGUFTensor) -> TensorRecord:
        gt = lookup(t.type_id)
        kind = kind_of(t.name, t.shape)
        if gt.dtype is not None:
            rng, dtype, stored = FileRange(self.path, t.begin, gt.dtype), gt.dtype, None
            reader = rng.whole(t.numel)
        else:
            rng, dtype, stored = QuantRange(self.path, t.begin, t.type_id), np.dtype(np.float32), gt.name
            reader = _whole(rng, t.numel)
        return TensorRecord(name=t.name, kind=kind, np_dtype=dtype, shape=t.shape, reader=reader, range_reader=rng,
                            out_axis=out_axis_of(t.name, kind, t.shape), nbytes=t.nbytes, stored_dtype=stored)


def _whole(rng: QuantRange, numel: int):
    def read(max_elems: int) -> Iterator[np.ndarray]:
        return rng(0, numel, max_elems)

    return read


@register
class GGUFLoader(Loader):
    name = "gguf"
    title = "GGUF .gguf (llama.cpp, Ollama; quantized weights as real values)"
    suffixes = (".gguf",)
    order = 15  # a certain 4-byte magic
    reads_ranges = True

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        return head[:4] == MAGIC

    @classmethod
    def open(cls, source: str, options: LoadOptions) -> OpenedSource:
        return GGUFSource(source, as_path(source))
