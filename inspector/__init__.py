"""winspect: measure what is inside a model's weights.

The API's names are imported when first used (``inspector.inspect`` imports pandas, the
loaders and the analyzer), so that importing a submodule, or ``winspect --help``, does not.
"""

from __future__ import annotations

import importlib

from .errors import (
    CorruptCheckpoint,
    InspectorError,
    OutputError,
    SourceNotFound,
    UnsafeCheckpoint,
    UnsupportedSource,
    WeightsUnavailable,
)

_LAZY = {
    "inspect": ".api", "Inspection": ".api", "inspect_headers": ".api", "HeaderInspection": ".api",
    "diff": ".multi", "track": ".multi", "compare": ".multi",
    "DiffResult": ".multi", "TrackResult": ".multi", "CompareResult": ".multi",
}



def experiment(names=None, out=None, **options):
    """Training experiments on whether negative weights matter (needs the torch extra); see
    :func:`inspector.experiments.experiment`."""
    from .experiments import experiment as run

    return run(names, out, **options)


__all__ = [
    "inspect",
    "inspect_headers",
    "experiment",
    "Inspection",
    "HeaderInspection",
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
    "scan",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    """The API's names, imported when first used; ``inspector.scan`` is the scan module, callable:
    ``inspector.scan(paths, out)``."""
    if name == "scan":
        return importlib.import_module(f"{__name__}.scan")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"scan"})
