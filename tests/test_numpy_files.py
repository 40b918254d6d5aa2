"""NumPy ``.npy`` / ``.npz`` files against ``numpy.load(allow_pickle=False)``, and the refusals
that name formats winspect recognises but does not read."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import inspector
from inspector import CorruptCheckpoint, UnsafeCheckpoint, UnsupportedSource
from inspector.cli import main
from inspector.loaders import open_source
from tests.helpers import assert_stats_match

FIX = Path(__file__).resolve().parents[1] / "fixtures"
RNG = np.random.default_rng(5)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("fixture", ["digits_cnn.npz", "digits_cnn_compressed.npz", "digits_cnn_fc1.npy"])
def test_fixtures_equal_numpy_load(fixture):
    path = FIX / fixture
    loaded = np.load(path, allow_pickle=False)
    ref = {path.stem: loaded} if fixture.endswith(".npy") else dict(loaded)
    result = inspector.inspect(path)
    t = result.tensors.set_index("name")
    assert sorted(t.index) == sorted(ref)
    for name, values in ref.items():
        assert t.loc[name, "dtype"] == values.dtype.name
        assert_stats_match(t.loc[name], values)


def test_npz_kinds_match_the_safetensors_fixture():
    a = inspector.inspect(FIX / "digits_cnn.npz").tensors.set_index("name")
    b = inspector.inspect(FIX / "digits_cnn.safetensors").tensors.set_index("name")
    for col in ("kind", "layer", "out_axis", "neg_count", "l2_norm"):
        assert a[col].equals(b.loc[a.index, col]), col


def test_stored_arrays_are_memory_mapped_and_compressed_ones_inflated():
    with open_source(str(FIX / "digits_cnn.npz")) as src:
        rec = next(r for r in src.records() if r.name == "fc1.weight")
        assert type(rec.range_reader).__name__ == "MappedRange"
        chunk = next(rec.chunks(100))
        assert chunk.base is not None and chunk.size == 100  # a view into the mapping
    with open_source(str(FIX / "digits_cnn_compressed.npz")) as src:
        rec = next(r for r in src.records() if r.name == "fc1.weight")
        assert rec.range_reader is None
        parts = [c.copy() for c in rec.chunks(300)]
        assert max(p.size for p in parts) == 300
        assert np.array_equal(np.concatenate(parts), np.load(FIX / "digits_cnn_compressed.npz")["fc1.weight"].ravel())


@pytest.mark.parametrize("arr", [
    np.array([1.0, -0.0, np.nan, np.inf, -2.5], dtype=">f8"),  # big-endian, awkward values
    np.asfortranarray(RNG.normal(size=(7, 5)).astype(np.float32)),
    np.zeros((0, 4), np.float16),
    np.array(3, np.int16),
    RNG.integers(-5, 5, size=(3, 3)).astype(np.int8),
    RNG.integers(0, 2, size=10).astype(bool),
])
def test_awkward_arrays(tmp_path, arr):
    np.save(tmp_path / "a.npy", arr)
    np.savez(tmp_path / "a.npz", x=arr, y=arr)
    for path in (tmp_path / "a.npy", tmp_path / "a.npz"):
        t = inspector.inspect(path).tensors
        for _, row in t.iterrows():
            assert_stats_match(row, np.asarray(arr).astype(arr.dtype.newbyteorder("=")).ravel())


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    marker = tmp_path / "ran"
    np.save(tmp_path / "o.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(UnsafeCheckpoint, match="an object array.*allow_pickle=False"):
        inspector.inspect(tmp_path / "o.npy")
    np.savez(tmp_path / "o.npz", w=np.ones(3), o=np.array([print], dtype=object))
    res = run(tmp_path / "o.npz", "-q")
    assert res.exit_code == 1 and "object array" in res.stderr and res.stderr.count("\n") == 1
    assert not marker.exists()


def test_structured_and_complex_arrays_are_refused(tmp_path):
    np.save(tmp_path / "s.npy", np.zeros(3, dtype=[("a", "f4"), ("b", "i4")]))
    np.save(tmp_path / "c.npy", np.zeros(3, dtype=np.complex64))
    for name in ("s.npy", "c.npy"):
        with pytest.raises(UnsupportedSource, match="numbers only"):
            inspector.inspect(tmp_path / name)


@pytest.mark.parametrize("header,match", [
    (b"{'descr': '<f4', 'fortran_order': False, 'shape': (10000000000000000000000000000000,), }", "invalid shape"),
    (b"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", "invalid shape"),
    (b"{'descr': '<f4', 'shape': (3,), }", "exactly descr"),
    (b"{'descr': 'zz', 'fortran_order': False, 'shape': (3,), }", "invalid descr"),
    (b"__import__('os').system('touch ran')", "not a Python literal"),
    (b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000,), }", "truncated"),
])
def test_bad_npy_headers(tmp_path, header, match):
    header = header.ljust(118) + b"\n"
    path = tmp_path / "bad.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 16)
    with pytest.raises((CorruptCheckpoint, UnsupportedSource), match=match):
        inspector.inspect(path)
    assert not (tmp_path / "ran").exists()


def test_npz_members_that_do_not_match_their_header(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.npz", "w") as z:
        z.writestr("w.npy", _npy(np.ones(4, np.float32))[:-4])
    with pytest.raises(CorruptCheckpoint, match="holds 140 bytes where its header describes 144"):
        inspector.inspect(tmp_path / "x.npz")
    with zipfile.ZipFile(tmp_path / "e.npz", "w") as z:
        z.writestr("notes.txt", "hi")
    with pytest.raises(CorruptCheckpoint, match="no .npy arrays"):
        inspector.inspect(tmp_path / "e.npz")


def _npy(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_commands_work_on_numpy(tmp_path):
    assert run(FIX / "digits_cnn.npz", "--out", tmp_path / "r", "-q").exit_code == 0
    assert (tmp_path / "r" / "report.md").is_file()
    assert run("audit", FIX / "digits_cnn_compressed.npz").exit_code == 0
    res = run("diff", FIX / "digits_cnn.safetensors", FIX / "digits_cnn.npz", "--json", tmp_path / "d.json", "-q")
    assert res.exit_code == 0, res.output
    shutil.copy(FIX / "digits_cnn.npz", tmp_path / "e1.npz")
    shutil.copy(FIX / "digits_cnn_compressed.npz", tmp_path / "e2.npz")
    assert run("track", tmp_path / "e1.npz", tmp_path / "e2.npz", "-q").exit_code == 0
    assert run("compare", FIX / "digits_cnn.npz", FIX / "digits_cnn.onnx").exit_code == 0


# --- refusals name the format ----------------------------------------------------------------------


@pytest.mark.parametrize("name,data,what", [
    ("model.tflite", b"\x1c\x00\x00\x00TFL3" + b"\0" * 40, "a TFLite flatbuffer"),
    ("model.bin", b"\x1c\x00\x00\x00TFL3" + b"\0" * 40, "a TFLite flatbuffer"),
    ("model.ort", b"\x1c\x00\x00\x00ORTM" + b"\0" * 40, "an ONNX Runtime .ort flatbuffer"),
    ("model.ggml", b"lmgg" + b"\0" * 40, "a GGML file (the format before GGUF)"),
    ("model.mlmodel", b"\x08\x04\x12\x00" + b"\0" * 40, "a Core ML model"),
    ("frozen.pb", b"\n\x0c\n\x05input" + b"\0" * 20, "a TensorFlow protobuf (GraphDef or SavedModel)"),
    ("model.xml", b'<?xml version="1.0"?>\n<net name="m" version="11">', "an OpenVINO IR model"),
    ("model.engine", b"ftrt" + b"\0" * 40, "a TensorRT engine"),
])
def test_recognised_files_are_named_in_the_refusal(tmp_path, name, data, what):
    path = tmp_path / name
    path.write_bytes(data)
    res = run(path, "-q")
    assert res.exit_code == 1
    assert res.stderr.strip() == f"error: {path}: {what}: not read by winspect"


@pytest.mark.parametrize("files,dirname,what", [
    (["saved_model.pb", "variables/variables.index"], "export", "a TensorFlow SavedModel folder"),
    (["Manifest.json", "Data/com.apple.CoreML/model.mlmodel"], "m.mlpackage", "a Core ML package"),
    (["ckpt.index", "ckpt.data-00000-of-00001"], "run", "a TensorFlow checkpoint folder"),
])
def test_recognised_folders_are_named_in_the_refusal(tmp_path, files, dirname, what):
    d = tmp_path / dirname
    for f in files:
        (d / f).parent.mkdir(parents=True, exist_ok=True)
        (d / f).write_bytes(b"\0")
    with pytest.raises(UnsupportedSource) as info:
        inspector.inspect(d)
    assert str(info.value) == f"{d}: {what}: not read by winspect"
