"""Keras 3 ``.keras`` archives opened without extracting anything to disk.

The archive is checked before anything is read from it: the bounds of
:mod:`inspector.safety.zipcheck` (sizes, ratios, overlapping entries), at most ``MAX_MEMBERS`` members,
JSON members at most ``MAX_JSON_BYTES`` (read with that bound, so a lying header cannot
make them larger), no encrypted members. ``model.weights.h5`` is then handed to h5py as a
file-like object:

- stored uncompressed (what Keras writes): a read-only window onto the archive's own bytes,
  so no copy of the weights is made at all;
- compressed (an archive re-zipped by hand): decompressed into memory when it is at most
  ``MAX_INMEMORY_WEIGHTS`` bytes and its compression ratio is at most ``MAX_RATIO`` (HDF5 reads
  at random offsets, and seeking backwards in a compressed stream means decompressing again
  from the start); larger ones are refused with a message saying to unzip the file first.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CorruptCheckpoint, UnsupportedSource
from ..safety import zipcheck

MAX_MEMBERS = 10_000
MAX_JSON_BYTES = 64 << 20
MAX_INMEMORY_WEIGHTS = 512 << 20
MAX_RATIO = 200
WEIGHTS = "model.weights.h5"


@dataclass
class OpenedZip:
    weights: object
    config: dict
    meta: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    closers: list = field(default_factory=list)

    def close(self) -> None:
        for c in self.closers:
            c()


def open_keras_zip(path: Path) -> OpenedZip:
    """config.json, metadata.json and a file-like model.weights.h5 of a ``.keras`` archive."""
    f = open(path, "rb")
    try:
        z = zipfile.ZipFile(f)
        zipcheck.check_members(path, z.infolist(), path.stat().st_size, zipcheck.DEFAULT_LIMITS)
        members = check_members(path, z)
        config = read_json(path, z, members["config.json"])
        if not isinstance(config, dict):
            raise CorruptCheckpoint(f"{path}: config.json is not a JSON object")
        meta = {}
        if "metadata.json" in members:
            md = read_json(path, z, members["metadata.json"])
            if isinstance(md, dict):
                meta = {k: str(md[k]) for k in ("keras_version", "backend") if k in md}
        weights, note = weights_file(path, f, z, members[WEIGHTS])
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, struct.error) as e:
        f.close()
        raise CorruptCheckpoint(f"{path}: not a readable zip archive ({e})") from None
    except BaseException:
        f.close()
        raise
    return OpenedZip(weights, config, meta, [note] if note else [], [f.close])


def check_members(path: Path, z: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    infos = z.infolist()
    if len(infos) > MAX_MEMBERS:
        raise UnsupportedSource(f"{path}: archive has {len(infos)} members (more than {MAX_MEMBERS}); not a .keras file")
    members = {i.filename: i for i in infos}
    missing = [m for m in ("config.json", WEIGHTS) if m not in members]
    if missing:
        raise UnsupportedSource(f"{path}: zip archive without {' and '.join(missing)}; not a Keras 3 .keras file")
    for i in members.values():
        if i.flag_bits & 1:
            raise UnsupportedSource(f"{path}: member {i.filename} is encrypted")
    return members


def read_json(path: Path, z: zipfile.ZipFile, info: zipfile.ZipInfo):
    raw = zipcheck.read_member(z, info.filename, MAX_JSON_BYTES, path)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeError) as e:
        raise CorruptCheckpoint(f"{path}: {info.filename} is not readable JSON ({e})") from None


def weights_file(path: Path, f, z: zipfile.ZipFile, info: zipfile.ZipInfo):
    """(file-like model.weights.h5, note or None), without a copy when the member is stored."""
    if info.compress_type == zipfile.ZIP_STORED:  # check_members made sure it holds file_size bytes
        from ..safety.hdf5_child import Window as ZipWindow  # a read-only window (the module imports h5py)

        return ZipWindow(f, zipcheck.stored_data_start(path, info), info.file_size), None
    if info.file_size > MAX_INMEMORY_WEIGHTS or info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise UnsupportedSource(
            f"{path}: {WEIGHTS} is compressed inside the archive and expands to {info.file_size} bytes; "
            f"unzip the archive and inspect model.weights.h5 directly"
        )
    try:
        with z.open(info) as m:
            data = m.read(info.file_size + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise CorruptCheckpoint(f"{path}: cannot decompress {WEIGHTS} ({e})") from None
    if len(data) != info.file_size:
        raise CorruptCheckpoint(f"{path}: {WEIGHTS} holds {len(data)} bytes, not the {info.file_size} its header says")
    return io.BytesIO(data), f"{WEIGHTS} is compressed in the archive: decompressed into memory ({len(data):,} bytes)"
