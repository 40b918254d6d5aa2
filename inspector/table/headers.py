"""Tables from the headers alone: shapes, dtypes and parameter counts, with no tensor value read.

``tensors``: one row per tensor (name, layer, kind, dtype, shape, numel, nbytes); ``layers``: per
layer, tensors, numel and bytes; ``kinds``: the same per kind. Tied tensors (one storage under two
names) are listed but counted once.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..names import shape_str

TENSOR_COLUMNS = ("name", "layer", "kind", "dtype", "shape", "numel", "nbytes", "tied_to")


@dataclass
class HeaderTables:
    tensors: pd.DataFrame
    layers: pd.DataFrame
    kinds: pd.DataFrame
    summary: dict


def header_row(rec) -> dict:
    nbytes = rec.nbytes if rec.nbytes is not None else rec.numel * rec.np_dtype.itemsize
    return {"name": rec.name, "layer": rec.layer, "kind": rec.kind, "dtype": rec.dtype,
            "shape": shape_str(rec.shape), "numel": rec.numel, "nbytes": nbytes, "tied_to": rec.tied_to}


def header_tables(records) -> HeaderTables:
    """The header tables of a record stream (records are listed, never read)."""
    tensors = pd.DataFrame([header_row(r) for r in records], columns=list(TENSOR_COLUMNS))
    counted = tensors[tensors["tied_to"].isna()]
    sums = {"tensors": ("name", "size"), "numel": ("numel", "sum"), "nbytes": ("nbytes", "sum")}
    layers = counted.groupby("layer", sort=False).agg(**sums).reset_index()
    kinds = counted.groupby("kind", sort=False).agg(**sums).reset_index()
    summary = {"tensors": int(len(tensors)), "numel": int(counted["numel"].sum()),
               "nbytes": int(counted["nbytes"].sum()),
               "numel_by_kind": {k: int(v) for k, v in zip(kinds["kind"], kinds["numel"])}}
    return HeaderTables(tensors, layers, kinds, summary)
