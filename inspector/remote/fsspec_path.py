"""``s3://``, ``gs://``, ``az://`` (and other fsspec URLs) as paths the loaders read, through fsspec and
its backends (s3fs, gcsfs, adlfs) where installed. Byte ranges are fsspec's ranged reads, in its
bounded read-ahead blocks; credentials are the backend's own (environment, config files)."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from ..errors import UnsupportedSource
from .http import RemoteError

BLOCK = 4 << 20


@dataclass
class _Stat:
    st_size: int


class FsspecPath:
    def __init__(self, fs, path: str, url: str):
        self.fs, self.path, self.url = fs, path, url
        self._size: int | None = None

    @classmethod
    def of(cls, url: str) -> "FsspecPath":
        try:
            import fsspec
        except ImportError:
            raise UnsupportedSource(f"{url}: reading {url.split('://')[0]}:// needs fsspec and its backend "
                                    "(pip install 'winspect[remote]' s3fs|gcsfs|adlfs)") from None
        try:
            fs, path = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as e:
            raise UnsupportedSource(f"{url}: no fsspec backend for it ({e})") from None
        return cls(fs, path, url)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def parent(self) -> "FsspecPath":
        return FsspecPath(self.fs, posixpath.dirname(self.path), self.url.rsplit("/", 1)[0])

    def __truediv__(self, name: str) -> "FsspecPath":
        return FsspecPath(self.fs, posixpath.join(self.path, name), self.url.rstrip("/") + "/" + name)

    def __str__(self) -> str:
        return self.url

    def __eq__(self, other) -> bool:
        return isinstance(other, FsspecPath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def stat(self) -> _Stat:
        if self._size is None:
            try:
                self._size = int(self.fs.size(self.path))
            except (OSError, ValueError) as e:
                raise RemoteError(f"{self.url}: cannot read ({e})") from None
        return _Stat(self._size)

    def is_file(self) -> bool:
        self.stat()
        return True

    def exists(self) -> bool:
        return self.is_file()

    def is_dir(self) -> bool:
        return False

    def open(self, mode: str = "rb", buffering: int = -1):
        return self.open_range(0, self.stat().st_size)

    def open_range(self, begin: int, end: int):
        try:
            f = self.fs.open(self.path, "rb", block_size=min(BLOCK, max(end - begin, 1)))
            f.seek(begin)
        except (OSError, ValueError) as e:
            raise RemoteError(f"{self.url}: cannot read ({e})") from None
        return f
