"""winspect: measure what is inside a model's weights."""

from .api import Inspection, inspect
from .errors import (
    CorruptCheckpoint,
    InspectorError,
    OutputError,
    SourceNotFound,
    UnsafeCheckpoint,
    UnsupportedSource,
    WeightsUnavailable,
)
from .multi import CompareResult, DiffResult, TrackResult, compare, diff, track

__all__ = [
    "inspect",
    "Inspection",
    "diff",
    "track",
    "compare",
    "DiffResult",
    "TrackResult",
    "CompareResult",
    "InspectorError",
    "SourceNotFound",
    "UnsupportedSource",
    "CorruptCheckpoint",
    "UnsafeCheckpoint",
    "WeightsUnavailable",
    "OutputError",
]
__version__ = "0.1.0"
