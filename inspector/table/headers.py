"""Tables from the headers alone: shapes, dtypes and parameter counts, with no tensor value read.

``tensors``: one row per tensor (name, layer, kind, dtype, shape, numel, nbytes); ``layers``: per
layer, tensors, numel and bytes; ``kinds``: the same per kind. Tied tensors (one storage under two
names) are listed but counted once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..names import shape_str
from .frame import Frame, first_seen, group_sum, isnull

TENSOR_COLUMNS = ("name", "layer", "kind", "dtype", "shape", "numel", "nbytes", "tied_to")


@dataclass
class HeaderTables:
    tensors: Frame
    layers: Frame
    kinds: Frame
    summary: dict


def header_row(rec) -> dict:
    nbytes = rec.nbytes if rec.nbytes is not None else rec.numel * rec.np_dtype.itemsize
    return {"name": rec.name, "layer": rec.layer, "kind": rec.kind, "dtype": rec.dtype,
            "shape": shape_str(rec.shape), "numel": rec.numel, "nbytes": nbytes, "tied_to": rec.tied_to}


def header_tables(records) -> HeaderTables:
    """The header tables of a record stream (records are listed, never read)."""
    tensors = Frame.from_rows([header_row(r) for r in records], list(TENSOR_COLUMNS))
    tensors.cast("numel", "int64")
    tensors.cast("nbytes", "int64")
    counted = tensors[isnull(tensors["tied_to"])]
    layers, kinds = _sums(counted, "layer"), _sums(counted, "kind")
    summary = {"tensors": int(len(tensors)), "numel": int(counted["numel"].sum()),
               "nbytes": int(counted["nbytes"].sum()),
               "numel_by_kind": {k: int(v) for k, v in zip(kinds["kind"], kinds["numel"])}}
    return HeaderTables(tensors, layers, kinds, summary)


def _sums(df: Frame, key: str) -> Frame:
    """Per value of ``key`` (in order of first appearance): tensors, numel and nbytes."""
    keys, codes = first_seen(df[key])
    ones = np.ones(len(df), dtype=np.int64)
    return Frame.from_columns({key: keys, **{c: group_sum(codes, len(keys), v) for c, v in (
        ("tensors", ones), ("numel", df["numel"]), ("nbytes", df["nbytes"]))}}, {key: "object"})
