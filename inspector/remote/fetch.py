"""Remote sources as objects the loaders read: URLs to :class:`RemotePath`, and whole files copied to
disk where a format cannot be read by range (or a cache was asked for)."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from . import hub
from .http import HttpClient, RemoteError
from .path import RemotePath, open_at

COPY_CHUNK = 1 << 20


def remote_path(source: str, client: HttpClient):
    """The path object for a remote source: hf:// resolved to its file, http(s) as it is, fsspec paths
    through fsspec."""
    low = source.lower()
    if low.startswith("hf://"):
        return RemotePath(hub.resolve(source, client), client)
    if low.startswith(("http://", "https://")):
        return RemotePath(source, client)
    from .fsspec_path import FsspecPath

    return FsspecPath.of(source)


def cache_path(cache: str | os.PathLike, path) -> Path:
    """Where a remote file is kept in the cache directory: host, then the URL's path."""
    parts = urllib.parse.urlsplit(path.url)
    names = [urllib.parse.unquote(p) for p in parts.path.split("/")]
    safe = [n for n in names if n not in ("", ".", "..")]
    host = (parts.netloc or parts.scheme).replace(":", "_")
    return Path(cache, host, *safe)


def download(path, dest: Path) -> Path:
    """Copy a remote file to ``dest`` (through a ``.part`` file, renamed when complete)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    size = path.stat().st_size
    buf = bytearray(COPY_CHUNK)
    try:
        with open_at(path, 0, size) as src, open(part, "wb") as out:
            while True:
                got = src.readinto(buf)
                if not got:
                    break
                out.write(memoryview(buf)[:got])
        if part.stat().st_size != size:
            raise RemoteError(f"{path}: copied {part.stat().st_size} of {size} bytes")
        os.replace(part, dest)
    except OSError as e:
        raise RemoteError(f"{dest}: cannot write a copy of {path} ({e.strerror or e})") from None
    finally:
        if part.exists():
            part.unlink()
    return dest
