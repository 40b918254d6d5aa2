"""Training experiments that answer "do negative weights matter?" with winspect's own measurements.

``experiment(names, out=DIR)`` trains small networks on data bundled with scikit-learn, on the
CPU, deterministically per seed, and returns an :class:`ExperimentResult` of DataFrames; with
``out`` it writes ``DIR/<name>.csv`` (one row per run), ``DIR/<name>_layers.csv``, plots, and
``DIR/experiments.md`` / ``.html``. Needs the ``torch`` extra (torch, scikit-learn).

This module imports neither torch nor scikit-learn: names can be checked without them.
"""

from __future__ import annotations

import difflib
import importlib.util

from ..errors import InspectorError

NAMES = ("signs", "speed", "tasks", "activations", "init", "evolution")
EXTRA = "winspect[torch]"
NEEDS = ("torch", "sklearn", "scipy")


class BadExperiment(InspectorError):
    """An experiment name, seed count or epoch count that cannot be run."""

    exit_code = 2


class MissingExtra(InspectorError):
    """torch or scikit-learn is not installed."""


def check_names(names) -> tuple:
    """The names to run, in the catalogue's order (all when none are given); unknown ones are refused."""
    names = tuple(names or NAMES)
    for n in names:
        if n not in NAMES:
            close = difflib.get_close_matches(n, NAMES, n=2)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise BadExperiment(f"unknown experiment {n!r}{hint} (known: {', '.join(NAMES)})")
    return tuple(n for n in NAMES if n in names)


def check_budget(seeds, epochs) -> None:
    if seeds is not None and seeds < 1:
        raise BadExperiment(f"seeds must be at least 1, not {seeds}")
    if epochs is not None and epochs < 1:
        raise BadExperiment(f"epochs must be at least 1, not {epochs}")


def require() -> None:
    """Raise :class:`MissingExtra` unless torch, scikit-learn and SciPy can be imported."""
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(f"experiments need {', '.join(missing)}: install the extra with "
                           f"pip install '{EXTRA}'")


def experiment(names=None, out=None, *, seeds: int | None = None, epochs: int | None = None,
               quick: bool = False, progress=None):
    """Run the named experiments (all by default). ``seeds``: runs per configuration (seeds 0..N-1;
    default 5, 2 with ``quick``); ``epochs``: for every network (default per network, fewer with
    ``quick``). Returns an :class:`~inspector.experiments.results.ExperimentResult`."""
    names = check_names(names)
    check_budget(seeds, epochs)
    require()
    from .results import run_all

    return run_all(names, out, seeds, epochs, quick, progress)


__all__ = ["experiment", "check_names", "check_budget", "require", "NAMES", "BadExperiment", "MissingExtra"]
