"""The scan's table writer without pandas: from awkward journal rows (text needing quotes, non-ASCII,
missing values of every kind, NaN, infinities, -0.0, extreme floats, ties in findings), ``models.csv``
is byte for byte and ``models.parquet`` read back is frame for frame what the former pandas route
(``model_frame``, ``DataFrame.to_csv``, ``pa.Table.from_pandas``) wrote; the report's figures are the
ones that route counted; and the writer process never imports pandas."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .helpers import ROOT, model_frame

from inspector.finding import FINDING_TYPES
from inspector.report.zoo import BINS, ERRORS_SHOWN, WORST, ZooTally
from inspector.scan import writer
from inspector.scan.task import MODEL_COLUMNS, MODEL_INT_COLUMNS, model_arrow, model_columns, model_schema

TYPES = list(FINDING_TYPES)
TEXT = ["a,b", 'q"uo"te', "new\nline", "cr\rret", "tab\tx", "ümlaut/模型", "emoji 🙂", " lead", "trail ", "",
        "semi;colon", "'single'", "\\back", "#hash", "a\r\nb"]
FLOATS = [None, math.nan, 0.0, -0.0, 1.0, 0.5, 1 / 3, 1e-300, 5e-324, 1e300, 1.7976931348623157e308, math.inf,
          -math.inf, 1.5, -2.5, 1e16, 1e15, 123456789.123, 1e-5, 1e-4, 0.1 + 0.2, 2.0 ** 53, 7, True]
INTS = [None, 0, 1, -1, 12, 2 ** 40 + 1, 10 ** 12, 3.0, True, math.nan]


def awkward_rows(n: int = 90) -> list[dict]:
    """``n`` model rows, with every awkward value above somewhere, keys left out, and findings tied."""
    rows = []
    for i in range(n):
        row = {"path": f"{TEXT[i % len(TEXT)]}/m{i:03d}", "size": i * 1000, "mtime_ns": 1_700_000_000_123_456_789 + i,
               "status": ["ok", "error", "skipped", None][i % 4], "seconds": FLOATS[(i + 3) % len(FLOATS)]}
        row["format"] = [None, "safetensors", "", TEXT[i % len(TEXT)]][(i // 2) % 4]
        row["message"] = None if i % 9 == 0 else TEXT[(i * 7) % len(TEXT)]
        for j, c in enumerate(MODEL_COLUMNS[7:]):
            if c.startswith("findings_"):
                row[c] = [0, 2, 2, None, 5, 1, 2][(i + j) % 7]
            elif (i + j) % 5:  # else: the key is left out
                values = INTS if c in MODEL_INT_COLUMNS else FLOATS
                row[c] = values[(i * 3 + j) % len(values)]
        if i % 11 == 0:
            row["weight_neg_frac"] = FLOATS[(i // 11) % len(FLOATS)]
        rows.append(row)
    return rows


def former_tables(frames, parquet_file, csv_file, row_group: int) -> None:
    """How the tables were written before: pandas frames, to_csv and from_pandas."""
    pw, group, rows = None, [], 0
    for i, df in enumerate(frames):
        df.to_csv(csv_file, index=False, header=(i == 0))
        group.append(pa.Table.from_pandas(df, preserve_index=False))
        pw = pw or pq.ParquetWriter(parquet_file, group[0].schema, use_dictionary=False)
        rows += len(df)
        if rows >= row_group:
            pw.write_table(pa.concat_tables(group))
            group, rows = [], 0
    if group:
        pw.write_table(pa.concat_tables(group))
    pw.close()


def former_tally(tally: ZooTally, models: pd.DataFrame) -> ZooTally:
    """How the report's figures were counted before, from a DataFrame (a missing error message is "")."""
    tally.models += len(models)
    for s in tally.status:
        tally.status[s] += int((models["status"] == s).sum())
    for t in TYPES:
        name = f"findings_{t}"
        col = models[name].fillna(0)
        hit = col > 0
        if hit.any():
            tally.with_finding[t] += int(hit.sum())
            tally.findings[t] += int(col.sum())
            new = models.loc[hit].sort_values([name, "path"], ascending=[False, True]).head(WORST)
            rows = tally.worst[t] + [[p, int(n), f if pd.notna(f) else ""] for p, n, f in
                                     zip(new["path"], new[name], new["format"])]
            tally.worst[t] = sorted(rows, key=lambda r: (-r[1], r[0]))[:WORST]
    fr = pd.to_numeric(models["weight_neg_frac"], errors="coerce").dropna().to_numpy(dtype=float)
    tally.neg_frac += np.histogram(fr, bins=BINS, range=(0.0, 1.0))[0]
    errors = models[models["status"] == "error"].head(ERRORS_SHOWN - len(tally.errors))
    tally.errors += [[p, "" if pd.isna(m) else m] for p, m in zip(errors["path"], errors["message"])]
    return tally


def figures(tally: ZooTally) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vars(tally).items()}


def journal(tmp_path, rows: list[dict]):
    """A scan's output directory whose journal holds ``rows``."""
    out = tmp_path / "out"
    out.mkdir()
    with open(out / writer.JOURNAL, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return out


@pytest.mark.parametrize("batch,row_group", [(7, 16), (1000, 1024), (1, 1)])
def test_tables_are_what_pandas_wrote(tmp_path, batch, row_group):
    rows = awkward_rows()
    out = journal(tmp_path, rows[::-1])
    tally = writer.TableJob(str(out), (out / writer.JOURNAL).stat().st_size, batch, row_group, True).run()
    ordered = sorted(rows, key=lambda r: r["path"])
    frames = [model_frame(json.loads(json.dumps(ordered[i:i + batch]))) for i in range(0, len(ordered), batch)]
    parquet, text = io.BytesIO(), io.StringIO(newline="")
    former_tables(frames, parquet, text, row_group)
    assert (out / "models.csv").read_bytes() == text.getvalue().encode("utf-8")
    assert (out / "models.parquet").read_bytes() == parquet.getvalue()  # schema, metadata, row groups
    got = pd.read_parquet(out / "models.parquet")
    pd.testing.assert_frame_equal(got, pd.read_parquet(io.BytesIO(parquet.getvalue())))
    pd.testing.assert_frame_equal(got, model_frame(ordered))
    assert pq.ParquetFile(out / "models.parquet").num_row_groups == -(-len(rows) // (-(-row_group // batch) * batch))
    want = ZooTally()
    for df in frames:
        former_tally(want, df)
    assert figures(tally) == figures(want)
    assert len(tally.errors) == min(ERRORS_SHOWN, sum(r["status"] == "error" for r in rows))


def test_no_rows_are_what_pandas_wrote(tmp_path):
    out = journal(tmp_path, [])
    writer.TableJob(str(out), 0, 128, 1024).run()
    parquet, text = io.BytesIO(), io.StringIO(newline="")
    former_tables([model_frame([])], parquet, text, 1024)
    assert (out / "models.csv").read_bytes() == text.getvalue().encode("utf-8")
    assert (out / "models.parquet").read_bytes() == parquet.getvalue()
    pd.testing.assert_frame_equal(pd.read_parquet(out / "models.parquet"), model_frame([]))


def test_columns_are_the_frame_of_pandas():
    rows = awkward_rows(40)
    table = model_arrow(model_columns(rows))
    assert table.schema.equals(pa.Table.from_pandas(model_frame(rows), preserve_index=False).schema,
                               check_metadata=True)
    assert table.equals(pa.Table.from_pandas(model_frame(rows), preserve_index=False))
    assert list(model_columns(rows)) == MODEL_COLUMNS


def test_whole_numbers_are_kept_exactly():
    """Where the former route went through float64 (an integer column with a missing value), integers
    past 2**53 now keep every digit."""
    cols = model_columns([{"path": "a", "size": 2 ** 60 + 1}, {"path": "b"}])
    assert cols["size"] == [2 ** 60 + 1, None]
    assert model_arrow(cols).column("size").to_pylist() == [2 ** 60 + 1, None]


@pytest.mark.parametrize("value", [2.5, "3", math.inf])
def test_a_value_that_is_no_integer_is_refused(value):
    with pytest.raises(ValueError, match="files"):
        model_columns([{"path": "a", "files": value}])


def test_the_dataframe_route_of_the_tally_counts_the_same():
    rows = awkward_rows()
    df = model_frame(sorted(rows, key=lambda r: r["path"]))
    by_columns, by_frame, former = ZooTally(), ZooTally(), ZooTally()
    for i in range(0, len(df), 13):
        by_columns.add(model_columns(sorted(rows, key=lambda r: r["path"])[i:i + 13]))
        by_frame.add(df.iloc[i:i + 13])
        former_tally(former, df.iloc[i:i + 13])
    assert figures(by_columns) == figures(by_frame) == figures(former)
    assert any(len({r[1] for r in w}) < len(w) for w in by_columns.worst.values())  # ties were ordered by path


SERVED = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
from inspector.scan.writer import serve
end = os._exit  # (serve ends the process so when its input ends: say first whether pandas came in)
os._exit = lambda code: (print("pandas" in sys.modules, file=sys.stderr, flush=True), end(code))
serve()
"""


def test_the_writer_process_never_imports_pandas(tmp_path):
    rows = awkward_rows()
    out = journal(tmp_path, rows)
    proc = subprocess.Popen([sys.executable, "-c", SERVED, str(ROOT)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        writer.send(proc.stdin, writer.TableJob(str(out), (out / writer.JOURNAL).stat().st_size, 16, 32, True))
        ok, tally = writer.receive(proc.stdout)
        proc.stdin.close()
        stderr = proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()
    assert ok, tally
    assert stderr.splitlines()[-1] == "False", stderr[-2000:]
    assert tally.models == len(rows)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "models.parquet"),
                                  model_frame(sorted(rows, key=lambda r: r["path"])))


def test_text_that_is_not_unicode_is_escaped_in_both_tables(tmp_path):
    """A model path from a file name that is not UTF-8 (a lone surrogate in the journal) is written
    escaped, as tensor names are, rather than failing both tables."""
    out = journal(tmp_path, [{"path": "/zoo/m\udcff.bin", "status": "error", "message": "bad \ud800"},
                             {"path": "/zoo/ok", "status": "ok"}])
    tally = writer.TableJob(str(out), (out / writer.JOURNAL).stat().st_size, 128, 1024, True).run()
    got = pd.read_parquet(out / "models.parquet")
    assert got["path"].tolist() == ["/zoo/m\\udcff.bin", "/zoo/ok"] and got["message"][0] == "bad \\ud800"
    assert "/zoo/m\\udcff.bin,,error,bad \\ud800," in (out / "models.csv").read_text(encoding="utf-8")
    assert tally.errors == [["/zoo/m\\udcff.bin", "bad \\ud800"]]
