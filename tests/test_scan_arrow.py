"""The scan's Arrow arrays built from buffers (inspector.scan.arrow) against pyarrow.array."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from inspector.scan.arrow import number_array, repeated_text, text_array

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind", [pa.int64(), pa.float64()])
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 100])
def test_number_array_equals_pyarrow_array(kind, n):
    rng = np.random.default_rng(n)
    values = rng.standard_normal(n) * 1e6
    values[::3] = np.nan
    missing = np.isnan(values)
    filled = np.where(missing, 0, values)
    want = pa.array(filled.astype(np.int64) if kind == pa.int64() else filled, kind, mask=missing)
    got = number_array(values, kind, missing)
    assert got.equals(want) and got.null_count == int(missing.sum())
    assert number_array(filled, kind).equals(pa.array(filled.astype(np.int64) if kind == pa.int64() else filled, kind))


def test_float_specials_and_ints_without_a_mask():
    values = np.array([np.inf, -np.inf, -0.0, 5e-324, 1.7976931348623157e308, np.nan])
    got = number_array(values, pa.float64())
    assert got.null_count == 0 and np.array_equal(got.to_numpy(zero_copy_only=False), values, equal_nan=True)
    assert np.signbit(got.to_numpy(zero_copy_only=False)[2])
    big = np.array([2**63 - 1, -(2**63), 0, 1], dtype=np.int64)
    assert number_array(big, pa.int64()).equals(pa.array(big, pa.int64()))


def test_text_array_equals_pyarrow_array():
    values = ["a", None, "", "é✓ 漢字", float("nan"), "x,y\n\"z\"", "b" * 1000, None]
    want = pa.array([None if v is None or v != v else v for v in values], pa.string())
    assert text_array(values).equals(want)
    assert text_array([]).equals(pa.array([], pa.string()))
    assert text_array([None, None]).equals(pa.array([None, None], pa.string()))
    assert text_array(np.array(["p", None], dtype=object)).equals(pa.array(["p", None], pa.string()))
    assert text_array(values, large=True).equals(want.cast(pa.large_string()))
    assert text_array([], large=True).equals(pa.array([], pa.large_string()))
    assert repeated_text("model/é.safetensors", 3).equals(pa.array(["model/é.safetensors"] * 3, pa.string()))
    assert repeated_text("m", 0).equals(pa.array([], pa.string()))


def test_text_that_is_not_unicode_is_escaped():
    """A lone surrogate (a tensor name from a hostile header) cannot be UTF-8: it is written escaped."""
    got = text_array(["a\ud800b", "ok"])
    assert got.to_pylist() == ["a\\ud800b", "ok"]
    assert repeated_text("\udcff", 2).to_pylist() == ["\\udcff"] * 2


def test_tensor_tables_are_written_without_importing_pandas():
    """pyarrow.array imports pandas on its first call; a pool process writing tensor tables must not."""
    code = ("import sys; from inspector import inspect; from inspector.scan.task import tensor_parquet; "
            "i = inspect(sys.argv[1]); tensor_parquet('m', i.tables.tensors); print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "fixtures" / "digits_cnn.pth")], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
