"""Sources that live elsewhere: HTTP(S) URLs, ``hf://`` repositories and, where fsspec is installed,
``s3://``, ``gs://`` and ``az://`` paths. Loaders read them like local paths (see :mod:`.path`)."""

from __future__ import annotations

SCHEMES = ("http://", "https://", "hf://")
FSSPEC_SCHEMES = ("s3://", "gs://", "gcs://", "az://", "abfs://")


def is_remote(source) -> bool:
    """Whether a source is a URL (never a local path, even if a file of that name exists)."""
    return isinstance(source, str) and source.lower().startswith(SCHEMES + FSSPEC_SCHEMES)
