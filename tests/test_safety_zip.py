"""Zip archives (PyTorch zip checkpoints; the helper is shared with .keras files) are bounded
from their central directory before any member is read."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest

from inspector import CorruptCheckpoint, inspect
from inspector.safety import zipcheck
from inspector.safety.zipcheck import ZipLimits, check_zip, read_member
from tests.helpers import make_torch_zip


def keras_like(path, weights: bytes = b"\0" * (2 << 20)) -> bytes:
    """A .keras-shaped archive: config.json, metadata.json and a deflated weights member."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", '{"class_name": "Sequential"}')
        z.writestr("metadata.json", "{}")
        z.writestr("model.weights.h5", weights)
    return path.read_bytes()


def central_records(data: bytes) -> list[int]:
    return [i for i in range(len(data) - 4) if data[i : i + 4] == b"PK\x01\x02"]


def patch(data: bytes, at: int, value: int, width: int = 4) -> bytes:
    return data[:at] + value.to_bytes(width, "little") + data[at + width :]


def test_honest_archives_pass_and_members_are_read(tmp_path):
    with check_zip(make_torch_zip(tmp_path)) as zf:
        assert any(n.endswith("data.pkl") for n in zf.namelist())
    keras_like(tmp_path / "m.keras")
    with check_zip(tmp_path / "m.keras") as zf:
        assert read_member(zf, "config.json", 1 << 20) == b'{"class_name": "Sequential"}'
        with pytest.raises(CorruptCheckpoint, match=r"member 'model.weights.h5' is 2097152 bytes, more than the 1024"):
            read_member(zf, "model.weights.h5", 1024)
        with pytest.raises(CorruptCheckpoint, match="zip member 'nope' is missing"):
            read_member(zf, "nope", 10)


@pytest.mark.parametrize("limits,match", [
    (ZipLimits(max_members=2), r"3 members, more than the limit of 2"),
    (ZipLimits(max_member_size=1 << 20), r"member 'model.weights.h5' claims 2097152 bytes uncompressed"),
    (ZipLimits(max_total_size=1 << 20), r"members claim 2097\d+ bytes uncompressed in all"),
    (ZipLimits(max_ratio=100), r"member 'model.weights.h5' claims a compression ratio above 100:1"),
])
def test_limits(tmp_path, limits, match):
    keras_like(tmp_path / "m.keras")
    with pytest.raises(CorruptCheckpoint, match=f"m.keras: refused zip archive: {match}"):
        check_zip(tmp_path / "m.keras", limits)


def test_forged_uncompressed_size_is_refused(tmp_path):
    data = keras_like(tmp_path / "m.keras")
    last = central_records(data)[-1]  # model.weights.h5
    (tmp_path / "m.keras").write_bytes(patch(data, last + 24, 0xFFFFFFF0))
    with pytest.raises(CorruptCheckpoint, match="compression ratio above 1100:1"):
        check_zip(tmp_path / "m.keras")


def test_stored_member_with_lying_size(tmp_path):
    path = make_torch_zip(tmp_path)
    data = path.read_bytes()
    path.write_bytes(patch(data, central_records(data)[0] + 24, 10**6))
    with pytest.raises(CorruptCheckpoint, match=r"refused zip archive: stored member '.*data.pkl' claims 1000000 bytes"):
        inspect(path)


def test_overlapping_entries_are_refused(tmp_path):
    """Two directory entries pointing at the same bytes: the classic way to claim more than the file holds."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("data.bin", b"x" * 100_000)
    data = buf.getvalue()
    eocd = data.rindex(b"PK\x05\x06")
    _sig, _disk, _cd_disk, _here, count, size, offset, _comment = struct.unpack("<4s4H2IH", data[eocd : eocd + 22])
    record = data[offset : offset + size]
    record2 = record.replace(b"data.bin", b"copy.bin")
    tail = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, count + 1, count + 1, 2 * size, offset, 0)
    (tmp_path / "o.zip").write_bytes(data[:offset] + record + record2 + tail)
    with pytest.raises(CorruptCheckpoint, match=r"members claim 200000 compressed bytes in a \d+-byte archive"):
        check_zip(tmp_path / "o.zip")


def test_member_past_the_end(tmp_path):
    data = keras_like(tmp_path / "m.keras", b"abc")
    (tmp_path / "m.keras").write_bytes(patch(data, central_records(data)[-1] + 42, len(data) - 2))
    with pytest.raises(CorruptCheckpoint, match="member 'model.weights.h5' extends past the end of the archive"):
        check_zip(tmp_path / "m.keras")


def test_not_a_zip(tmp_path):
    (tmp_path / "x.keras").write_bytes(b"PK\x03\x04 nothing else")
    with pytest.raises(CorruptCheckpoint, match=r"x.keras: refused zip archive: not a readable zip"):
        check_zip(tmp_path / "x.keras")


def test_torch_zip_bounds_apply_before_torch_reads(tmp_path, monkeypatch):
    path = make_torch_zip(tmp_path)
    n = len(zipfile.ZipFile(path).namelist())
    monkeypatch.setattr(zipcheck, "DEFAULT_LIMITS", ZipLimits(max_members=3))
    with pytest.raises(CorruptCheckpoint, match=f"refused zip archive: {n} members, more than the limit of 3"):
        inspect(path)


def test_keras_archive_with_overlapping_entries_is_refused(tmp_path):
    path = tmp_path / "m.keras"
    data = keras_like(path, b"x" * 5000)
    first = central_records(data)[0]  # config.json; point model.weights.h5's record at the same bytes
    last = central_records(data)[-1]
    offset = int.from_bytes(data[first + 42 : first + 46], "little")
    forged = patch(patch(data, last + 42, offset), last + 20, len(data) - 10)
    path.write_bytes(forged)
    with pytest.raises(CorruptCheckpoint, match=r"m.keras: refused zip archive: members claim \d+ compressed bytes"):
        inspect(path)
