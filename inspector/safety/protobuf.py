"""A bounded reader of protobuf wire format, for files too large to parse into memory.

The file is memory-mapped read-only and walked field by field: a message is a byte
range ``[start, end)``, and :meth:`ProtoFile.fields` yields each field's number, wire
type and where its value lies, without copying it. Length-delimited values (strings,
sub-messages, packed arrays, raw tensor bytes) are reported as ``(offset, length)``
and only read when asked for, so weights embedded in a protobuf are located by their
byte offsets and never loaded with the message around them. Every varint is at most
ten bytes, every length lies inside its parent message, group wire types and field
number 0 are refused: malformed input raises :class:`CorruptCheckpoint` naming the
byte where it went wrong.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from ..errors import CorruptCheckpoint

VARINT, I64, LEN, I32 = 0, 1, 2, 5
MAX_VARINT_BYTES = 10


class Field(NamedTuple):
    number: int
    wire: int
    value: int  # VARINT: the value; I32/I64/LEN: offset of the value's first byte
    length: int  # bytes of the value (0 for VARINT)
    start: int  # offset of the field's tag


class ProtoFile:
    """A protobuf-encoded file, mapped read-only; ``what`` names the format in errors."""

    def __init__(self, path: Path, what: str = "protobuf"):
        self.path = Path(path)
        self.what = what
        with open(self.path, "rb") as f:
            self.size = f.seek(0, 2)
            self.data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if self.size else b""

    def close(self) -> None:
        if isinstance(self.data, mmap.mmap):
            self.data.close()

    def fail(self, problem: str, pos: int) -> CorruptCheckpoint:
        return CorruptCheckpoint(f"{self.path}: malformed {self.what}: {problem} at byte {pos}")

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        """(value, position after it) of the varint at ``pos``, which must end before ``end``."""
        data, value, shift, start = self.data, 0, 0, pos
        while True:
            if pos >= end:
                raise self.fail("varint runs past the end of its message", start)
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value, pos
            shift += 7
            if pos - start >= MAX_VARINT_BYTES:
                raise self.fail("varint longer than 10 bytes", start)

    def fields(self, start: int, end: int) -> Iterator[Field]:
        """The fields of the message stored in ``[start, end)``, in file order."""
        if not 0 <= start <= end <= self.size:
            raise self.fail(f"message [{start}, {end}) outside the {self.size}-byte file", start)
        pos = start
        while pos < end:
            tag_pos = pos
            tag, pos = self.varint(pos, end)
            number, wire = tag >> 3, tag & 7
            if number == 0 or number >= 1 << 29:
                raise self.fail(f"field number {number}", tag_pos)
            if wire == VARINT:
                value, pos = self.varint(pos, end)
                yield Field(number, wire, value, 0, tag_pos)
                continue
            if wire == LEN:
                length, pos = self.varint(pos, end)
            elif wire in (I32, I64):
                length = 4 if wire == I32 else 8
            else:
                raise self.fail(f"wire type {wire} (groups and unknown types are not read)", tag_pos)
            if length > end - pos:
                raise self.fail(f"field {number} declares {length} bytes but its message has {end - pos} left",
                                tag_pos)
            yield Field(number, wire, pos, length, tag_pos)
            pos += length

    def bytes_at(self, offset: int, length: int, limit: int) -> bytes:
        """The bytes of a length-delimited value, refused above ``limit``."""
        if length > limit:
            raise self.fail(f"a {length}-byte string where at most {limit} are read", offset)
        return bytes(self.data[offset : offset + length])

    def text(self, field: Field, limit: int = 1 << 16) -> str:
        return self.bytes_at(field.value, field.length, limit).decode("utf-8", errors="replace")

    def fixed(self, field: Field, dtype: str) -> float | int:
        """The value of an I32/I64 field as a number of ``dtype`` (``<f4``, ``<f8``, ``<i8``...)."""
        return np.frombuffer(self.data, dtype=dtype, count=1, offset=field.value)[0].item()


def signed64(value: int) -> int:
    """A varint read as int64 (negative numbers are sign-extended to ten bytes)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def decode_varints(buf: np.ndarray) -> tuple[np.ndarray, int]:
    """The varints in ``buf`` (uint8) as uint64, and how many bytes they used: a varint cut off
    at the end of ``buf`` is left for the next call. Vectorised: no Python loop per value."""
    ends = np.flatnonzero(buf < 0x80)
    if ends.size == 0:
        return np.empty(0, np.uint64), 0
    used = int(ends[-1]) + 1
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > MAX_VARINT_BYTES:
        raise ValueError("varint longer than 10 bytes")
    body = buf[:used].astype(np.uint64) & np.uint64(0x7F)
    position = np.arange(used, dtype=np.int64) - np.repeat(starts, lengths)
    body <<= (position * 7).astype(np.uint64)
    return np.bitwise_or.reduceat(body, starts), used
