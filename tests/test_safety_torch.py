"""Hostile PyTorch files made the way an attacker would make them: numpy hooks, compressed and crowded zips,
scan bombs, legacy tar payloads, duplicate members, self-referencing and absurd pickles."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from inspector import CorruptCheckpoint, InspectorError, inspect
from inspector.audit import audit
from inspector.cli import main
from inspector.safety import pickle_scan
from tests.helpers import SYSTEM, TouchBySystem, assert_clean_error, legacy_tar, run_cli


def torch_members(sd) -> list[tuple[str, bytes]]:
    buf = io.BytesIO()
    torch.save(sd, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def write_zip(path, members, compress=None) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members:
            z.writestr(name, data, compress_type=(compress or {}).get(name, zipfile.ZIP_STORED))


def audit_code(path, fail_on="unsafe") -> tuple[int, str]:
    res = CliRunner().invoke(main, ["audit", str(path), "--fail-on", fail_on])
    return res.exit_code, res.stdout


# --- numpy arrays are rebuilt from bytes, never by numpy's pickle hooks --------------------------

class _Reduce:
    def __init__(self, fn, args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args, self.state) if self.state is not None else (self.fn, self.args)


def hostile_dtype_pickle() -> bytes:
    """A structured dtype with an object field and crafted flags, then an array whose raw bytes would be that
    field's ``PyObject*``: numpy's own ``__setstate__`` hooks crash the process on it."""
    from numpy._core.multiarray import _reconstruct

    obj_dtype = np.dtype("O")
    dtype = _Reduce(np.dtype, ("V8", False, True), (3, "|", None, ("f0",), {"f0": (obj_dtype, 0)}, 8, 1, 0x3F))
    array = _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, (2,), dtype, False, b"\x41" * 16))
    return pickle.dumps({"w.weight": np.arange(4.0, dtype=np.float32), "evil": array}, protocol=2)


def test_crafted_numpy_dtype_never_reaches_numpy(tmp_path):
    path = tmp_path / "dtype.pkl"
    path.write_bytes(hostile_dtype_pickle())
    proc = run_cli("-q", "--json", str(tmp_path / "o.json"), str(path))
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    summary = json.loads((tmp_path / "o.json").read_text())["summary"]
    assert any("evil (numpy structured dtype)" in n for n in summary["notes"])
    assert json.loads((tmp_path / "o.json").read_text())["tensors"][0]["name"] == "w.weight"


def test_object_arrays_are_refused_not_rebuilt(tmp_path):
    arr = np.empty(2, dtype=object)
    arr[:] = [TouchBySystem(tmp_path / "ran"), 1]
    torch.save({"w.weight": torch.ones(2), "o": arr}, tmp_path / "o.pt")
    result = inspect(tmp_path / "o.pt")
    assert not (tmp_path / "ran").exists()
    assert any("o (numpy object array" in n for n in result.summary["notes"])


# --- zips: compressed storages, crowded directories, scan bombs -------------------------------

def test_deflated_storage_is_decompressed_only_as_far_as_the_tensor_needs(tmp_path):
    """A storage member of 1 GiB of zeros (deflate ~1030:1) behind a 4-element tensor: 16 bytes are read."""
    members = torch_members({"w.weight": torch.ones(4)})
    big = [(n, d + bytes((1 << 30) - len(d)) if "/data/" in n else d) for n, d in members]
    write_zip(tmp_path / "bomb.pt", big, {n: zipfile.ZIP_DEFLATED for n, _ in members if "/data/" in n})
    assert (tmp_path / "bomb.pt").stat().st_size < 2 << 20
    import tracemalloc

    tracemalloc.start()
    result = inspect(tmp_path / "bomb.pt")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.tensors.iloc[0]["numel"] == 4 and result.tensors.iloc[0]["mean"] == 1.0
    assert peak < 64 << 20


def test_zip_after_4096_members_is_sniffed_and_its_payload_found(tmp_path):
    members = torch_members({"w.weight": torch.ones(2), "x": TouchBySystem(tmp_path / "ran")})
    root = members[0][0].split("/")[0]
    crowd = [(f"{root}/pad/{i}", b"") for i in range(4100)] + members
    write_zip(tmp_path / "crowd.pt", crowd)
    code, out = audit_code(tmp_path / "crowd.pt")
    assert code == 3 and f"unsafe {SYSTEM}" in out and not (tmp_path / "ran").exists()


def nones_pickle(n: int) -> bytes:
    return b"\x80\x02" + b"N" * n + b"."


@pytest.mark.parametrize("bound,value", [("MAX_OPS", 100_000), ("MAX_PICKLES", 3), ("MAX_SECONDS", 0.0)])
def test_scan_of_many_huge_pickle_members_is_bounded(tmp_path, monkeypatch, bound, value):
    """N members of millions of NONE opcodes (deflate ~1000:1): the scan stops at its bound and says so."""
    members = torch_members({"w.weight": torch.ones(2)})
    root = members[0][0].split("/")[0]
    bombs = [(f"{root}/extra{i}.pkl", nones_pickle(400_000)) for i in range(6)]
    write_zip(tmp_path / "ops.pt", members + bombs, {n: zipfile.ZIP_DEFLATED for n, _ in bombs})
    monkeypatch.setattr(pickle_scan, bound, value)
    result = inspect(tmp_path / "ops.pt")
    incomplete = [f for f in result.summary["findings"] if f.type == "scan_incomplete"]
    assert len(incomplete) == 1 and result.tensors.iloc[0]["numel"] == 2
    assert audit(tmp_path / "ops.pt").failed_on(("scan_incomplete",)) == ["scan_incomplete"]
    assert audit(tmp_path / "ops.pt").failed_on(("nan",)) == []


def test_scan_incomplete_gates_the_default_audit(tmp_path, monkeypatch):
    members = torch_members({"w.weight": torch.ones(2)})
    root = members[0][0].split("/")[0]
    write_zip(tmp_path / "ops.pt", members + [(f"{root}/x.pkl", nones_pickle(50_000))])
    monkeypatch.setattr(pickle_scan, "MAX_OPS", 10_000)
    res = CliRunner().invoke(main, ["audit", str(tmp_path / "ops.pt")])
    assert res.exit_code == 3 and "scan_incomplete" in res.stdout


def test_two_data_pkl_members_hostile_first(tmp_path):
    """torch reads the last ``data.pkl``: the first, hostile one is scanned too, and the duplicate is a finding."""
    hostile = torch_members({"x": TouchBySystem(tmp_path / "ran")})
    honest = torch_members({"w.weight": torch.ones(2)})
    root = honest[0][0].split("/")[0]
    evil_pkl = next(d for n, d in hostile if n.endswith("data.pkl"))
    with pytest.warns(UserWarning, match="Duplicate name"):
        write_zip(tmp_path / "dup.pt", [(f"{root}/data.pkl", evil_pkl)] + honest)
    with pytest.raises(InspectorError, match=r"zip archive with 2 members named 'archive/data.pkl' \(an ambiguous "
                                             r"checkpoint\); the scan found: dangerous globals posix.system"):
        inspect(tmp_path / "dup.pt")
    result = audit(tmp_path / "dup.pt")
    kinds = {(f.type, f.data.get("class")) for f in result.findings}
    assert ("unsafe", "duplicate") in kinds and ("unsafe", "dangerous") in kinds
    assert result.failed_on(("unsafe",)) == ["unsafe"] and not (tmp_path / "ran").exists()
    proc = run_cli("-q", str(tmp_path / "dup.pt"))
    assert_clean_error(proc, "dup.pt")


def test_members_outside_the_archive_root_are_refused(tmp_path):
    members = torch_members({"w.weight": torch.ones(2)})
    write_zip(tmp_path / "out.pt", members + [("elsewhere/data/9", b"\0" * 8)])
    with pytest.raises(CorruptCheckpoint, match="'elsewhere/data/9' lies outside the archive root"):
        inspect(tmp_path / "out.pt")


# --- legacy tar ------------------------------------------------------------------------------

def test_legacy_tar_with_posix_system_is_unsafe_and_read(tmp_path):
    payload = b"X\x01\x00\x00\x00xcposix\nsystem\nX\x04\x00\x00\x00true\x85R"
    legacy_tar(tmp_path / "evil.tar", np.arange(6, dtype=np.float32), extra_pickle=payload)
    result = inspect(tmp_path / "evil.tar")
    assert list(result.tensors["name"]) == ["w.weight"]
    assert [f.subject for f in result.summary["findings"] if f.type == "unsafe"] == ["posix.system"]
    code, out = audit_code(tmp_path / "evil.tar")
    assert code == 3 and "unsafe posix.system" in out


def test_legacy_tar_that_cannot_be_read_still_reports_its_payload(tmp_path):
    payload = b"X\x01\x00\x00\x00xcposix\nsystem\nX\x04\x00\x00\x00true\x85R"
    legacy_tar(tmp_path / "evil.tar", np.arange(6, dtype=np.float32), extra_pickle=payload)
    data = bytearray((tmp_path / "evil.tar").read_bytes())
    at = data.index(b"FloatTensor")  # break the tensors member's header pickle
    data[at - 20 : at] = b"\xff" * 20
    (tmp_path / "evil.tar").write_bytes(bytes(data))
    code, out = audit_code(tmp_path / "evil.tar")
    assert code == 3 and "unsafe posix.system" in out


# --- absurd pickles ----------------------------------------------------------------------------

ABSURD = [
    b"\x80\x02]q\x00h\x00a.",  # a list containing itself
    b"\x80\x02" + b"]" * 200_000 + b"a" * 199_999 + b".",  # 200,000 nested lists
    b"\x80\x02}" + b"(" * 100_000 + b".",  # a hundred thousand marks
    b"\x80\x02Nr\xff\xff\xff\x7f.",  # a memo index of 2**31
    b"\x80\x04\x95\xff\xff\xff\xff\xff\xff\x00\x00N.",  # a frame longer than the file
    b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(ctorch\nFloatStorage\n)R.",
]


@pytest.mark.parametrize("blob", ABSURD, ids=["self-reference", "deep-nesting", "marks", "memo-index", "frame",
                                              "tensor-without-storage"])
def test_absurd_pickles_fail_cleanly(tmp_path, blob):
    (tmp_path / "a.pt").write_bytes(blob)
    with pytest.raises(InspectorError) as info:
        inspect(tmp_path / "a.pt")
    assert str(info.value).startswith(f"{tmp_path / 'a.pt'}: ") and "\n" not in str(info.value)


def test_negative_and_overflowing_strides_and_offsets(tmp_path):
    sd = {"w": torch.arange(6.0)}
    buf = io.BytesIO()
    torch.save(sd, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    size = data.index(b"K\x06\x85")  # size (6,), then stride (1,)
    for new in (b"J\xff\xff\xff\xff\x85", b"\x8a\x09" + b"\xff" * 8 + b"\x7f\x85"):
        (tmp_path / "s.pt").write_bytes(data[:size] + b"K\x06\x85q\x05" + new + data[size + 7 :])
        with pytest.raises(CorruptCheckpoint):
            inspect(tmp_path / "s.pt")
