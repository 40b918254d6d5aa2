"""The table stage: rows -> tables (tensors, layers), the summary and the findings.

``schema`` defines the column orders once; ``rows`` reduces a record stream to rows; ``layers``
pools tensor rows per layer; ``findings`` reads findings off the tables; ``summary`` builds the
summary (the only place that does). Reports read what this stage builds and build nothing of it.
The tables are :class:`~inspector.table.frame.Frame` objects (numpy columns); ``to_pandas()`` gives
the DataFrames, so that pandas is imported only where a DataFrame is wanted.
"""

from __future__ import annotations

from dataclasses import dataclass

from .frame import Frame
from .layers import layer_frame
from .schema import tensor_frame
from .summary import build_summary


@dataclass
class Tables:
    """The tables of one source: tensor rows, layer rows and the summary."""

    tensors: Frame
    layers: Frame
    summary: dict


def build_tables(source: str, rows: list[dict], meta: dict) -> Tables:
    """Tensor table, layer table and summary from the rows of one source and its loader's ``meta``."""
    tensors = tensor_frame(rows)
    layers = layer_frame(tensors)
    return Tables(tensors, layers, build_summary(tensors, layers, {**meta, "source": source}))
