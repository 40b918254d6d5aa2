"""TensorRecord: one tensor of a checkpoint, with its metadata and a chunked reader.

Loaders yield records lazily. The analyzer only ever calls :meth:`TensorRecord.chunks`,
which yields 1-D numpy arrays of at most ``max_elems`` elements in the tensor's own
dtype (``ml_dtypes`` types for bf16 / f8). A yielded array may be a view into a buffer
that the reader reuses: it is valid only until the next chunk is requested.

Kinds: ``weight`` (linear/conv/embedding/attention matrices), ``bias``,
``norm`` (normalisation scale/shift), ``buffer`` (non-learned state), ``other``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

KINDS = ("weight", "bias", "norm", "buffer", "other")
# How a weight's axes are laid out: PyTorch ``(out, in, *kernel)`` (linear ``(out, in)``), or Keras
# ``(*kernel, in, out)`` (dense ``(in, out)``; transposed conv ``(*kernel, out, in)``).
LAYOUTS = ("pytorch", "keras")

ChunkReader = Callable[[int], Iterator[np.ndarray]]


@dataclass
class TensorRecord:
    name: str
    kind: str
    np_dtype: np.dtype  # element type; ml_dtypes types for bf16 / f8
    shape: tuple[int, ...]
    reader: ChunkReader = field(repr=False)
    layer: str | None = None
    out_axis: int | None = None  # axis of the output units, or None
    module_type: str | None = None  # e.g. "Conv2d", "Dense", when the source says
    tied_to: str | None = None  # name of an earlier record sharing this storage
    nbytes: int | None = None
    # optional reader of the values [start, stop) only: range_reader(start, stop, max_elems)
    range_reader: Callable[[int, int, int], Iterator[np.ndarray]] | None = field(default=None, repr=False)
    layout: str = "pytorch"  # one of LAYOUTS: whose axis conventions the stored shape follows
    # the type as stored, when the chunks hold other values (int8 weights read as their dequantized floats)
    stored_dtype: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}")
        self.shape = tuple(int(s) for s in self.shape)
        self.np_dtype = np.dtype(self.np_dtype)
        self.name = readable(self.name)
        self.tied_to = readable(self.tied_to)
        self.module_type = readable(self.module_type)
        if self.layer is None:
            self.layer = layer_of(self.name)

    @property
    def dtype(self) -> str:
        """Display name of the element type as stored: float32, bfloat16, float8_e4m3fn, int64, int8, ..."""
        return self.stored_dtype or self.np_dtype.name

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def chunks(self, max_elems: int) -> Iterator[np.ndarray]:
        """Yield the tensor's values, flattened in C order, in chunks of <= max_elems."""
        return self.reader(max_elems)

    def range_chunks(self, start: int, stop: int, max_elems: int) -> Iterator[np.ndarray]:
        """Like :meth:`chunks`, for the flat values [start, stop) only (needs ``range_reader``)."""
        return self.range_reader(start, stop, max_elems)


def readable(text: str | None) -> str | None:
    """``text`` as Unicode that every output can encode: a lone surrogate (a file's JSON escape ``\\ud800``,
    or a byte that is not UTF-8 kept by ``surrogateescape``) becomes its backslash escape."""
    if text is None or text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def layer_of(name: str) -> str:
    """Module path of a tensor name: the name without its last component."""
    for sep in (".", "/"):
        if sep in name:
            return name.rsplit(sep, 1)[0]
    return ""


def array_range_reader(arr: np.ndarray):
    """A range reader (see :meth:`TensorRecord.range_chunks`) over an array, without copying it."""

    def read(start: int, stop: int, max_elems: int) -> Iterator[np.ndarray]:
        return array_reader(arr.reshape(-1)[start:stop])(max_elems)

    return read


def array_reader(arr: np.ndarray) -> ChunkReader:
    """A reader over an in-memory (or memory-mapped) numpy array, without copying it."""

    def read(max_elems: int) -> Iterator[np.ndarray]:
        flat = arr.reshape(-1)
        for start in range(0, flat.size, max_elems):
            yield flat[start : start + max_elems]

    return read


def exact_chunks(segments: Iterator[np.ndarray], max_elems: int, dtype) -> Iterator[np.ndarray]:
    """Re-cut a stream of arrays into chunks of exactly ``max_elems`` values (the last may be shorter),
    copying only where a chunk spans two segments (through one reused buffer)."""
    buf, fill = np.empty(max_elems, dtype=dtype), 0
    for seg in segments:
        i = 0
        while i < seg.size:
            if fill == 0 and seg.size - i >= max_elems:
                yield seg[i : i + max_elems]
                i += max_elems
                continue
            k = min(max_elems - fill, seg.size - i)
            buf[fill : fill + k] = seg[i : i + k]
            fill, i = fill + k, i + k
            if fill == max_elems:
                yield buf
                fill = 0
    if fill:
        yield buf[:fill]
