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



def experiment(names=None, out=None, **options):
    """Training experiments on whether negative weights matter (needs the torch extra); see
    :func:`inspector.experiments.experiment`."""
    from .experiments import experiment as run

    return run(names, out, **options)


__all__ = [
    "inspect",
    "experiment",
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
