"""Hostile HDF5 files: reads outside the input, native crashes and hangs, structure bombs.

Each file is made the way an attacker would make it (h5py's own API, or one byte changed in a
fixture) and goes through the real command or ``inspect``: refused or read with one ``error:``
line, never a read of another file, a crash, a hang or an endless loop.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from inspector import CorruptCheckpoint, UnsafeCheckpoint, inspect
from tests.helpers import ROOT, assert_clean_error, run_cli

SECRET = b"root:$6$hostile-secret-hash:19000:0:99999:7:::\n"


def keras3(path: Path, fill) -> Path:
    """A Keras 3 ``.weights.h5`` whose ``layers/dense/vars/0`` is made by ``fill(vars_group)``."""
    with h5py.File(path, "w") as f:
        v = f.create_group("layers/dense/vars")
        fill(v)
        v.create_dataset("1", data=np.arange(3, dtype=np.float32))
    return path


def as_keras_zip(h5: Path) -> Path:
    out = h5.with_suffix(".keras")
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("config.json", '{"class_name": "Sequential", "config": {"layers": []}}')
        z.write(h5, "model.weights.h5")
    return out


def external(target: str, size: int):
    return lambda v: v.create_dataset("0", shape=(size,), dtype="u1", external=[(target, 0, size)])


@pytest.mark.parametrize("wrap", ["weights.h5", "keras"])
def test_external_raw_storage_is_refused(tmp_path, wrap):
    """One uint8 per byte of a secret file: refused, and no byte of it reaches any output."""
    secret = tmp_path / "shadow"
    secret.write_bytes(SECRET)
    path = keras3(tmp_path / "ext.weights.h5", external(str(secret), len(SECRET)))
    if wrap == "keras":
        path = as_keras_zip(path)
    out = tmp_path / "out.csv"
    proc = run_cli(str(path), "--csv", str(out), "--json", str(tmp_path / "out.json"))
    line = assert_clean_error(proc, str(path))
    assert "external file" in line and "winspect reads only the file it is given" in line
    assert not out.exists() and not (tmp_path / "out.json").exists()
    assert "hostile-secret" not in proc.stdout + proc.stderr and "114" not in proc.stdout


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/urandom", "fifo"])
def test_external_storage_on_devices_and_fifos_is_refused_without_reading(tmp_path, target):
    if target == "fifo":
        target = str(tmp_path / "fifo")
        os.mkfifo(target)
    path = keras3(tmp_path / "dev.weights.h5", external(target, 2**40))
    with pytest.raises(UnsafeCheckpoint, match="external file"):
        inspect(path)


def test_virtual_dataset_is_refused(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("w", data=np.full(8, 7.0, dtype=np.float32))

    def virtual(v):
        layout = h5py.VirtualLayout(shape=(8,), dtype=np.float32)
        layout[:] = h5py.VirtualSource(str(other), "w", shape=(8,))
        v.create_virtual_dataset("0", layout)

    path = keras3(tmp_path / "vds.weights.h5", virtual)
    proc = run_cli(str(path), "--csv", str(tmp_path / "o.csv"))
    assert "virtual dataset" in assert_clean_error(proc, str(path))
    assert not (tmp_path / "o.csv").exists()


def test_external_link_anywhere_is_refused(tmp_path):
    """Even a link the Keras layout never follows (outside ``layers``) is refused."""
    path = keras3(tmp_path / "link.weights.h5", lambda v: v.create_dataset("0", data=np.ones(2, np.float32)))
    with h5py.File(path, "a") as f:
        f["elsewhere"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/w")
    with pytest.raises(UnsafeCheckpoint, match="links to another file"):
        inspect(path)


def one_byte(fixture: str, offset: int, old: int, new: int, d: Path) -> Path:
    data = bytearray((ROOT / "fixtures" / fixture).read_bytes())
    assert data[offset] == old, "the fixture changed; find the byte again with benchmarks/hdf5_fuzz.py"
    data[offset] = new
    out = d / f"mutant_{fixture}"
    out.write_bytes(bytes(data))
    return out


def test_libhdf5_segfault_becomes_one_error_line(tmp_path):
    """Byte 857 of the legacy fixture 0x01 -> 0xa4 makes libhdf5 crash with SIGSEGV on its metadata."""
    path = one_byte("digits_keras_legacy.h5", 857, 0x01, 0xA4, tmp_path)
    proc = run_cli("-q", str(path), "--csv", str(tmp_path / "o.csv"))
    assert proc.returncode == 1
    assert "crashed (SIGSEGV)" in assert_clean_error(proc, str(path))
    assert not (tmp_path / "o.csv").exists()


def test_libhdf5_hang_becomes_one_error_line(tmp_path):
    """Byte 6336 of the chunked fixture 0x48 -> 0x01 makes libhdf5 spin forever on its metadata."""
    path = one_byte("digits_keras_legacy_chunked.h5", 6336, 0x48, 0x01, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WINSPECT_HDF5_TIMEOUT": "3"}
    proc = subprocess.run([sys.executable, "-c", "from inspector.cli import main; main()", "-q", str(path)],
                          capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert "did not finish reading the file's structure within 3 s" in assert_clean_error(proc, str(path))


def test_hard_link_dag_is_walked_once(tmp_path):
    """30 levels of groups, each linked twice from the level above: 2**30 paths, 31 groups."""
    path = tmp_path / "dag.weights.h5"
    with h5py.File(path, "w") as f:
        groups = [f.create_group(f"g{i}") for i in range(31)]
        for i, g in enumerate(groups):
            g.create_dataset("vars/0", data=np.full(2, float(i), np.float32))
            if i + 1 < len(groups):
                g["layers/a"] = groups[i + 1]
                g["layers/b"] = groups[i + 1]
        f["layers/top"] = groups[0]
    code = f"from inspector import inspect; print(len(inspect({str(path)!r}).tensors))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["31"]


def test_unallocated_chunked_dataset_is_reported_not_iterated(tmp_path):
    """2**40 float32 declared, no chunk written (a 5 KB file): skipped with a note, never read as fill values."""
    path = keras3(tmp_path / "bomb.weights.h5",
                  lambda v: v.create_dataset("0", shape=(2**40,), chunks=(1 << 20,), dtype=np.float32))
    assert path.stat().st_size < 16_384
    result = inspect(path)
    assert list(result.tensors["name"]) == ["dense/bias"]
    assert any("unallocated" in n and "dense/kernel" in n for n in result.meta["notes"])


def test_unallocated_contiguous_dataset_is_reported(tmp_path):
    path = keras3(tmp_path / "empty.weights.h5", lambda v: v.create_dataset("0", shape=(2**30,), dtype=np.float64))
    result = inspect(path)
    assert len(result.tensors) == 1
    assert any("unallocated" in n for n in result.meta["notes"])


def test_unknown_filter_is_refused(tmp_path):
    """A dataset whose chunks need a filter plugin (id 32001, blosc) is not read."""
    def plugin(v):
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((4,))
        dcpl.set_filter(32001, h5py.h5z.FLAG_OPTIONAL)
        space = h5py.h5s.create_simple((4,))
        h5py.h5d.create(v.id, b"0", h5py.h5t.NATIVE_FLOAT, space, dcpl=dcpl)

    path = keras3(tmp_path / "filter.weights.h5", plugin)
    with pytest.raises(CorruptCheckpoint, match="filter 32001"):
        inspect(path)


def test_config_text_that_is_not_utf8_is_escaped_in_every_output(tmp_path):
    """Mutant 264 of the chunked fixture (found by tests/hdf5_fuzz.py): a byte of the class name
    BatchNormalization in model_config is no longer UTF-8: the config is reported unreadable and the
    tensors are read, not a UnicodeEncodeError while writing them."""
    from tests.hdf5_fuzz import case_seed, mutate

    fixture = "digits_keras_legacy_chunked.h5"
    path = tmp_path / fixture
    path.write_bytes(mutate((ROOT / "fixtures" / fixture).read_bytes(), case_seed(fixture, 264)))
    out = tmp_path / "t.csv"
    proc = run_cli("-q", str(path), "--csv", str(out), "--json", str(tmp_path / "t.json"))
    assert proc.returncode == 0, proc.stderr
    assert len(out.read_text("utf-8").splitlines()) == 17
    assert "model_config attribute is not valid JSON" in (tmp_path / "t.json").read_text("utf-8")


def test_object_names_that_are_not_utf8_are_one_error_line(tmp_path):
    path = tmp_path / "names.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_group("layers").create_group(b"dense\xed").create_dataset("vars/0", data=np.ones(2, np.float32))
    assert "can't decode byte 0xed" in assert_clean_error(run_cli("-q", str(path)), str(path))
