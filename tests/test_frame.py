"""The table stage's Frame against pandas: the same DataFrame, the same CSV bytes, the same groupings."""

from __future__ import annotations

import io
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from inspector.table.frame import CSV_BLOCK_ROWS, Frame, column_type, descending, first_seen, group_sum, isnull
from tests.helpers import ROOT

AWKWARD_FLOATS = [0.1, -0.0, 0.0, 1e-20, 1e16, 123456789.123, 1 / 3, math.inf, -math.inf, math.nan, 5e-324,
                  1.7976931348623157e308, 2.0**53 + 2, -1e-05, 0.0001, 100.0, np.float64(0.2), np.float32(0.3)]
NAMES = ["a.weight", "with,comma", 'with "quote"', "new\nline", "", "ünïcode", " lead", "tab\tbed", None]


def rows_of(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rows.append({
            "name": NAMES[i % len(NAMES)],
            "f": AWKWARD_FLOATS[i % len(AWKWARD_FLOATS)],
            "g": float(rng.normal()) * 10.0 ** int(rng.integers(-30, 30)),
            "i": int(rng.integers(-(2**62), 2**62)),
            "maybe_int": None if i % 3 == 0 else int(rng.integers(0, 1000)),
            "maybe_float": None if i % 4 == 0 else float(rng.normal()),
            "flag": bool(i % 2),
            "nothing": None,
            "text_or_none": None if i % 2 else "x",
        })
    return rows


COLUMNS = ["name", "f", "g", "i", "maybe_int", "maybe_float", "flag", "nothing", "text_or_none", "missing"]


def test_inferred_types_are_pandas_types():
    rows = rows_of(50)
    frame = Frame.from_rows(rows, COLUMNS).to_pandas()
    reference = pd.DataFrame(rows, columns=COLUMNS)
    assert {c: str(t) for c, t in frame.dtypes.items()} == {c: str(t) for c, t in reference.dtypes.items()}


@pytest.mark.parametrize("n", [0, 1, 7, 200, 9000])  # 9000: three blocks of CSV_BLOCK_ROWS
def test_csv_bytes_equal_pandas(n):
    assert CSV_BLOCK_ROWS < 9000
    rows = rows_of(n)
    frame = Frame.from_rows(rows, COLUMNS)
    frame.cast("maybe_int", "Int64")
    reference = pd.DataFrame(rows, columns=COLUMNS)
    reference["maybe_int"] = reference["maybe_int"].astype("Int64")
    mine, theirs = io.StringIO(), io.StringIO()
    frame.write_csv(mine)
    reference.to_csv(theirs, index=False)
    assert mine.getvalue() == theirs.getvalue()


def test_to_pandas_equals_the_dataframe_of_the_rows():
    rows = rows_of(60, seed=3)
    frame = Frame.from_rows(rows, COLUMNS)
    frame.cast("maybe_int", "Int64")
    frame.cast("i", "int64")
    reference = pd.DataFrame(rows, columns=COLUMNS)
    reference["maybe_int"] = reference["maybe_int"].astype("Int64")
    pd.testing.assert_frame_equal(frame.to_pandas(), reference, check_exact=True)


def test_records_are_python_values_as_pandas_gives_them():
    frame = Frame.from_rows(rows_of(12), COLUMNS)
    frame.cast("maybe_int", "Int64")
    recs = frame.records()
    assert recs[0]["maybe_int"] is None and isinstance(recs[1]["maybe_int"], int)
    assert isinstance(recs[1]["i"], int) and isinstance(recs[1]["flag"], bool)
    assert recs[0]["missing"] != recs[0]["missing"] and recs[0]["maybe_float"] != recs[0]["maybe_float"]
    assert recs[0]["nothing"] is None
    assert [r["name"] for r in recs] == [NAMES[i % len(NAMES)] for i in range(12)]


def test_column_type_rules():
    assert column_type([1, 2]) == "int64"
    assert column_type([1, None]) == "float64"
    assert column_type([1, 2.5]) == "float64"
    assert column_type([True, False]) == "bool"
    assert column_type([True, None]) == "object"
    assert column_type([None, None]) == "object"
    assert column_type(["a", 1]) == "object"
    assert column_type([np.int64(3), np.float32(2.0)]) == "float64"
    assert column_type([]) == "object"


def test_first_seen_and_group_sum_match_groupby():
    rng = np.random.default_rng(1)
    keys = np.array([f"l{k}" if k < 7 else None for k in rng.integers(0, 9, 500)], dtype=object)
    ints = rng.integers(0, 10**12, 500)
    floats = rng.normal(size=500)
    names, codes = first_seen(keys)
    df = pd.DataFrame({"k": keys, "i": ints, "f": floats})
    g = df.groupby("k", sort=False).sum()
    assert names == list(g.index)
    assert group_sum(codes, len(names), ints).tolist() == g["i"].tolist()
    assert np.allclose(group_sum(codes, len(names), floats), g["f"].to_numpy(), rtol=1e-14, atol=0)


def test_descending_matches_a_stable_pandas_sort():
    v = np.array([1.0, 3.0, np.nan, 3.0, 1.0, 2.0, np.nan, 3.0, -np.inf, np.inf, 0.0, -0.0])
    expected = pd.DataFrame({"a": v}).sort_values("a", ascending=False, kind="stable", na_position="last").index
    assert descending(v).tolist() == list(expected)


def test_selection_and_isnull():
    frame = Frame.from_rows(rows_of(9), COLUMNS)
    picked = frame[frame["flag"]]
    assert len(picked) == 4 and picked["name"].tolist() == [NAMES[i] for i in (1, 3, 5, 7)]
    assert frame.take([8, 0])["name"].tolist() == [None, "a.weight"]
    assert isnull(frame["name"]).tolist() == [False] * 8 + [True]
    assert isnull(frame["maybe_float"]).tolist() == [i % 4 == 0 for i in range(9)]
    assert not isnull(frame["i"]).any()


def test_a_selection_of_a_selection_keeps_casts_and_new_columns():
    frame = Frame.from_rows(rows_of(40), COLUMNS)
    first = frame[frame["flag"]]  # rows 1, 3, 5, ...
    first.cast("maybe_int", "Int64")
    first.set("double", first["i"] * 2, "int64")
    second = first.take([3, 0, 1])
    assert second["i"].tolist() == [frame["i"][k] for k in (7, 1, 3)]
    assert second["double"].tolist() == [2 * frame["i"][k] for k in (7, 1, 3)]
    assert second.types["maybe_int"] == "Int64" and second.columns[-1] == "double"
    assert second.records()[1]["name"] == NAMES[1]
    with pytest.raises(ValueError):
        second.set("short", [1, 2])


def test_columns_of_different_lengths_are_refused():
    with pytest.raises(ValueError):
        Frame({"a": np.zeros(2), "b": np.zeros(3)}, {"a": "float64", "b": "float64"})


def test_the_command_line_writes_tables_without_importing_pandas(tmp_path):
    """Nor matplotlib, torch, or http.client (a local file needs no HTTP: 15 ms of start-up)."""
    script = ("import sys\nfrom inspector.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n"
              "    code = e.code\nprint(code, *[m for m in ('pandas', 'matplotlib', 'torch', 'http.client') "
              "if m in sys.modules])")
    src = ROOT / "fixtures" / "digits_cnn.pth"
    out = subprocess.run([sys.executable, "-c", script, str(src), "--csv", str(tmp_path / "t.csv"), "--layers-csv",
                          str(tmp_path / "l.csv"), "--json", str(tmp_path / "s.json")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "0", out.stdout + out.stderr
    reference = pd.read_csv(tmp_path / "t.csv")
    assert len(reference) > 0 and list(reference.columns)[:3] == ["name", "layer", "kind"]


def _sources(tmp_path):
    """Fixtures with dead-ReLU candidates, tied tensors, integer counters, Keras layouts and GGUF types,
    and a file with NaN, Inf, -0.0, empty, 0-d, bool and bf16 tensors."""
    import ml_dtypes
    from safetensors.numpy import save_file
    import torch

    rng = np.random.default_rng(5)
    odd = {"enc.weight": rng.normal(size=(12, 6)).astype(np.float32), "enc.bias": -np.ones(12, np.float32),
           "e.weight": np.zeros((0, 4), np.float32), "scal": np.array(3.5, np.float32), "ids": np.arange(5),
           "mask": np.array([True, False]), "b.weight": rng.normal(size=(8, 8)).astype(ml_dtypes.bfloat16)}
    odd["enc.weight"][0, 0], odd["enc.weight"][1, 1], odd["enc.weight"][2, 2] = np.nan, np.inf, -0.0
    odd["enc.weight"][3:5] = -np.abs(odd["enc.weight"][3:5])  # units 3 and 4: all weights <= 0 ...
    odd["enc.bias"][4] = 1.0  # ... but unit 4's bias is positive: one dead-ReLU candidate, found 3 rows later
    save_file(odd, str(tmp_path / "odd.safetensors"))
    emb = torch.randn(10, 4)
    tied = {"embed.weight": emb, "fc.weight": -torch.rand(6, 4), "x.weight": torch.randn(3, 3),
            "y.weight": torch.randn(3, 3), "head.weight": emb, "fc.bias": torch.tensor([1.0, -1, -1, -1, -1, -1])}
    torch.save(tied, tmp_path / "tied.pth")
    names = ("digits_cnn.pth", "digits_cnn_full.pt", "digits_keras.keras", "tiny_llama.gguf", "digits_cnn_int8.onnx")
    return [tmp_path / "odd.safetensors", tmp_path / "tied.pth"] + [ROOT / "fixtures" / n for n in names]


@pytest.mark.parametrize("spectral", [False, True])
def test_rows_kept_in_blocks_give_the_table_of_the_rows(tmp_path, spectral):
    """table_frame with blocks of 3 rows (every fixture spans several) against tensor_frame of the rows."""
    from inspector.loaders import LoadOptions, open_source
    from inspector.table.rows import pop_spectra, table_frame, table_rows
    from inspector.table.schema import tensor_frame

    for path in _sources(tmp_path):
        with open_source(str(path), LoadOptions()) as src:
            rows, hists = table_rows(src.records(), spectral=spectral)
        with open_source(str(path), LoadOptions()) as src:
            frame, hists_b, spectra = table_frame(src.records(), spectral=spectral, block=3)
        expected_spectra = pop_spectra(rows)
        expected = tensor_frame(rows).to_pandas()
        pd.testing.assert_frame_equal(frame.to_pandas(), expected, check_exact=True)
        if path.name in ("odd.safetensors", "tied.pth"):  # the cases are there
            dead = expected.set_index("name")["dead_relu_candidates"]
            assert dead["enc.weight" if path.name == "odd.safetensors" else "fc.weight"] in (1, 5)
            assert path.name == "odd.safetensors" or expected["tied_to"].notna().sum() == 1
        assert sorted(spectra) == sorted(expected_spectra)
        assert list(hists_b) == list(hists)
        for name in hists:
            assert all(np.array_equal(a, b) for a, b in zip(hists[name], hists_b[name]))
