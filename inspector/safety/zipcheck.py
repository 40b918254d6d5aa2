"""Bounds on zip archives (PyTorch zip checkpoints, ``.keras`` files), checked before reading.

Only the central directory is read to check the limits: member count, each member's
and the total uncompressed size, the compression ratio, and that members do not share
bytes (overlapping entries are how small zips claim enormous contents). Members are
then read with :func:`read_member`, which never returns more than its bound.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import CorruptCheckpoint

GIB = 1 << 30


@dataclass(frozen=True)
class ZipLimits:
    max_members: int = 200_000
    max_member_size: int = 256 * GIB  # uncompressed, any one member
    max_total_size: int = 1024 * GIB  # uncompressed, all members together
    max_ratio: float = 1100.0  # deflate cannot exceed ~1032:1; more means a lying header


DEFAULT_LIMITS = ZipLimits()


def _fail(path, problem: str) -> CorruptCheckpoint:
    return CorruptCheckpoint(f"{path}: refused zip archive: {problem}")


def check_zip(path, limits: ZipLimits | None = None) -> zipfile.ZipFile:
    """An open ZipFile whose central directory is within ``limits`` (default DEFAULT_LIMITS);
    CorruptCheckpoint otherwise."""
    path = Path(path)
    limits = limits or DEFAULT_LIMITS
    try:
        archive_size = path.stat().st_size
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise _fail(path, f"not a readable zip ({str(e) or type(e).__name__})") from None
    try:
        check_members(path, zf.infolist(), archive_size, limits)
    except CorruptCheckpoint:
        zf.close()
        raise
    return zf


def check_members(path, infos: list[zipfile.ZipInfo], archive_size: int, limits: ZipLimits) -> None:
    if len(infos) > limits.max_members:
        raise _fail(path, f"{len(infos)} members, more than the limit of {limits.max_members}")
    total = packed = 0
    for info in infos:
        name = info.filename
        if info.file_size > limits.max_member_size:
            raise _fail(path, f"member {name!r} claims {info.file_size} bytes uncompressed "
                              f"(limit {limits.max_member_size})")
        if info.header_offset + info.compress_size > archive_size:
            raise _fail(path, f"member {name!r} extends past the end of the archive (truncated file?)")
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise _fail(path, f"stored member {name!r} claims {info.file_size} bytes but holds {info.compress_size}")
        if info.file_size > 1 << 20 and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise _fail(path, f"member {name!r} claims a compression ratio above {limits.max_ratio:.0f}:1 "
                              f"({info.compress_size} -> {info.file_size} bytes)")
        total += info.file_size
        packed += info.compress_size
    if total > limits.max_total_size:
        raise _fail(path, f"members claim {total} bytes uncompressed in all (limit {limits.max_total_size})")
    if packed > archive_size:
        raise _fail(path, f"members claim {packed} compressed bytes in a {archive_size}-byte archive "
                          "(overlapping entries)")


def read_member(zf: zipfile.ZipFile, name: str, max_bytes: int, path=None) -> bytes:
    """The uncompressed bytes of one member, refusing members larger than ``max_bytes``."""
    where = path or zf.filename
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise CorruptCheckpoint(f"{where}: zip member {name!r} is missing") from None
    if info.file_size > max_bytes:
        raise _fail(where, f"member {name!r} is {info.file_size} bytes, more than the {max_bytes} winspect reads")
    try:
        with zf.open(info) as f:
            data = f.read(max_bytes + 1)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as e:
        raise CorruptCheckpoint(f"{where}: zip member {name!r} is unreadable ({str(e) or type(e).__name__})") from None
    if len(data) > max_bytes:  # pragma: no cover - zipfile stops at the declared size
        raise _fail(where, f"member {name!r} is larger than its header says")
    return data


def stored_data_start(path, info: zipfile.ZipInfo) -> int:
    """Where a member's bytes begin in the archive: after its local header, whose name and extra field
    lengths may differ from the central directory's; CorruptCheckpoint when there is no local header
    there or the member would run past the end of the file."""
    path = Path(path)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise CorruptCheckpoint(f"{path}: member {info.filename!r} has no local header where the directory says")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    begin = info.header_offset + 30 + name_len + extra_len
    if begin + info.compress_size > path.stat().st_size:
        raise CorruptCheckpoint(f"{path}: member {info.filename!r} extends past the end of the file")
    return begin
