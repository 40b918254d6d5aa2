"""Fuzz: mutated checkpoints of every format either inspect cleanly or raise an InspectorError.

Each format in ``FORMATS`` (tests/helpers.py, the registered formats' samples) gets a few hundred
derandomised cases of
truncation, byte flips (concentrated on headers) and, where the format has them, rewritten
header fields. Every case runs the whole pipeline through ``inspector.inspect`` (open, every
record, every chunk analysed), all cases of a format in one child interpreter so that a native
crash fails the test instead of ending the run; a handful also run through the real command
to show exit 1, one error line and no traceback. A per-case alarm turns a hang into a failure.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector import InspectorError, inspect
from tests.helpers import FORMAT_IDS, FORMATS, ROOT, assert_clean_error, run_cli, varint

CASES_PER_FORMAT = 200
CASE_ALARM_S = 60  # a hang detector, far above any honest case


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"one fuzz case ran longer than {CASE_ALARM_S} s")


# --- mutations ----------------------------------------------------------------------------

def _position(size: int):
    head, tail = min(size - 1, 511), max(0, size - 512)
    return st.one_of(st.integers(0, head), st.integers(tail, size - 1), st.integers(0, size - 1))


def _byte_ops(size: int):
    flip = st.tuples(st.just("flip"), _position(size), st.integers(1, 255))
    word = st.tuples(st.just("word"), _position(size), st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000]))
    cut = st.tuples(st.just("truncate"), st.integers(0, size - 1), st.just(0))
    return st.lists(st.one_of(flip, flip, word, cut), min_size=1, max_size=4)


def apply_byte_ops(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op, pos, val in ops:
        if op == "truncate":
            del b[pos:]
        elif pos < len(b) and op == "flip":
            b[pos] ^= val
        elif pos < len(b):
            b[pos : pos + 4] = struct.pack("<I", val)[: len(b) - pos]
    return bytes(b)


JSON_VALUES = st.one_of(
    st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 2**63, 2**64, 10**30]), st.booleans(), st.none(),
    st.floats(allow_nan=False), st.text(max_size=8), st.lists(st.integers(-(2**66), 2**66), max_size=5),
    st.sampled_from(["F32", "F16", "BF16", "I64", "BOOL", "F8_E4M3", "U8", "Q4", ""]),
)


def mutate_safetensors_header(data: bytes, draw) -> bytes:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    key = draw(st.sampled_from(sorted(header)))
    field = draw(st.sampled_from(["dtype", "shape", "data_offsets", "__whole__", "__extra__"]))
    value = draw(JSON_VALUES)
    if key == "__metadata__" or field == "__whole__":
        header[key] = value
    elif field == "__extra__":
        header[draw(st.text(max_size=6))] = value
    else:
        header[key][field] = value
    blob = json.dumps(header).encode()
    length = draw(st.sampled_from([len(blob), len(blob), len(blob) - 1, len(blob) + 7, 2**40]))
    return struct.pack("<Q", length) + blob + data[8 + n :]


def mutate_index(data: bytes, draw) -> bytes:
    """A shard index (safetensors or Keras) with its root, its weight_map or one entry replaced."""
    index = json.loads(data)
    key = draw(st.sampled_from(sorted(index["weight_map"]) + ["__root__", "__map__"]))
    value = draw(st.one_of(JSON_VALUES, st.sampled_from(["../x.safetensors", "/etc/passwd", "nope.safetensors",
                                                         ["model_00001.weights.h5", "../model_00000.weights.h5"],
                                                         ["model_00002.weights.h5"]])))
    if key == "__root__":
        index = value
    elif key == "__map__":
        index["weight_map"] = value
    else:
        index["weight_map"][key] = value
    return json.dumps(index).encode()


def mutate_zip_directory(data: bytes, draw) -> bytes:
    """Rewrite a numeric field (sizes, name length, offset) of one central-directory record."""
    starts = [i for i in range(len(data) - 46) if data[i : i + 4] == b"PK\x01\x02"]
    start = draw(st.sampled_from(starts))
    offset = draw(st.sampled_from([20, 24, 28, 42]))  # compressed, uncompressed size, name length, offset
    width = 2 if offset == 28 else 4
    value = draw(st.integers(0, 2 ** (8 * width) - 1))
    return data[: start + offset] + value.to_bytes(width, "little") + data[start + offset + width :]


def mutate_protobuf_length(data: bytes, draw) -> bytes:
    """Rewrite the length of one length-delimited protobuf field (a message, string or raw_data)."""
    starts = [i for i in range(len(data) - 1) if data[i] & 7 == 2 and 1 <= data[i] >> 3 <= 15]
    at = draw(st.sampled_from(starts)) + 1
    end = at
    while end < len(data) and data[end] & 0x80:
        end += 1
    value = draw(st.sampled_from([0, 1, 127, 128, 2**31, 2**63, 2**64 - 1, len(data)]))
    return data[:at] + varint(value) + data[end + 1 :]


def mutate_gguf_header(data: bytes, draw) -> bytes:
    """Overwrite one 4- or 8-byte word of a GGUF header (counts, lengths, dims, types, offsets) with an
    extreme or nearby value."""
    n_kv = struct.unpack_from("<Q", data, 16)[0]
    end = min(len(data), 2048 + 64 * n_kv)
    at = draw(st.integers(4, end - 8))
    width = draw(st.sampled_from([4, 8]))
    old = int.from_bytes(data[at : at + width], "little")
    value = draw(st.sampled_from([0, 1, old + 1, max(old - 1, 0), old * 2, 2 ** (8 * width) - 1,
                                  2 ** (8 * width - 1), 40, 42, 1000]))
    return data[:at] + (value % 2 ** (8 * width)).to_bytes(width, "little") + data[at + width :]


FIELD_MUTATORS = {
    "gguf": mutate_gguf_header,
    "safetensors": mutate_safetensors_header,
    "safetensors-sharded": mutate_index,
    "keras-weights-sharded": mutate_index,
    "pytorch-zip": mutate_zip_directory,
    "torchscript": mutate_zip_directory,
    "pytorch-full-model": mutate_zip_directory,
    "keras-zip": mutate_zip_directory,
    "onnx": mutate_protobuf_length,
    "onnx-int8": mutate_protobuf_length,
    "onnx-external": mutate_protobuf_length,
    "numpy-npz": mutate_zip_directory,
    "numpy-npz-compressed": mutate_zip_directory,
}


@st.composite
def mutated(draw, data: bytes, fmt: str):
    if fmt in FIELD_MUTATORS and draw(st.booleans()):
        data = FIELD_MUTATORS[fmt](data, draw)
        if draw(st.booleans()):
            return data
    return apply_byte_ops(data, draw(_byte_ops(len(data))))


# --- the properties -----------------------------------------------------------------------

_counter = itertools.count()


def inspect_or_clean_error(d: Path, original: Path, data: bytes) -> str:
    """Inspect the mutated bytes; return "ok" or the error class. Anything else propagates."""
    path = d / f"case{next(_counter)}_{original.name}"
    path.write_bytes(data)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_ALARM_S)
    try:
        inspect(path)  # opens, reads every record, analyses every chunk
        return "ok"
    except InspectorError as e:
        assert str(e) and "\n" not in str(e).strip(), repr(str(e))
        return type(e).__name__
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        path.unlink()


def fuzz_format(fmt: str, workdir: str, cases: int) -> collections.Counter:
    """Run ``cases`` derandomised mutations of one format's fixture through the whole pipeline."""
    d = Path(workdir)
    original = dict(FORMATS)[fmt](d)
    data = original.read_bytes()
    outcomes: collections.Counter = collections.Counter()

    @settings(max_examples=cases, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(draw_data):
        outcomes[inspect_or_clean_error(d, original, draw_data.draw(mutated(data, fmt)))] += 1

    run()
    return outcomes


CHILD = """
import sys
from hypothesis import configuration
configuration.set_hypothesis_home_dir(sys.argv[2] + "/.hypothesis")
from tests.test_fuzz import fuzz_format
outcomes = fuzz_format(sys.argv[1], sys.argv[2], int(sys.argv[3]))
print("FUZZ OK", sys.argv[1], sum(outcomes.values()), dict(outcomes))
"""


@pytest.mark.parametrize("fmt", FORMAT_IDS)
def test_fuzz(fmt, tmp_path):
    """The hypothesis run of one format, in a child interpreter so that even a native crash
    (HDF5, torch) is a test failure rather than the end of the test run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CHILD, fmt, str(tmp_path), str(CASES_PER_FORMAT)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert f"FUZZ OK {fmt} " in proc.stdout


@pytest.mark.parametrize("fmt", FORMAT_IDS)
def test_fuzz_through_the_command(fmt, tmp_path):
    """A header-scrambled and truncated file through the real command: exit 1, one error line, no crash."""
    original = dict(FORMATS)[fmt](tmp_path)
    data = original.read_bytes()
    blob = bytes(b ^ 0x5A for b in data[:16]) + data[16 : len(data) // 2]
    path = tmp_path / f"scrambled_{original.name}"
    path.write_bytes(blob)
    proc = run_cli("-q", str(path))
    assert proc.returncode >= 0, f"{fmt}: killed by signal {-proc.returncode}"
    assert_clean_error(proc, str(path))
