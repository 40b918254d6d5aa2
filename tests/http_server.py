"""A loopback HTTP server for the remote-source tests and benchmarks: files from a directory, with
byte ranges, and switchable misbehaviour (ignores Range, drops connections, answers 429, redirects).

Started on 127.0.0.1 in a thread; counts the body bytes it sends and the requests it answers.
"""

from __future__ import annotations

import json
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Behaviour:
    ignore_range: bool = False
    cut_every: int = 0  # drop the connection each time this many more body bytes have been sent (0: never)
    busy: int = 0  # answer this many requests with 429 (Retry-After: 0) first
    redirect: bool = False  # every /files/ path redirects (302) to /store/ with a signature in the query
    expire_after: int = 0  # signed /store/ URLs answer 403 after this many uses (0: never)
    repos: dict = field(default_factory=dict)  # "org/name" -> directory, served as a hub
    token: str | None = None  # hub requests must carry "Bearer token"
    sent: int = 0
    requests: int = 0
    log: list = field(default_factory=list)
    signed_uses: dict = field(default_factory=dict)  # signature -> uses
    since_cut: int = 0
    connections: int = 0
    cuts: int = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.server.behaviour.connections += 1

    @property
    def b(self) -> Behaviour:
        return self.server.behaviour

    def do_GET(self):
        b = self.b
        b.requests += 1
        b.log.append((self.path, self.headers.get("Range"), self.headers.get("Authorization")))
        if b.busy > 0:
            b.busy -= 1
            return self.empty(429, {"Retry-After": "0"})
        path = urlsplit(self.path).path
        if path.startswith("/api/models/"):
            return self.listing(path)
        if "/resolve/" in path:
            return self.hub_file(path)
        if b.redirect and path.startswith("/files/"):
            sig = f"secret{uuid.uuid4().hex[:12]}"
            b.signed_uses[sig] = 0
            return self.empty(302, {"Location": "/store/" + path[len("/files/"):] + "?sig=" + sig})
        if path.startswith("/store/"):
            sig = urlsplit(self.path).query.removeprefix("sig=")
            if sig not in b.signed_uses:
                return self.empty(403, {})
            b.signed_uses[sig] += 1
            if b.expire_after and b.signed_uses[sig] > b.expire_after:
                return self.empty(403, {})
            path = "/files/" + path[len("/store/"):]
        if not path.startswith("/files/"):
            return self.empty(404, {})
        self.send_file(self.server.root / unquote(path[len("/files/"):]))

    def authorised(self) -> bool:
        return self.b.token is None or self.headers.get("Authorization") == f"Bearer {self.b.token}"

    def listing(self, path: str):
        parts = path[len("/api/models/"):].split("/")
        repo = "/".join(parts[:2])
        if repo not in self.b.repos or not self.authorised():
            return self.empty(401 if repo in self.b.repos else 404, {})
        root = self.b.repos[repo]
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        body = json.dumps({"id": repo, "siblings": [{"rfilename": f} for f in files]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def hub_file(self, path: str):
        repo, rest = path.lstrip("/").split("/resolve/", 1)
        if repo not in self.b.repos or not self.authorised():
            return self.empty(401 if repo in self.b.repos else 404, {})
        file = unquote(rest.split("/", 1)[1])
        self.send_file(self.b.repos[repo] / file)

    def empty(self, status: int, headers: dict):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def send_file(self, file: Path):
        if ".." in file.parts or not file.is_file():
            return self.empty(404, {})
        size = file.stat().st_size
        start, end = 0, size
        rng = self.headers.get("Range")
        partial = bool(rng) and not self.b.ignore_range
        if partial:
            lo, hi = rng.removeprefix("bytes=").split("-")
            start, end = int(lo), min(size, int(hi) + 1) if hi else size
            if start >= size:
                return self.empty(416, {"Content-Range": f"bytes */{size}"})
        self.send_response(206 if partial else 200)
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "none" if self.b.ignore_range else "bytes")
        self.end_headers()
        self.body(file, start, end)

    def body(self, file: Path, start: int, end: int):
        b, cut = self.b, self.b.cut_every
        with open(file, "rb") as f:
            f.seek(start)
            left = end - start
            while left:
                n = min(left, 1 << 16, max(cut - b.since_cut, 1) if cut else 1 << 16)
                data = f.read(n)
                try:
                    self.wfile.write(data)
                except OSError:
                    return
                b.sent += len(data)
                b.since_cut += len(data)
                left -= len(data)
                if cut and b.since_cut >= cut and left:
                    b.since_cut, b.cuts = 0, b.cuts + 1
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that hung up mid-response (the tests cut streams on purpose)


@contextmanager
def serve(root: Path, behaviour: Behaviour | None = None):
    """A server on 127.0.0.1 for files under ``root`` at ``/files/...``; yields (base URL, behaviour)."""
    server = Server(("127.0.0.1", 0), Handler)
    server.root = Path(root)
    server.behaviour = behaviour or Behaviour()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.behaviour
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
