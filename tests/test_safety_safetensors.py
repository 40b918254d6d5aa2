"""safetensors headers from strangers: every inconsistency is refused before data is read,
naming the file and the tensor."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from inspector import CorruptCheckpoint, UnsupportedSource, inspect
from inspector.loaders.safetensors import MAX_HEADER


def write(path, header, data: bytes = b"") -> str:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return str(path)


def one(dtype="F32", shape=(2,), offsets=(0, 8), **extra):
    """A one-tensor header; tuples become JSON lists, anything else is written as given."""
    as_json = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return {"a": {"dtype": dtype, "shape": as_json(shape), "data_offsets": as_json(offsets)}, **extra}


@pytest.mark.parametrize("header,data,error,match", [
    (one(shape=[-1]), b"", CorruptCheckpoint, r"tensor 'a' has an invalid shape \[-1\]"),
    (one(shape=[True, 2]), b"", CorruptCheckpoint, r"tensor 'a' has an invalid shape \[True, 2\]"),
    (one(shape=[2.0]), b"", CorruptCheckpoint, r"tensor 'a' has an invalid shape \[2.0\]"),
    (one(shape=[2**64]), b"", CorruptCheckpoint, r"tensor 'a' has an invalid shape \[18446744073709551616\]"),
    (one(shape=[1] * 65), b"", CorruptCheckpoint, "tensor 'a' has an invalid shape"),
    (one(shape="2"), b"", CorruptCheckpoint, "tensor 'a' has an invalid shape '2'"),
    (one(shape=[2**62, 2**62]), b"\0" * 8, CorruptCheckpoint,
     r"tensor 'a' needs 85070591730234615865843651857942052864 bytes for F32\[4611686018427387904, "),
    (one(dtype="Q4"), b"\0" * 8, UnsupportedSource, "tensor 'a' has dtype 'Q4', which winspect does not read"),
    (one(dtype=["F32"]), b"\0" * 8, UnsupportedSource, r"tensor 'a' has dtype \['F32'\]"),
    (one(offsets=[8, 0]), b"\0" * 8, CorruptCheckpoint, r"tensor 'a' has invalid data_offsets \[8, 0\]"),
    (one(offsets=[-8, 0]), b"\0" * 8, CorruptCheckpoint, "tensor 'a' has invalid data_offsets"),
    (one(offsets=[False, 8]), b"\0" * 8, CorruptCheckpoint, "tensor 'a' has invalid data_offsets"),
    (one(offsets=[0, 8, 16]), b"\0" * 8, CorruptCheckpoint, "tensor 'a' has invalid data_offsets"),
    (one(offsets=[0, 2**70]), b"\0" * 8, CorruptCheckpoint, "tensor 'a' has invalid data_offsets"),
    (one(), b"\0" * 4, CorruptCheckpoint, r"tensor 'a' ends at byte \d+, past the end of the file"),
    (one(offsets=[0, 4]), b"\0" * 8, CorruptCheckpoint, r"tensor 'a' needs 8 bytes for F32\[2\] but its offsets span 4"),
    ({"a": [1, 2]}, b"", CorruptCheckpoint, "tensor 'a' has no dtype/shape/data_offsets"),
    ([1, 2], b"", CorruptCheckpoint, "safetensors header is not a JSON object"),
    ({**one(), "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, CorruptCheckpoint,
     "tensors 'a' and 'b' overlap in the data section"),
    (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
     b"\0" * 8, CorruptCheckpoint, "safetensors header lists 'a' twice"),
    (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}} \xff', b"\0" * 4, CorruptCheckpoint,
     "safetensors header is not UTF-8 text"),
    (b'{"a":{"dtype":"F32","shape":[' + b"1" * 5000 + b'],"data_offsets":[0,4]}}', b"", CorruptCheckpoint,
     r"safetensors header is not valid JSON \(Exceeds the limit"),
    (b"[" * 100_000, b"", CorruptCheckpoint, "safetensors header is not valid JSON"),
    (b'{"a": NaN}', b"", CorruptCheckpoint, "tensor 'a' has no dtype/shape/data_offsets"),
    (one(__metadata__=[1]), b"\0" * 8, CorruptCheckpoint, r"__metadata__ must map names to strings, not \[1\]"),
    (one(__metadata__={"epoch": 3}), b"\0" * 8, CorruptCheckpoint, "__metadata__ must map names to strings"),
])
def test_bad_headers_name_the_tensor(tmp_path, header, data, error, match):
    path = write(tmp_path / "m.safetensors", header, data)
    with pytest.raises(error, match=match) as info:
        inspect(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_header_length_bounds(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(CorruptCheckpoint, match=r"header length 1000 is larger than the file \(10 bytes\)"):
        inspect(path)
    with open(path, "wb") as f:  # a sparse file larger than the limit: no disk space used
        f.write(struct.pack("<Q", MAX_HEADER + 1) + b"{")
        f.truncate(MAX_HEADER + 64)
    with pytest.raises(CorruptCheckpoint, match="larger than the 100 MB limit"):
        inspect(path)


def test_valid_metadata_and_empty_header(tmp_path):
    values = np.array([-1.5, 2.0], dtype=np.float32)
    path = write(tmp_path / "m.safetensors", one(__metadata__={"format": "pt"}), values.tobytes())
    result = inspect(path)
    assert result.meta["metadata"] == {"format": "pt"}
    row = result.tensors.iloc[0]
    assert (row["numel"], row["neg_count"], row["max"]) == (2, int((values < 0).sum()), float(values.max()))
    assert len(inspect(write(tmp_path / "e.safetensors", {})).tensors) == 0


def test_huge_claimed_tensor_is_refused_before_any_allocation(tmp_path):
    # a consistent header for a 2**40-element tensor in a tiny file: refused from the header alone
    path = write(tmp_path / "m.safetensors", one(shape=[2**40], offsets=[0, 2**42]), b"\0" * 16)
    with pytest.raises(CorruptCheckpoint, match=r"tensor 'a' ends at byte 4398046511\d+, past the end of the file"):
        inspect(path)


def test_names_that_are_not_unicode_are_escaped_in_every_output(tmp_path):
    """A header's lone surrogate escapes are a Python str that UTF-8 refuses: the tensor (its name, layer
    and tied name) is inspected and written escaped by every output, never an encoding error."""
    from .helpers import run_cli

    path = write(tmp_path / "trap.safetensors",
                 b'{"enc\\ud800.w\\udcff":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
                 np.array([-1.0, 2.0], np.float32).tobytes())
    row = inspect(path).tables.tensors.to_pandas().iloc[0]
    assert (row["name"], row["layer"], row["neg_count"]) == ("enc\\ud800.w\\udcff", "enc\\ud800", 1)
    out = tmp_path / "out"
    res = run_cli(path, "--csv", str(tmp_path / "t.csv"), "--json", str(tmp_path / "t.json"), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "enc\\ud800.w\\udcff" in (tmp_path / "t.csv").read_text(encoding="utf-8")
    assert json.loads((tmp_path / "t.json").read_text(encoding="utf-8"))["tensors"][0]["name"] == "enc\\ud800.w\\udcff"
