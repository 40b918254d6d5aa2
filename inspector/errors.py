"""Errors raised by library code.

Library code never prints or exits: it raises an :class:`InspectorError` whose
message says what failed, on which file or tensor, and what to do about it.
The CLI turns these into a one-line ``error: ...`` and an exit code.
"""

from __future__ import annotations


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, at most ``limit`` characters (its type name when empty)."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__


class InspectorError(Exception):
    """Base class for every error winspect reports to a user."""

    exit_code = 1


class SourceNotFound(InspectorError):
    """The path does not exist or the model name is unknown."""


class UnsupportedSource(InspectorError):
    """The source exists but is not a format winspect reads."""


class CorruptCheckpoint(InspectorError):
    """The file claims a supported format but its contents are inconsistent."""


class UnsafeCheckpoint(InspectorError):
    """Loading the file would require executing code it contains."""


class WeightsUnavailable(InspectorError):
    """Pretrained weights are neither cached nor downloadable."""


class OutputError(InspectorError):
    """An output file cannot be written (or would overwrite an input)."""


class FindingsFound(InspectorError):
    """An audit found finding types the caller gates on (its report has already said which)."""

    exit_code = 3
