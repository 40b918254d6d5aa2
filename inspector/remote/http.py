"""HTTP(S) with the standard library: ranged GETs that survive an unreliable network.

Every request is retried with exponential backoff on connection errors, 429 and 5xx answers
(honouring ``Retry-After``); redirects are followed by hand so that credentials never travel to
another host (hub storage redirects to signed URLs). Errors name the URL (its query string, where
signatures live, left out) and the HTTP status, in one line. The client counts the bytes it
receives, for progress bars and for the benchmarks' "bytes transferred".
"""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import InspectorError

if TYPE_CHECKING:
    import http.client


def http_client():
    """The http.client module, imported at the first request rather than with every loader (it and the
    email package it needs cost every process 15 ms at start)."""
    import http.client

    return http.client


RETRY_STATUS = (429, 500, 502, 503, 504)
MAX_REDIRECTS = 10
USER_AGENT = "winspect"


class RemoteError(InspectorError):
    """A remote source could not be read: the URL and the HTTP status or network error say why."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def shown(url: str) -> str:
    """A URL as errors show it: without the query string (signed URLs carry their signature there)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


@dataclass
class Answer:
    """An open response: ``status`` 200 or 206, the ``url`` it came from after redirects, and the first
    byte it carries (0 for a 200: the server ignored Range)."""

    response: http.client.HTTPResponse
    url: str
    status: int
    start: int
    size: int | None  # the whole file's size, when the server said it


@dataclass
class HttpClient:
    retries: int = 6
    backoff: float = 0.5  # seconds before the first retry; doubles each time, capped at max_wait
    max_wait: float = 30.0
    timeout: float = 60.0
    auth: dict = field(default_factory=dict)  # host -> Authorization header value (never printed)
    received: int = 0  # bytes of bodies read through this client
    requests: int = 0
    ranges_ignored: bool = False  # a server answered a Range request with the whole file (200)
    idle: dict = field(default_factory=dict, repr=False)  # host -> connections whose last answer was read whole

    def get(self, url: str, start: int = 0, end: int | None = None) -> Answer:
        """GET ``url`` from byte ``start`` (to ``end``, exclusive, when given), retrying what can be retried."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                answer = self._follow(url, start, end)
            except (OSError, http_client().HTTPException) as e:
                if last:
                    raise RemoteError(f"{shown(url)}: network error ({e or type(e).__name__}) after "
                                      f"{self.retries} retries") from None
                self.wait(attempt, None)
                continue
            if answer.status in (200, 206):
                return answer
            reason = answer.response.reason
            retry_after = answer.response.getheader("Retry-After")
            answer.response.close()
            if answer.status not in RETRY_STATUS or last:
                more = f" after {self.retries} retries" if answer.status in RETRY_STATUS else ""
                raise RemoteError(f"{shown(answer.url)}: HTTP {answer.status} {reason}{more}".rstrip(), answer.status)
            self.wait(attempt, retry_after)
        raise AssertionError("unreachable")  # pragma: no cover

    def wait(self, attempt: int, retry_after: str | None) -> None:
        delay = min(self.backoff * 2 ** attempt, self.max_wait)
        if retry_after and retry_after.strip().isdigit():
            delay = min(float(retry_after.strip()), self.max_wait)
        time.sleep(delay)

    def _follow(self, url: str, start: int, end: int | None) -> Answer:
        for _ in range(MAX_REDIRECTS + 1):
            response = self._request(url, start, end)
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                location = response.getheader("Location")
                response.close()
                url = urllib.parse.urljoin(url, location)
                continue
            return _answer(response, url, start)
        raise RemoteError(f"{shown(url)}: more than {MAX_REDIRECTS} redirects")

    def _request(self, url: str, start: int, end: int | None) -> http.client.HTTPResponse:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RemoteError(f"{shown(url)}: not an http(s) URL")
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        if parts.netloc in self.auth:  # only to the host it was given for, never across a redirect
            headers["Authorization"] = self.auth[parts.netloc]
        target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        key = (parts.scheme, parts.netloc)
        pool = self.idle.setdefault(key, [])
        conn = pool.pop() if pool else None
        self.requests += 1
        if conn is not None:  # a kept-alive connection the server may have closed meanwhile: one fresh try
            try:
                return _send(conn, target, headers, key)
            except (OSError, http_client().HTTPException):
                conn.close()
        return _send(_connect(key, self.timeout), target, headers, key)

    def release(self, response: http.client.HTTPResponse) -> None:
        """Keep the connection of a response read to its end for the next request to its host."""
        conn = getattr(response, "connection_of", None)
        if conn is not None and response.isclosed() and not response.will_close:
            self.idle.setdefault(response.pool_key, []).append(conn)

    def read_all(self, url: str, limit: int) -> bytes:
        """A whole (small) resource, at most ``limit`` bytes (an index, a listing)."""
        answer = self.get(url)
        try:
            blob = self.read(answer.response, limit + 1)
            self.release(answer.response)
        finally:
            answer.response.close()
        if len(blob) > limit:
            raise RemoteError(f"{shown(url)}: larger than {limit} bytes")
        return blob

    def read(self, response, n: int) -> bytes:
        blob = response.read(n)
        self.received += len(blob)
        return blob


def _connect(key: tuple[str, str], timeout: float) -> http.client.HTTPConnection:
    hc = http_client()
    kind = hc.HTTPSConnection if key[0] == "https" else hc.HTTPConnection
    return kind(key[1], timeout=timeout)


def _send(conn, target: str, headers: dict, key) -> http.client.HTTPResponse:
    conn.request("GET", target, headers=headers)
    response = conn.getresponse()
    response.connection_of, response.pool_key = conn, key  # for release()
    return response


def _answer(response: http.client.HTTPResponse, url: str, start: int) -> Answer:
    size = None
    if response.status == 206:
        rng = response.getheader("Content-Range", "")  # bytes a-b/size
        try:
            first = int(rng.split()[1].split("-")[0])
            total = rng.rsplit("/", 1)[1]
            size = int(total) if total.isdigit() else None
        except (IndexError, ValueError):
            response.close()
            raise RemoteError(f"{shown(url)}: HTTP 206 with an unreadable Content-Range {rng!r:.60}") from None
        if first != start:
            response.close()
            raise RemoteError(f"{shown(url)}: asked for byte {start}, the server sent from byte {first}")
        return Answer(response, url, 206, first, size)
    length = response.getheader("Content-Length")
    if response.status == 200 and length and length.isdigit():
        size = int(length)
    return Answer(response, url, response.status, 0, size)
