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

__all__ = [
    "inspect",
    "Inspection",
    "InspectorError",
    "SourceNotFound",
    "UnsupportedSource",
    "CorruptCheckpoint",
    "UnsafeCheckpoint",
    "WeightsUnavailable",
    "OutputError",
]
__version__ = "0.1.0"
