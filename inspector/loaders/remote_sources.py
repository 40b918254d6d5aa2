"""Opening a remote source: loaders that read byte ranges read it where it lives; the others read a
copy downloaded first (to a temporary directory, removed on close, or to the ``--cache`` directory)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..errors import InspectorError, UnsupportedSource
from ..remote.fetch import cache_path, download, remote_path
from ..remote.http import HttpClient
from . import LoadOptions, OpenedSource, _loader_for_file


def open_remote(source: str, options: LoadOptions) -> OpenedSource:
    client = HttpClient()
    path = remote_path(source, client)
    if options.cache and hasattr(path, "url"):
        local = cache_path(options.cache, path)
        if local.is_file():  # a copy from an earlier run
            return _opened_local(source, local, None, options)
    loader = _loader_for_file(path)
    if loader.reads_ranges and not options.cache:
        src = loader.open(path, options)
        src.source, src.network = source, client
        return src
    if options.no_download:
        raise UnsupportedSource(f"{path}: {loader.name} files cannot be read by byte range; without "
                                "--no-download the file is downloaded to a temporary directory first")
    return _downloaded(source, path, loader, options, client)


def _downloaded(source: str, path, loader, options: LoadOptions, client: HttpClient) -> OpenedSource:
    """Copy the files a loader reads for ``path``, then open the local copy."""
    keep = bool(options.cache) and hasattr(path, "url")
    root = Path(options.cache) if keep else Path(tempfile.mkdtemp(prefix="winspect-"))
    try:
        files = _files(loader, path)
        local = [download(f, cache_path(root, f)) for f in files]
        src = _opened_local(source, local[0], None if keep else root, options)
    except BaseException:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        raise
    src.network = client
    src.note(f"read from a downloaded copy ({'kept in ' + str(root) if keep else 'removed afterwards'})")
    return src


def _files(loader, path) -> list:
    try:
        return [path, *(f for f in loader.files(path) if f != path)]
    except InspectorError:
        raise
    except Exception:  # a loader whose files() needs local paths: the file alone
        return [path]


def _opened_local(source: str, local: Path, temp_root: Path | None, options: LoadOptions | None = None):
    from . import open_source

    src = open_source(str(local), options or LoadOptions())
    src.source = source
    if temp_root is not None:
        close = src.close

        def close_and_remove() -> None:
            try:
                close()
            finally:
                shutil.rmtree(temp_root, ignore_errors=True)

        src.close = close_and_remove
    return src
