"""A small column table on numpy arrays: what the table stage builds, without importing pandas.

The command line writes CSV and draws the terminal report from these tables directly, so that a run
pays for pandas only when something asks for a DataFrame (the Python API's ``tensors`` and ``layers``,
the plots, the HTML report). :meth:`Frame.to_pandas` gives the same DataFrame the rows would give
``pandas.DataFrame(rows, columns=...)`` followed by the schema's casts, and :meth:`Frame.write_csv`
the same bytes as ``DataFrame.to_csv(index=False)``.

Column types are pandas' names: ``int64``, ``float64``, ``bool``, ``object`` (text, ``None`` or mixed
values) and ``Int64`` (integers with missing values; held as float64 with NaN, exact to 2**53).
"""

from __future__ import annotations

import csv
import functools

import numpy as np

INTEGER_TYPES = (int, np.integer)
FLOAT_TYPES = (float, np.floating)


def column_type(values: list) -> str:
    """The type pandas infers for a column of Python values (numbers, text, None)."""
    types = set(map(type, values))
    types.discard(type(None))
    if not types:
        return "object"
    if all(issubclass(t, (bool, np.bool_)) for t in types):
        return "bool" if None not in values else "object"
    if all(issubclass(t, INTEGER_TYPES) and not issubclass(t, (bool, np.bool_)) for t in types):
        return "int64" if None not in values else "float64"
    if all(issubclass(t, INTEGER_TYPES + FLOAT_TYPES) and not issubclass(t, (bool, np.bool_)) for t in types):
        return "float64"
    return "object"


def as_array(values, kind: str) -> np.ndarray:
    """``values`` as the array of a column of type ``kind`` (missing numbers become NaN)."""
    if kind in ("float64", "Int64"):
        if isinstance(values, np.ndarray) and values.dtype != object:
            return values.astype(np.float64, copy=False)
        return np.array(values, dtype=np.float64)  # None becomes NaN
    if kind == "int64":
        return np.asarray(values, dtype=np.int64)
    if kind == "bool":
        return np.asarray(values, dtype=bool)
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


CSV_BLOCK_ROWS = 4096


def isnull(values: np.ndarray) -> np.ndarray:
    """True where a value is missing: NaN or None (text columns hold None)."""
    if values.dtype == object:
        return np.fromiter((v is None or (isinstance(v, float) and v != v) for v in values), bool, len(values))
    if values.dtype.kind == "f":
        return np.isnan(values)
    return np.zeros(len(values), dtype=bool)


def first_seen(keys: np.ndarray) -> tuple[list, np.ndarray]:
    """(the distinct keys in order of first appearance, each row's group number): a grouping that keeps
    the table's order, as ``groupby(sort=False)`` does. Missing keys (None, NaN) form no group: -1."""
    index: dict = {}
    codes = np.empty(len(keys), dtype=np.int64)
    for i, k in enumerate(keys.tolist()):
        if k is None or (isinstance(k, float) and k != k):
            codes[i] = -1
            continue
        codes[i] = index.setdefault(k, len(index))
    return list(index), codes


def descending(values: np.ndarray) -> np.ndarray:
    """Positions that sort numbers largest first, ties in table order, NaN last (as pandas'
    ``sort_values(ascending=False, kind="stable")``)."""
    return np.argsort(-values.astype(np.float64), kind="stable")


def group_sum(codes: np.ndarray, groups: int, values: np.ndarray) -> np.ndarray:
    """Per group, the sum of ``values`` (rows with code -1 left out), in int64 for integers."""
    ok = codes >= 0
    if values.dtype.kind in "iub":
        out = np.zeros(groups, dtype=np.int64)
        np.add.at(out, codes[ok], values[ok].astype(np.int64))
        return out
    return np.bincount(codes[ok], weights=values[ok].astype(np.float64), minlength=groups)


class Frame:
    """Named columns of one length, in order; ``frame[name]`` is a numpy array, ``frame[mask]`` or
    ``frame.take(positions)`` a Frame of those rows, whose columns are copied out of this one when first
    read (a selection costs only the columns that are asked of it)."""

    __slots__ = ("_data", "_types", "_length", "_base", "_rows")

    def __init__(self, data: dict[str, np.ndarray], types: dict[str, str]):
        self._data = dict(data)
        self._types = {c: types[c] for c in self._data}
        self._base, self._rows = None, None  # a selection: the columns it was taken from, and its rows
        lengths = {len(v) for v in self._data.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self._length = lengths.pop() if lengths else 0

    @classmethod
    def from_rows(cls, rows: list[dict], columns: list[str]) -> "Frame":
        """The table of ``rows`` (dicts; a missing key is a missing value) with these columns."""
        return ColumnBlock.concat([ColumnBlock.from_rows(rows, columns)], columns)

    @classmethod
    def from_columns(cls, columns: dict, types: dict[str, str] | None = None) -> "Frame":
        """A table of columns (arrays or lists), each of the given type or, by default, inferred."""
        types = dict(types or {})
        data = {}
        for c, values in columns.items():
            if c not in types:
                types[c] = _array_type(values) if isinstance(values, np.ndarray) else column_type(list(values))
            data[c] = as_array(values, types[c])
        return cls(data, types)

    @property
    def columns(self) -> list[str]:
        return list(self._types)

    @property
    def types(self) -> dict[str, str]:
        return dict(self._types)

    def __len__(self) -> int:
        return self._length

    def __contains__(self, name) -> bool:
        return name in self._types

    def __getitem__(self, key):
        if isinstance(key, str):
            return self._column(key)
        return self.take(key)

    def _column(self, name: str) -> np.ndarray:
        values = self._data.get(name)
        if values is None:
            if name not in self._types:
                raise KeyError(name)
            values = self._data[name] = self._base[name][self._rows]
        return values

    def _items(self):
        return ((c, self._column(c)) for c in self._types)

    def take(self, rows) -> "Frame":
        """The rows selected by a boolean mask or a list of positions, in that order."""
        rows = np.asarray(rows)
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)
        out = Frame({}, {})
        out._types = dict(self._types)
        out._length = len(rows)
        if self._base is not None:  # a selection of a selection: positions in the first table
            out._base, out._rows = self._base, self._rows[rows]
            out._data = {c: v[rows] for c, v in self._data.items()}  # read, cast or added here
        else:
            out._base, out._rows = self._data, rows
        return out

    def cast(self, name: str, kind: str) -> None:
        """Give a column another type (as ``DataFrame.astype``)."""
        self._data[name] = as_array(self._column(name), kind)
        self._types[name] = kind

    def set(self, name: str, values, kind: str | None = None) -> None:
        """Add or replace a column (appended at the end when new)."""
        kind = kind or (_array_type(values) if isinstance(values, np.ndarray) else column_type(list(values)))
        values = as_array(values, kind)
        if self._types and len(values) != self._length:
            raise ValueError(f"column {name!r} has {len(values)} values for {self._length} rows")
        self._data[name] = values
        self._types[name] = kind
        self._length = len(values)

    def select(self, columns: list[str]) -> "Frame":
        return Frame({c: self._column(c) for c in columns}, {c: self._types[c] for c in columns})

    def records(self) -> list[dict]:
        """The rows as dicts of Python values, as ``DataFrame.to_dict("records")`` gives them: NaN for a
        missing number, None for missing text or a missing nullable integer."""
        names = list(self._types)
        cols = [[_python(v, self._types[c]) for v in values] for c, values in self._items()]
        return [dict(zip(names, values)) for values in zip(*cols)] if cols else []

    def to_pandas(self):
        """The pandas DataFrame of this table (imports pandas)."""
        import pandas as pd

        data = {}
        for c, v in self._items():
            if self._types[c] == "Int64":
                missing = np.isnan(v)
                data[c] = pd.arrays.IntegerArray(np.where(missing, 0, v).astype(np.int64), missing)
            else:
                data[c] = v
        return pd.DataFrame(data, columns=list(self._types), index=pd.RangeIndex(self._length))

    def write_csv(self, f) -> None:
        """The table as CSV, as ``DataFrame.to_csv(f, index=False)`` writes it."""
        w = csv.writer(f, lineterminator="\n")
        w.writerow(self._types)
        columns = list(self._items())
        for start in range(0, self._length, CSV_BLOCK_ROWS):  # the text of a block of rows at a time
            cols = [_csv_cells(v[start:start + CSV_BLOCK_ROWS], self._types[c]) for c, v in columns]
            w.writerows(zip(*cols))


# How the values of a column in one block of rows look, and how two blocks' kinds combine into what pandas
# infers for the whole column: ``absent`` (nothing but missing values, some rows without the key), ``none``
# (every row has the key, all None), ``bool``, ``int64``, ``float64`` (numbers with a None or a float among
# them) or ``object``.
def merged_kind(a: str, b: str) -> str:
    if a == b:
        return a
    a, b = sorted((a, b), key=KIND_ORDER.index)
    if a in ("absent", "none"):  # missing values: numbers become floats, anything else text
        return {"none": "absent", "int64": "float64", "float64": "float64"}.get(b, "object")
    return "float64" if (a, b) == ("int64", "float64") else "object"


KIND_ORDER = ("absent", "none", "bool", "int64", "float64", "object")


class ColumnBlock:
    """A block of rows as columns, each with the kind its values have in the block (see :func:`merged_kind`);
    blocks are joined into one Frame whose types are those of the rows taken all at once."""

    __slots__ = ("data", "kinds", "length")

    def __init__(self, data: dict, kinds: dict, length: int):
        self.data, self.kinds, self.length = data, kinds, length

    @classmethod
    def from_rows(cls, rows: list[dict], columns: list[str]) -> "ColumnBlock":
        present = set().union(*{tuple(r) for r in rows})
        data, kinds = {}, {}
        for c in columns:
            values = [r.get(c) for r in rows]
            kind = column_type(values) if c in present else "absent"
            if kind == "object" and all(v is None for v in values):
                kind = "none" if all(c in r for r in rows) else "absent"
            kinds[c] = kind
            data[c] = None if kind in ("absent", "none") else as_array(values, kind)
        return cls(data, kinds, len(rows))

    def row(self, i: int) -> dict:
        """Row ``i`` as a dict (without the keys it did not have)."""
        return {c: (None if v is None else v[i].item() if self.kinds[c] != "object" else v[i])
                for c, v in self.data.items() if self.kinds[c] != "absent"}

    @staticmethod
    def concat(blocks: list["ColumnBlock"], columns: list[str]) -> Frame:
        data, types = {}, {}
        for c in columns:
            kind = functools.reduce(merged_kind, [b.kinds[c] for b in blocks]) if blocks else "absent"
            types[c] = {"absent": "float64", "none": "object"}.get(kind, kind)
            data[c] = np.concatenate([_block_values(b, c, types[c]) for b in blocks]) if blocks \
                else as_array([], types[c])
        return Frame(data, types)


def _block_values(block: ColumnBlock, column: str, kind: str) -> np.ndarray:
    values = block.data[column]
    if values is None:  # absent or all None: NaN in numbers, None in text
        return np.full(block.length, np.nan) if kind == "float64" else as_array([None] * block.length, kind)
    if kind == "object" and values.dtype != object:
        return as_array(values.tolist(), "object")
    return values.astype(kind if kind != "object" else object, copy=False)


def _array_type(values: np.ndarray) -> str:
    kind = values.dtype.kind
    if kind == "b":
        return "bool"
    if kind in "iu":
        return "int64"
    if kind == "f":
        return "float64"
    return column_type(values.tolist())


def _python(v, kind: str):
    if kind in ("float64", "Int64"):
        v = float(v)
        return None if v != v and kind == "Int64" else (int(v) if kind == "Int64" else v)
    if kind == "int64":
        return int(v)
    if kind == "bool":
        return bool(v)
    return v


def _csv_cells(values: np.ndarray, kind: str) -> list:
    """A column's CSV cells as pandas writes them: floats in their shortest round-trip form, missing
    values empty."""
    if kind == "float64":
        return ["" if v != v else repr(v) for v in values.tolist()]
    if kind == "Int64":
        return ["" if v != v else str(int(v)) for v in values.tolist()]
    if kind in ("int64", "bool"):
        return [str(v) for v in values.tolist()]
    return [_object_cell(v) for v in values.tolist()]


def _object_cell(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return str(v)
