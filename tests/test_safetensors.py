"""safetensors files, shard indexes and Hugging Face directories."""

from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

import inspector
from inspector.errors import CorruptCheckpoint, UnsupportedSource
from inspector.loaders import choose_loader, open_source

from .helpers import assert_stats_match


def write_raw(path, tensors: list[tuple[str, str, tuple, bytes]], metadata=None):
    """A safetensors file written by hand, tensors in the given order (so order tests don't depend on a library)."""
    header, offset, blobs = {}, 0, []
    for name, code, shape, data in tensors:
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    return path


def rows(source):
    return inspector.inspect(source).tensors.set_index("name")


def test_every_dtype_matches_reference(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((6, 7)) * 3
    base[0, :3] = [np.nan, np.inf, -0.0]
    arrays = {}
    for code, dt in [("F64", np.float64), ("F32", np.float32), ("F16", np.float16), ("BF16", ml_dtypes.bfloat16),
                     ("F8_E4M3", ml_dtypes.float8_e4m3fn), ("F8_E5M2", ml_dtypes.float8_e5m2)]:
        with np.errstate(invalid="ignore", over="ignore"):
            arrays[code] = (code, base.astype(dt))
    for code, dt in [("I64", np.int64), ("I32", np.int32), ("I16", np.int16), ("I8", np.int8), ("U8", np.uint8)]:
        arrays[code] = (code, rng.integers(0 if code == "U8" else -9, 9, size=(5, 3)).astype(dt))
    arrays["BOOL"] = ("BOOL", rng.integers(0, 2, size=11).astype(np.bool_))
    path = write_raw(tmp_path / "all.safetensors",
                     [(f"t.{code}", code, a.shape, a.tobytes()) for code, (c, a) in arrays.items()])
    table = rows(path)
    for code, (_, a) in arrays.items():
        row = table.loc[f"t.{code}"]
        assert row["dtype"] == a.dtype.name
        assert row["shape"] == "x".join(map(str, a.shape))
        assert_stats_match(row, a)


def test_file_offset_order_not_name_order(tmp_path):
    a = np.ones(3, np.float32)
    path = write_raw(tmp_path / "m.safetensors", [(n, "F32", (3,), a.tobytes()) for n in ("z.weight", "a.weight", "m.bias")])
    assert list(rows(path).index) == ["z.weight", "a.weight", "m.bias"]


def sharded(tmp_path, n_shards=3):
    """A sharded checkpoint whose shard order differs from name order; returns (dir, index, expected order, arrays)."""
    rng = np.random.default_rng(1)
    expected, arrays, weight_map = [], {}, {}
    for s in range(1, n_shards + 1):
        shard = f"model-{s:05d}-of-{n_shards:05d}.safetensors"
        names = [f"layers.{10 - s}.mlp.weight", f"layers.{10 - s}.mlp.bias"]
        tensors = []
        for name in names:
            arr = rng.standard_normal((4, 4) if name.endswith("weight") else (4,)).astype(np.float32)
            arrays[name] = arr
            tensors.append((name, "F32", arr.shape, arr.tobytes()))
            weight_map[name] = shard
            expected.append(name)
        write_raw(tmp_path / shard, tensors)
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return tmp_path, index, expected, arrays


def test_sharded_index_keeps_shard_order(tmp_path):
    _, index, expected, arrays = sharded(tmp_path)
    table = rows(index)
    assert list(table.index) == expected
    for name, arr in arrays.items():
        assert_stats_match(table.loc[name], arr)


def test_hf_directory_with_shards(tmp_path):
    directory, _, expected, _ = sharded(tmp_path)
    result = inspector.inspect(directory)
    assert list(result.tensors["name"]) == expected
    assert result.summary["format"] == "safetensors-sharded"


def test_hf_directory_with_single_file(tmp_path):
    save_file({"fc.weight": np.ones((2, 2), np.float32)}, str(tmp_path / "model.safetensors"))
    assert list(rows(tmp_path).index) == ["fc.weight"]


def test_hf_directory_with_pytorch_model_bin(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"fc.weight": torch.ones(2, 2)}, tmp_path / "pytorch_model.bin")
    assert list(rows(tmp_path).index) == ["fc.weight"]


def test_content_wins_over_extension(tmp_path):
    path = tmp_path / "actually_safetensors.pth"
    save_file({"w.weight": np.full((2, 3), -1.0, np.float32)}, str(path))
    assert choose_loader(str(path)).name == "safetensors"
    assert rows(path).loc["w.weight", "neg_count"] == 6


def test_metadata_is_kept(tmp_path):
    path = write_raw(tmp_path / "m.safetensors", [("a", "F32", (1,), b"\0\0\0\0")], metadata={"format": "pt"})
    assert inspector.inspect(path).summary["metadata"] == {"format": "pt"}


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:5], "truncated"),
    (lambda b: struct.pack("<Q", 10**12) + b[8:], "header length"),
    (lambda b: b[:8] + b"{not json" + b[17:], "not valid JSON"),
    (lambda b: b[:-4], "past the end of the file"),
])
def test_corrupt_files_raise_clear_errors(tmp_path, mutate, message):
    good = write_raw(tmp_path / "g.safetensors", [("a.weight", "F32", (2, 2), np.ones(4, np.float32).tobytes())])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(mutate(good.read_bytes()))
    with pytest.raises((CorruptCheckpoint, UnsupportedSource), match=message):
        inspector.inspect(bad)


def test_wrong_byte_count_names_the_tensor(tmp_path):
    path = write_raw(tmp_path / "m.safetensors", [("enc.weight", "F32", (2, 2), b"\0" * 12)])
    with pytest.raises(CorruptCheckpoint, match="enc.weight"):
        open_source(str(path))


def test_overlapping_tensors_are_refused(tmp_path):
    h = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}).encode()
    path = tmp_path / "o.safetensors"
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"\0" * 12)
    with pytest.raises(CorruptCheckpoint, match="overlap"):
        open_source(str(path))


def test_missing_shard_is_reported(tmp_path):
    _, index, _, _ = sharded(tmp_path)
    (tmp_path / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CorruptCheckpoint, match="model-00002-of-00003.safetensors is missing"):
        inspector.inspect(index)


@pytest.mark.parametrize("pad", [0, 2], ids=["aligned", "unaligned"])
def test_mapped_ranges_give_the_stored_values(tmp_path, pad):
    """A memory-mapped range (ONNX external data, .npy files) gives views of the page cache; values stored
    at an offset that is not a multiple of their size are copied, so that the kernels get aligned ones."""
    from inspector.loaders.mapped import MappedRange

    x = (np.random.default_rng(7).standard_normal(21_000) * 0.02).astype(np.float32)
    path = tmp_path / "values.bin"
    path.write_bytes(b"h" * (64 + pad) + x.tobytes())
    rng = MappedRange(path, 64 + pad, np.dtype(np.float32))
    chunks = list(rng(0, x.size, 1000))
    assert all(c.flags.aligned for c in chunks) and chunks[0].flags.writeable == bool(pad)
    assert np.array_equal(np.concatenate(chunks), x)
    assert np.array_equal(np.concatenate(list(rng(123, 17_000, 1000))), x[123:17_000])


def test_chunked_reads_equal_whole_reads(tmp_path):
    arr = np.random.default_rng(4).standard_normal(10_000).astype(np.float32)
    path = write_raw(tmp_path / "big.safetensors", [("x.weight", "F32", arr.shape, arr.tobytes())])
    with open_source(str(path)) as src:
        rec = next(src.records())
        parts = [c.copy() for c in rec.chunks(333)]
    assert all(p.size <= 333 for p in parts)
    assert np.array_equal(np.concatenate(parts), arr)
