"""A file over HTTP(S) that the loaders read like a local :class:`pathlib.Path`.

:class:`RemotePath` answers what the loaders ask of a path (``name``, ``parent``, ``/``,
``stat().st_size``, ``is_file``, ``open``) and :func:`open_at` opens a byte range of it: one ranged
GET read in order, in the caller's chunks, resuming at the byte where a cut stream stopped. The
first :data:`HEAD_BYTES` of the file come with the first request and are kept, so sniffing and the
header cost one request (two when the header is longer). A server that ignores ``Range`` (a 200
instead of a 206) is detected: the file is then read in one pass, front to back, on one stream,
skipping what nobody asked for, without holding it. Nothing is written to disk.
"""

from __future__ import annotations

import io
import posixpath
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from .http import Answer, HttpClient, RemoteError, http_client, shown

HEAD_BYTES = 16 * 1024  # the first request: sniffing and most safetensors headers
MAX_STALLS = 8  # cuts in a row without a byte of progress before giving up


@dataclass
class _Stat:
    st_size: int


class RemotePath:
    """One file at ``url``, read through ``client``."""

    def __init__(self, url: str, client: HttpClient):
        self.url = url
        self.client = client
        self.resolved = url  # where redirects led: signed URLs, re-resolved on 403
        self.head = b""  # the file's first bytes, kept from the first request
        self.size: int | None = None
        self.ranges = True  # False once the server answered a Range with the whole file
        self.whole: _Whole | None = None
        self.lock = threading.Lock()  # the whole-file stream is one position shared by every reader

    # --- what the loaders ask of a path -----------------------------------------------------

    @property
    def name(self) -> str:
        return posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(self.url).path))

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def parent(self) -> "RemotePath":
        parts = urllib.parse.urlsplit(self.url)
        base = parts.path.rsplit("/", 1)[0] + "/"
        return RemotePath(urllib.parse.urlunsplit((parts.scheme, parts.netloc, base, "", "")), self.client)

    def __truediv__(self, name: str) -> "RemotePath":
        return RemotePath(urllib.parse.urljoin(self.parent_dir(), urllib.parse.quote(name)), self.client)

    def parent_dir(self) -> str:
        return self.url if self.url.endswith("/") else self.url + "/"

    def __str__(self) -> str:
        return shown(self.url)

    def __repr__(self) -> str:
        return f"RemotePath({shown(self.url)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def exists(self) -> bool:
        return self.is_file()

    def is_file(self) -> bool:
        self.probe()
        return True

    def is_dir(self) -> bool:
        return False

    def stat(self) -> _Stat:
        self.probe()
        return _Stat(self.size)

    def open(self, mode: str = "rb", buffering: int = -1):
        if mode != "rb":
            raise RemoteError(f"{self}: remote files are read only")
        return io.BufferedReader(open_at(self, 0, self.stat().st_size), buffer_size=HEAD_BYTES)

    # --- reading ----------------------------------------------------------------------------

    def open_range(self, begin: int, end: int) -> "RangeStream":
        return RangeStream(self, begin, end)

    def probe(self) -> None:
        """Read the first bytes (and learn the size) with one request, once."""
        for _ in range(MAX_STALLS):
            if self.size is not None:
                return
            self._probe_once()
        if self.size is None:
            raise RemoteError(f"{self}: the connection kept dropping while reading the first bytes")

    def _probe_once(self) -> None:
        answer = self.request(0, HEAD_BYTES)
        if answer.size is None:
            answer.response.close()
            raise RemoteError(f"{self}: the server does not say how large the file is (no Content-Range "
                              "or Content-Length)")
        want = min(HEAD_BYTES, answer.size)
        stream = _Reader(self, answer, answer.size if answer.status == 200 else want)
        head = _read_upto(stream, want)
        if head is None:
            stream.close()
            return
        self.size, self.head = answer.size, head
        if answer.status == 200 and len(head) == want:
            self.whole = _Whole(self, stream, len(self.head))
        else:
            answer.response.close()

    def request(self, start: int, end: int | None) -> Answer:
        """A GET from ``start``, re-resolving from the original URL when a signed URL has expired (403)."""
        tried = self.resolved
        try:
            answer = self.client.get(tried, start, end)
        except RemoteError as e:
            if tried == self.url or e.status != 403:
                raise
            answer = self.client.get(self.url, start, end)  # an expired signature: ask the origin again
        self.resolved = answer.url
        if answer.status == 200 and (start or end is not None):
            self.ranges = False
            self.client.ranges_ignored = True
        return answer


def open_at(path, begin: int, end: int):
    """A binary stream over bytes [begin, end) of a local path or a :class:`RemotePath`."""
    opener = getattr(path, "open_range", None)
    if opener is not None:
        return opener(begin, end)
    f = open(path, "rb", buffering=0)
    f.seek(begin)
    return f


class RangeStream(io.RawIOBase):
    """Bytes [begin, end) of a remote file, read in order: from the kept head, then from one ranged
    GET (or the shared whole-file stream when the server ignores Range), resumed where it was cut."""

    def __init__(self, path: RemotePath, begin: int, end: int):
        super().__init__()
        path.probe()
        self.path, self.pos, self.end = path, begin, min(end, path.size)
        self.reader: _Reader | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self.end - self.pos)
        if n <= 0:
            return 0
        view = memoryview(b).cast("B")[:n]
        head = self.path.head
        if self.pos < len(head):
            k = min(n, len(head) - self.pos)
            view[:k] = head[self.pos:self.pos + k]
            self.pos += k
            return k
        got = self._network(view)
        self.pos += got
        return got

    def _network(self, view) -> int:
        if not self.path.ranges:
            with self.path.lock:
                return self._whole().read_at(self.pos, view)
        for _ in range(MAX_STALLS):
            if self.reader is None:
                answer = self.path.request(self.pos, self.end)
                if answer.status == 200:  # Range ignored: from now on, one pass over the whole file
                    with self.path.lock:
                        self.path.whole = _Whole(self.path, _Reader(self.path, answer, self.path.size), 0)
                        return self._whole().read_at(self.pos, view)
                self.reader = _Reader(self.path, answer, self.end - self.pos)
            got = self.reader.readinto(view)
            if got:
                return got
            self.reader.close()
            self.reader = None  # cut: ask again from this byte
        raise RemoteError(f"{self.path}: the connection kept dropping at byte {self.pos} "
                          f"({MAX_STALLS} tries without progress)")

    def _whole(self) -> "_Whole":
        whole = self.path.whole
        if whole is None or whole.pos > self.pos:  # behind the stream: a second pass
            if whole is not None:
                whole.reader.close()
            answer = self.path.request(0, None)
            whole = self.path.whole = _Whole(self.path, _Reader(self.path, answer, self.path.size), 0)
        return whole

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        super().close()


class _Reader:
    """One response's body: counts bytes, turns a cut (an error or an early end) into 0 bytes read."""

    def __init__(self, path: RemotePath, answer: Answer, length: int):
        self.path, self.response, self.left = path, answer.response, length

    def readinto(self, view) -> int:
        if self.left <= 0:
            return 0
        try:
            got = self.response.readinto(view[: self.left])
        except (OSError, ValueError, http_client().HTTPException):
            got = 0
        self.left -= got
        self.path.client.received += got
        if self.left == 0 and got:
            self.response.read(0)  # lets http.client see the end of the body
            self.path.client.release(self.response)
        return got

    def close(self) -> None:
        self.response.close()


class _Whole:
    """The whole file on one stream, for servers that ignore Range: reads only move forward."""

    def __init__(self, path: RemotePath, reader: _Reader, pos: int):
        self.path, self.reader, self.pos = path, reader, pos
        self.skip = bytearray(HEAD_BYTES)

    def read_at(self, pos: int, view) -> int:
        while self.pos < pos:  # skip what nobody asked for
            got = self._read(memoryview(self.skip)[: min(len(self.skip), pos - self.pos)])
            self.pos += got
        got = self._read(view)
        self.pos += got
        return got

    def _read(self, view) -> int:
        got = self.reader.readinto(view)
        if not got:
            raise RemoteError(f"{self.path}: the connection dropped at byte {self.pos}, and the server does not "
                              "answer range requests, so reading cannot resume there")
        return got


def _read_upto(stream: _Reader, n: int) -> bytes | None:
    """Up to ``n`` bytes from a response: fewer when it is cut first, None when it brought none."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        more = stream.readinto(view[got:])
        if not more:
            break
        got += more
    return bytes(buf[:got]) if got or not n else None



def as_path(source):
    """A loader's source as a path: a :class:`RemotePath` (or another object that opens ranges) as it is,
    anything else as a local :class:`pathlib.Path`."""
    return source if hasattr(source, "open_range") else Path(source)
