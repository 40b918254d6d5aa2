"""One model's inspection as a scan task: a model row and its tensor table as Parquet bytes.

Runs on a pool process or a Dask worker. Never raises for a model's sake: a model that cannot be
read is a row with ``status="error"`` and the message, so one bad file never stops a scan.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import threading
import time
from functools import lru_cache

import numpy as np

from ..errors import InspectorError, OutputError, first_line
from ..finding import FINDING_TYPES
from ..records import readable
from ..report.export import replace_file
from ..table.frame import Frame, as_array
from ..table.schema import TENSOR_ANALYSIS_COLUMNS, TENSOR_COLUMNS, TENSOR_EXTRA_COLUMNS
from .arrow import number_array, repeated_text, text_array
from .discover import Model

PLAIN_ROWS = 64  # tensor tables of at most this many rows are written without compression or dictionaries
KINDS = ("weight", "bias", "norm", "buffer", "other")
STATUSES = ("ok", "error", "skipped")

# models.parquet / models.csv: the column order, defined once
KIND_FIGURES = ("tensors", "numel", "neg_frac", "abs_mean", "std")
MODEL_COLUMNS = list(dict.fromkeys([
    "path", "format", "status", "message", "files", "size", "mtime_ns", "tensors", "numel",
    "weight_numel", "weight_neg_frac", "weight_zero_frac", "weight_pos_frac", "learned_neg_frac",
    *[f"{k}_{c}" for k in KINDS for c in KIND_FIGURES],
    "nan_count", "inf_count", "findings", *[f"findings_{t}" for t in FINDING_TYPES], "seconds",
]))
MODEL_INT_COLUMNS = list(dict.fromkeys([
    "files", "size", "mtime_ns", "tensors", "numel", "nan_count", "inf_count", "findings",
    *[f"{k}_tensors" for k in KINDS], *[f"{k}_numel" for k in KINDS], *[f"findings_{t}" for t in FINDING_TYPES]]))
MODEL_TEXT_COLUMNS = ["path", "format", "status", "message"]

# tensors.parquet: the tensors.csv columns after ``model``
TENSOR_TABLE_COLUMNS = ["model", *TENSOR_COLUMNS, *TENSOR_EXTRA_COLUMNS, *TENSOR_ANALYSIS_COLUMNS]
TENSOR_TEXT_COLUMNS = ["model", "name", "layer", "kind", "dtype", "shape", "module_type", "tied_to"]
TENSOR_INT_COLUMNS = ["numel", "neg_count", "zero_count", "pos_count", "nan_count", "inf_count", "finite_count",
                      "out_axis", "units", "all_nonpos_units", "dead_relu_candidates", "fan_in", "fan_out"]


def base_row(model: Model, status: str, message: str = "") -> dict:
    """A model row with what is known before inspecting: the path, its files, size and time."""
    return {"path": model.path, "status": status, "message": message, "files": len(model.files),
            "size": model.size, "mtime_ns": model.mtime_ns}


def inspect_model(model: Model, threads: int | None = 1) -> tuple[dict, bytes | None]:
    """(the model's row, its tensor table as Parquet bytes or None). Never raises for the model's sake.
    ``threads`` reduce its tensors (None: see ``inspect``); a task shares the machine with the others."""
    from ..audit import audited

    start = time.perf_counter()
    try:
        inspection, found = audited(model.path, threads=threads)
    except Exception as e:  # an InspectorError for bad input; anything else is a bug, reported in the row
        msg = first_line(e)
        why = msg if isinstance(e, InspectorError) else f"unexpected {type(e).__name__}: {msg}"
        row = base_row(model, "error", why)
        row["seconds"] = time.perf_counter() - start
        return row, None
    if inspection is None and not found.findings:  # refused, with nothing to report as a finding
        return {**base_row(model, "error", found.refused or "refused"), "seconds": time.perf_counter() - start}, None
    row = base_row(model, "ok", found.refused or "")
    row.update(summary_figures(inspection.summary if inspection else None, found.findings))
    try:
        data = tensor_parquet(model.path, inspection.tables.tensors) if inspection is not None else None
    except Exception as e:  # a bug: the model is an error row, the scan goes on
        row = base_row(model, "error", f"cannot write its tensor table (unexpected {type(e).__name__}: {first_line(e)})")
        data = None
    row["seconds"] = time.perf_counter() - start
    return row, data


def part_name(path: str) -> str:
    """The file of a model's tensor table in the scan's tensors.parquet directory, relative to it: in one
    of 256 folders named by the first two digits of the hash of its path. (In one folder, the pool's
    processes waited for each other: a file is made and renamed with the folder locked, and after many
    files were deleted, ext4 takes long to find a free inode, all that time with the lock held.)"""
    digest = hashlib.sha1(path.encode('utf-8', 'surrogateescape')).hexdigest()[:20]
    return os.path.join(digest[:2], f"part-{digest}.parquet")


def write_part(parts: str, path: str, data: bytes) -> None:
    """Write ``data`` as the tensor table of the model at ``path`` into the directory ``parts`` (a hidden
    temporary file renamed: ``replace_file``), making its folder when it is not there yet."""
    target = os.path.join(parts, part_name(path))
    try:
        replace_file(target, lambda f: f.write(data))
    except InspectorError:
        folder = os.path.dirname(target)
        if os.path.isdir(folder):
            raise
        try:
            os.mkdir(folder)  # (only the folder: not the directory, should it be gone)
        except FileExistsError:
            pass  # made meanwhile by another process
        except OSError as e:
            raise OutputError(f"{folder}: cannot create the folder ({e.strerror or e})") from None
        replace_file(target, lambda f: f.write(data))


PLACE_MARK = ".winspect-scan"  # in the tensor tables' directory, for the length of a scan: its token
_seen: dict[tuple[str, str], bool] = {}  # (directory, token) -> whether this process sees that directory


def delivered(model: Model, result: tuple, place: tuple[str, str] | None) -> tuple:
    """``result`` (row, Parquet bytes or None), its table written by this process when it sees the scan's
    directory (``place``: the directory and the token the client wrote there): then ``(row, True)``.
    A worker on another machine, one that reads another token there, or a write that fails gives the
    bytes back for the client to write."""
    row, data = result
    if place is None or not isinstance(data, bytes) or not _sees(place):
        return result
    try:  # (os.path, not pathlib: see replace_file)
        write_part(place[0], model.path, data)
    except InspectorError:
        return result
    return row, True


def _sees(place: tuple[str, str]) -> bool:
    if place not in _seen:
        try:
            with open(os.path.join(place[0], PLACE_MARK), "rb") as f:
                _seen[place] = f.read() == place[1].encode("ascii")
        except OSError:
            _seen[place] = False
    return _seen[place]


def timed_inspect(model: Model, timeout: float | None, place: tuple[str, str] | None = None) -> tuple:
    """:func:`inspect_model` (its table written here when this process sees ``place``, see :func:`delivered`),
    or an error row when it takes more than ``timeout`` seconds (None: no limit). For a Dask worker, where
    a task cannot be stopped from outside: the inspection runs in a daemon thread, which is left behind
    when it times out (blocked or running until it ends on its own or the worker process exits); the task
    itself returns at the deadline."""
    return delivered(model, _inspect_within(model, timeout), place)


def timed_batch(models: list[Model], timeout: float | None, place: tuple[str, str] | None = None) -> list:
    """A Dask task: :func:`timed_inspect` for each of ``models``, one after the other; their results."""
    return [timed_inspect(m, timeout, place) for m in models]


def _inspect_within(model: Model, timeout: float | None) -> tuple[dict, bytes | None]:
    if not timeout:
        return inspect_model(model)
    done: list = []
    start = time.perf_counter()
    worker = threading.Thread(target=lambda: done.append(inspect_model(model)), daemon=True,
                              name=f"winspect inspecting {model.path}")
    worker.start()
    worker.join(timeout)
    return done[0] if done else timeout_row(model, timeout, time.perf_counter() - start)


def timeout_row(model: Model, timeout: float, seconds: float | None = None) -> tuple[dict, None]:
    """The row of a model whose inspection was stopped (or abandoned) after ``timeout`` seconds."""
    row = base_row(model, "error", f"timed out after {timeout:g} s")
    row["seconds"] = timeout if seconds is None else seconds
    return row, None


def summary_figures(summary: dict | None, findings) -> dict:
    """The model row's figures from an inspection's summary (None for a refused pickle) and findings."""
    out: dict = {f"findings_{t}": 0 for t in FINDING_TYPES}
    for f in findings:
        out[f"findings_{f.type}"] = out.get(f"findings_{f.type}", 0) + 1
    out["findings"] = len(findings)
    if summary is None:
        return out
    for key in ("format", "tensors", "numel", "weight_numel", "weight_neg_frac", "weight_zero_frac",
                "weight_pos_frac", "learned_neg_frac", "nan_count", "inf_count"):
        out[key] = summary.get(key)
    for kind in KINDS:
        fig = summary["by_kind"].get(kind, {})
        for c in KIND_FIGURES:
            out.setdefault(f"{kind}_{c}", fig.get(c, 0 if c in ("tensors", "numel") else math.nan))
    return out


def model_columns(rows: list[dict]) -> dict[str, list]:
    """Model rows as columns of plain Python values, in MODEL_COLUMNS order, with the values
    pandas read models.parquet back with, None where one is missing (a missing key, None or NaN): ints
    (MODEL_INT_COLUMNS), str (MODEL_TEXT_COLUMNS), floats (the rest). Without pandas: for the table
    writer, which writes them to Parquet (:func:`model_arrow`) and CSV and counts them."""
    columns = {}
    for c in MODEL_COLUMNS:
        values = [row.get(c) for row in rows]
        if c in MODEL_TEXT_COLUMNS:
            columns[c] = text_values(values)
        elif c in MODEL_INT_COLUMNS:
            columns[c] = values if all(type(v) is int or v is None for v in values) else [
                int_value(c, v) for v in values]
        else:
            columns[c] = [v if type(v) is float and v == v else float_value(v) for v in values]
    return columns


def text_values(values: list) -> list[str | None]:
    """Values of a text column as str (None for None or NaN); text that is not Unicode (a lone
    surrogate, from a file name that is not UTF-8) escaped (``records.readable``), as tensor names are,
    so that both tables can hold it."""
    return [None if v is None or (type(v) is not str and v != v) else readable(str(v)) for v in values]


def int_value(column: str, v) -> int | None:
    """A value of an integer column as an int (None for None or NaN); ValueError for one that is not a
    whole number."""
    if v is None or v != v:
        return None
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer()):
        return int(v)
    raise ValueError(f"column {column}: {v!r} is not an integer")


def float_value(v) -> float | None:
    f = None if v is None else float(v)
    return None if f is None or f != f else f


@lru_cache(maxsize=1)
def model_schema():
    """The Arrow schema of models.parquet: the one ``pa.Table.from_pandas`` gives a frame of these columns
    as Int64, string and float64 (text as large_string, Int64 as int64, float64), with the ``pandas``
    metadata it stores, so
    that pandas reads the file back with those dtypes (Int64 and string from the metadata's numpy_type)."""
    import pyarrow as pa

    def field(c):
        return pa.field(c, pa.large_string() if c in MODEL_TEXT_COLUMNS else
                        pa.int64() if c in MODEL_INT_COLUMNS else pa.float64())

    return pa.schema([field(c) for c in MODEL_COLUMNS], metadata={b"pandas": pandas_metadata(pa.__version__)})


def pandas_metadata(pyarrow_version: str) -> bytes:
    """The ``pandas`` schema metadata of :func:`model_schema`, as ``pa.Table.from_pandas`` writes it for
    such a frame without an index (its ``pandas_version``: the installed pandas', read
    without importing it; left out when there is none)."""
    from importlib import metadata

    def column(c):
        kind = ("object", "string") if c in MODEL_TEXT_COLUMNS else \
            ("int64", "Int64") if c in MODEL_INT_COLUMNS else ("float64", "float64")
        return {"name": c, "field_name": c, "pandas_type": kind[0], "numpy_type": kind[1], "metadata": None}

    meta = {"index_columns": [], "column_indexes": [], "columns": [column(c) for c in MODEL_COLUMNS],
            "attributes": {}, "creator": {"library": "pyarrow", "version": pyarrow_version}}
    try:
        meta["pandas_version"] = metadata.version("pandas")
    except metadata.PackageNotFoundError:
        pass
    return json.dumps(meta).encode("utf8")


def model_arrow(columns: dict[str, list]):
    """:func:`model_columns` as an Arrow table of :func:`model_schema` (None: null)."""
    import pyarrow as pa

    schema = model_schema()
    return pa.Table.from_arrays([plain_array(columns[f.name], f.type) for f in schema], schema=schema)


def plain_array(values: list, kind):
    """An Arrow array of ``kind`` (int64, float64 or large_string) from plain Python values, None: null
    (from buffers, see :mod:`.arrow`)."""
    import pyarrow as pa

    if kind == pa.large_string():
        return text_array(values, large=True)
    nulls = values.count(None)
    missing = np.fromiter((v is None for v in values), bool, len(values)) if nulls else None
    filled = [0 if v is None else v for v in values] if nulls else values
    return number_array(np.array(filled, np.int64 if kind == pa.int64() else np.float64), kind, missing)


@lru_cache(maxsize=1)
def tensor_schema():
    """The Arrow schema of tensors.parquet: text, integer (nullable) and float columns."""
    import pyarrow as pa

    def kind(c):
        return pa.string() if c in TENSOR_TEXT_COLUMNS else pa.int64() if c in TENSOR_INT_COLUMNS else pa.float64()

    return pa.schema([(c, kind(c)) for c in TENSOR_TABLE_COLUMNS])


def tensor_arrow(model: str, tensors: Frame):
    """One model's tensor table (a Frame), ``model`` column first, as an Arrow table of
    :func:`tensor_schema`, built column by column from the Frame's arrays (see :mod:`.arrow`): a missing
    number (NaN, or a nullable integer's NaN) and missing text (None, NaN) are nulls."""
    import pyarrow as pa

    n = len(tensors)
    arrays = []
    schema = tensor_schema()
    for field in schema:
        if field.name == "model":
            arrays.append(repeated_text(model, n))
        elif field.name not in tensors:
            arrays.append(pa.nulls(n, field.type))
        elif field.type == pa.string():
            arrays.append(text_array(tensors[field.name]))
        else:
            arrays.append(_number_array(tensors[field.name], field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _number_array(values: np.ndarray, kind):
    """An int64 or float64 Arrow array of a Frame column (int64, float64 with NaN for missing, bool or
    object values), nulls where a value is missing."""
    import pyarrow as pa

    if values.dtype == object:
        values = as_array(values, "float64")
    if values.dtype.kind in "iub" and kind == pa.int64():
        return number_array(values, kind)
    values = values.astype(np.float64, copy=False)
    return number_array(values, kind, np.isnan(values))


def tensor_parquet(model: str, tensors: Frame) -> bytes:
    """The model's tensor table as the bytes of a Parquet file: zstd-compressed and dictionary-encoded
    when it has more than PLAIN_ROWS rows; plain below, where both cost more time than they save bytes
    (a 3-row table: 1.3 ms and 10.5 KB with them, 0.5 ms and 9.7 KB without)."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    small = len(tensors) <= PLAIN_ROWS
    pq.write_table(tensor_arrow(model, tensors), buf, compression="none" if small else "zstd",
                   use_dictionary=not small, write_statistics=False)
    return buf.getvalue()
