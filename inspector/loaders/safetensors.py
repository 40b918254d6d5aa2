"""safetensors: single files, sharded checkpoints (``*.safetensors.index.json``) and
Hugging Face model directories.

The header is parsed and validated against the file size before any tensor data is
read. Tensor data is read with plain file reads into one buffer per read, reused from
tensor to tensor (:mod:`~inspector.loaders.buffers`), so a tensor of any size needs only one
chunk of memory. (Memory-mapping large ranges saved the copy, about 0.1 ns per byte, on a
quiet machine, but its page faults cost more than the copy on a busy one, and more still when
the file is not in the page cache: reads it is.)
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np

from ..dtypes import SAFETENSORS_DTYPES
from ..errors import CorruptCheckpoint, UnsupportedSource
from ..kinds import classify
from ..records import TensorRecord
from ..remote.path import as_path, open_at
from . import Loader, LoadOptions, OpenedSource, buffers, register
from .shards import is_json_index, is_json_index_head, parse_json, shards_of_index

MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit


@dataclass(slots=True)
class _Entry:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int  # absolute file offsets
    end: int
    path: Path


MAX_NDIM = 64
MAX_DIM = (1 << 63) - 1  # the reference reader's usize


def read_header(path: Path) -> tuple[list[_Entry], dict]:
    """Validated tensor entries of one safetensors file, in file-offset order, and its metadata."""
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CorruptCheckpoint(f"{path}: truncated safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER or n + 8 > size:
            raise CorruptCheckpoint(
                f"{path}: safetensors header length {n} is larger than "
                f"{'the file' if n + 8 > size else 'the 100 MB limit'} ({size} bytes)"
            )
        blob = f.read(n)
    header = parse_json(blob, path, "safetensors header")
    if not isinstance(header, dict):
        raise CorruptCheckpoint(f"{path}: safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CorruptCheckpoint(f"{path}: safetensors __metadata__ must map names to strings, not {meta!r:.80}")
    data_start = 8 + n
    entries = []
    for name in header:  # each tensor's parsed JSON let go once read (a header may list a million)
        entries.append(_entry(path, name, header[name], data_start, size))
        header[name] = None
    entries.sort(key=lambda e: (e.begin, e.end))
    for prev, cur in zip(entries, entries[1:]):
        if cur.begin < prev.end:
            raise CorruptCheckpoint(f"{path}: tensors {prev.name!r} and {cur.name!r} overlap in the data section")
    return entries, meta


def _is_count(x, limit: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= limit


def _entry(path: Path, name: str, info, data_start: int, size: int) -> _Entry:
    if not isinstance(info, dict):
        raise CorruptCheckpoint(f"{path}: tensor {name!r} has no dtype/shape/data_offsets")
    code, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(code, str) or code not in SAFETENSORS_DTYPES:
        raise UnsupportedSource(f"{path}: tensor {name!r} has dtype {code!r:.40}, which winspect does not read")
    if not (isinstance(shape, list) and len(shape) <= MAX_NDIM and all(_is_count(s, MAX_DIM) for s in shape)):
        raise CorruptCheckpoint(f"{path}: tensor {name!r} has an invalid shape {shape!r:.80}")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(_is_count(o, MAX_DIM) for o in offsets)
        and offsets[0] <= offsets[1]
    ):
        raise CorruptCheckpoint(f"{path}: tensor {name!r} has invalid data_offsets {offsets!r:.80}")
    dtype = SAFETENSORS_DTYPES[code]
    nbytes = math.prod(shape) * dtype.itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise CorruptCheckpoint(
            f"{path}: tensor {name!r} needs {nbytes} bytes for {code}{shape} but its offsets span "
            f"{offsets[1] - offsets[0]}"
        )
    begin, end = data_start + offsets[0], data_start + offsets[1]
    if end > size:
        raise CorruptCheckpoint(f"{path}: tensor {name!r} ends at byte {end}, past the end of the file ({size} bytes)")
    return _Entry(name, dtype, tuple(shape), begin, end, path)


def file_reader(path: Path, begin: int, dtype: np.dtype, numel: int):
    """Chunked reader over a contiguous run of values in a file, through one reused buffer."""

    def read(max_elems: int) -> Iterator[np.ndarray]:
        if numel == 0:
            return
        with open_at(path, begin, begin + numel * dtype.itemsize) as f:
            yield from stream_chunks(f, dtype, numel, max_elems,
                                     f"{path}: file ended while reading tensor data at byte {begin}")

    return read


def stream_chunks(f, dtype: np.dtype, numel: int, max_elems: int, ended: str) -> Iterator[np.ndarray]:
    """``numel`` values read from the open binary stream ``f`` in chunks of at most ``max_elems``,
    through one buffer (reused from read to read, see :mod:`~inspector.loaders.buffers`);
    CorruptCheckpoint(``ended``) when the stream ends first."""
    size = max(1, min(max_elems, numel))
    store = buffers.take(size * dtype.itemsize)
    try:
        yield from _fill(f, store[: size * dtype.itemsize].view(dtype), numel, ended)
    finally:
        buffers.give(store)


def _fill(f, buf: np.ndarray, numel: int, ended: str) -> Iterator[np.ndarray]:
    raw = memoryview(buf.view(np.uint8))
    item, done = buf.dtype.itemsize, 0
    try:
        while done < numel:
            k = min(buf.size, numel - done)
            want = k * item
            got = 0
            while got < want:  # short reads are allowed by the OS and by decompressors
                more = f.readinto(raw[got:want])
                if not more:
                    raise CorruptCheckpoint(ended)
                got += more
            yield buf[:k]
            done += k
    finally:
        raw.release()


@dataclass(frozen=True)
class FileRange:
    """Range reader (see TensorRecord.range_chunks) over values stored from byte ``begin`` of a file."""

    path: Path
    begin: int
    dtype: np.dtype

    def __call__(self, start: int, stop: int, max_elems: int) -> Iterator[np.ndarray]:
        return file_reader(self.path, self.begin + start * self.dtype.itemsize, self.dtype, stop - start)(max_elems)

    def whole(self, numel: int):
        """A chunk reader (see TensorRecord.chunks) over the ``numel`` values from ``begin``."""
        return partial(self, 0, numel)


class SafetensorsSource(OpenedSource):
    def __init__(self, source: str, files: list[Path], fmt: str):
        super().__init__(source, fmt)
        self.entries: list[_Entry] = []
        for path in files:
            entries, meta = read_header(path)
            self.entries.extend(entries)
            if meta and "metadata" not in self.meta:
                self.meta["metadata"] = dict(meta)
        seen: dict[str, Path] = {}
        for e in self.entries:
            if e.name in seen:
                raise CorruptCheckpoint(f"{source}: tensor {e.name!r} appears in both {seen[e.name]} and {e.path}")
            seen[e.name] = e.path
        self.meta["files"] = [str(p) for p in files]
        self.classes = classify([(e.name, e.shape) for e in self.entries])
        self.meta["order"] = stored_order(self.entries)

    def totals(self) -> tuple[int, int]:
        return len(self.entries), sum(e.end - e.begin for e in self.entries)

    def records(self) -> Iterator[TensorRecord]:
        for e in self.entries:
            c = self.classes[e.name]
            values = FileRange(e.path, e.begin, e.dtype)
            yield TensorRecord(
                name=e.name,
                kind=c.kind,
                np_dtype=e.dtype,
                shape=e.shape,
                reader=values.whole(math.prod(e.shape)),
                range_reader=values,
                out_axis=c.out_axis,
                module_type=c.module_type,
                nbytes=e.end - e.begin,
            )


def stored_order(entries: list[_Entry]) -> str:
    """``natural`` when the writer sorted the names, as the safetensors library does (by element
    size, then name): the modules' order is lost, so the tables use the names' natural order.
    ``file`` when the offsets follow another order, which the writer chose (often the modules')."""
    groups: dict[tuple, list[str]] = {}
    for e in entries:
        groups.setdefault((e.path, e.dtype.itemsize), []).append(e.name)
    return "natural" if all(g == sorted(g) for g in groups.values()) else "file"


@register
class SafetensorsLoader(Loader):
    name = "safetensors"
    title = "safetensors (.safetensors, a shard index or a model directory)"
    dir_hint = "model.safetensors, *.safetensors shards with an index"
    suffixes = (".safetensors",)
    takes_dirs = True
    reads_ranges = True
    order = 10

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        if len(head) < 9:
            return False
        (n,) = struct.unpack("<Q", head[:8])
        return head[8:9] == b"{" and 2 <= n <= MAX_HEADER

    @classmethod
    def accepts_dir(cls, path: Path) -> bool:
        return cls._dir_target(path) is not None

    @staticmethod
    def _dir_target(path: Path) -> Path | None:
        if (path / "model.safetensors").is_file():
            return path / "model.safetensors"
        indexes = sorted(path.glob("*.safetensors.index.json"))
        if indexes:
            return indexes[0]
        files = sorted(path.glob("*.safetensors"))
        if len(files) == 1:
            return files[0]
        return None

    @classmethod
    def files(cls, path: Path) -> list[Path]:
        target = cls._dir_target(path) if path.is_dir() else path
        return [target, *shards_of_index(target)] if is_json_index(target) else [target]

    @classmethod
    def open(cls, source: str, options: LoadOptions) -> OpenedSource:
        path = as_path(source)
        if path.is_dir():
            path = cls._dir_target(path)
        if is_json_index(path):
            files = shards_of_index(path)
            src = SafetensorsSource(source, files, "safetensors-sharded")
            src.note(f"{len(files)} shards from {path.name}")
            return src
        return SafetensorsSource(source, [path], "safetensors")


@register
class SafetensorsShardedLoader(Loader):
    """A shard index named directly: ``model.safetensors.index.json``."""

    name = "safetensors-sharded"
    suffixes = (".safetensors.index.json",)
    order = 20
    reads_ranges = True

    @classmethod
    def files(cls, path: Path) -> list[Path]:
        return [path, *shards_of_index(path)]

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        return is_json_index_head(path, head) and not path.name.endswith(".bin.index.json")

    @classmethod
    def open(cls, source: str, options: LoadOptions) -> OpenedSource:
        path = as_path(source)
        files = shards_of_index(path)
        src = SafetensorsSource(source, files, "safetensors-sharded")
        src.note(f"{len(files)} shards from {path.name}")
        return src
