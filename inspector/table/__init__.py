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
from .summary import build_summary


@dataclass
class Tables:
    """The tables of one source: tensor rows, layer rows and the summary."""

    tensors: Frame
    layers: Frame
    summary: dict


def build_tables(source: str, tensors: Frame, meta: dict) -> Tables:
    """Layer table and summary from the tensor table of one source (see :func:`.schema.tensor_frame` and
    :func:`.rows.table_frame`) and its loader's ``meta``."""
    layers = layer_frame(tensors)
    return Tables(tensors, layers, build_summary(tensors, layers, {**meta, "source": source}))
