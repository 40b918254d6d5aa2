"""Containment of libhdf5: untrusted HDF5 metadata is parsed first in a child process with a time limit.

libhdf5 is C code that trusts its input; a one-byte change to a valid file can make it crash (SIGSEGV)
or spin forever. winspect cannot fix the library, so before an HDF5 file is opened in this process,
:func:`survey` hands it to a child (:mod:`inspector.safety.hdf5_child`) that opens it, visits every object
once, reads every attribute and checks every dataset's storage layout (and, for files whose tensors
total at most ``READ_LIMIT`` bytes, reads the data too). The child is a long-lived server that forks
a fresh process for each request, so a survey costs milliseconds and no state of one file reaches
the next. A crash or a hang of the child becomes one
:class:`CorruptCheckpoint`; a layout that reads other files (external raw storage, virtual datasets,
external links) an :class:`UnsafeCheckpoint`. Only when the child has finished is the file opened here,
and only the datasets it checked are read.

The time limit is ``WINSPECT_HDF5_TIMEOUT`` seconds (default 30, plus 10 s per GiB of data read).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CorruptCheckpoint, UnsafeCheckpoint

CHILD = Path(__file__).with_name("hdf5_child.py")
READ_LIMIT = 256 << 20  # files whose numeric datasets hold at most this many bytes are read in the child
DEFAULT_TIMEOUT = 30.0


@dataclass
class FileSpec:
    """One HDF5 file to survey: a path, a window (offset, size) of a file, or bytes held in memory."""

    where: str
    path: Path | None = None
    offset: int = 0
    size: int | None = None
    data: bytes | None = None

    def request(self, blob: int) -> dict:
        if self.data is not None:
            return {"blob": blob}
        spec: dict = {"path": str(self.path)}
        if self.size is not None:
            spec.update(offset=self.offset, size=self.size)
        return spec


@dataclass
class Survey:
    """What the child found in one file: per numeric dataset (by object address), its status."""

    datasets: dict[int, dict] = field(default_factory=dict)

    def status(self, addr: int) -> str | None:
        """The dataset's status: "ok", "unallocated", or None when the child did not check it."""
        d = self.datasets.get(addr)
        return d["status"] if d else None


def timeout_for(specs: list[FileSpec]) -> float:
    env = os.environ.get("WINSPECT_HDF5_TIMEOUT")
    try:
        base = float(env) if env else DEFAULT_TIMEOUT
    except ValueError:
        base = DEFAULT_TIMEOUT
    return base + 10.0 * min(READ_LIMIT, sum(file_size(s) for s in specs)) / (1 << 30)


def file_size(spec: FileSpec) -> int:
    if spec.data is not None:
        return len(spec.data)
    if spec.size is not None:
        return spec.size
    try:
        return spec.path.stat().st_size
    except OSError:
        return 0


class Server:
    """The surveying process (``hdf5_child.py``), started on first use and kept for the next files.

    It forks afresh for every request; when a survey hangs, the whole process group is killed
    and a new server is started for the next request.
    """

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def ask(self, payload: bytes, limit: float) -> bytes | None:
        """The answer line, or None when no answer came within ``limit`` seconds."""
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.proc = subprocess.Popen([sys.executable, "-I", str(CHILD)], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, start_new_session=True)
            try:
                self.proc.stdin.write(payload)
                self.proc.stdin.flush()
                line = read_line(self.proc.stdout, time.monotonic() + limit)
            except BaseException:  # a broken pipe, Ctrl-C, SIGTERM: leave nothing running
                self.stop()
                raise
            if line is None:
                self.stop()
            return line

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            proc.stdin.close()
        proc.wait()
        proc.stdout.close()


def read_line(stream, deadline: float) -> bytes | None:
    """One line from a pipe, or None at the deadline (or when the pipe closes first)."""
    fd, parts = stream.fileno(), []
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            parts.append(chunk)
            if chunk.endswith(b"\n"):
                return b"".join(parts)


SERVER = Server()
atexit.register(SERVER.stop)


def survey(specs: list[FileSpec]) -> list[Survey]:
    """Survey HDF5 files in the child; one :class:`Survey` per file, in order.

    Raises CorruptCheckpoint when the child crashes, hangs or finds a damaged file, and
    UnsafeCheckpoint when a file would make libhdf5 read other files.
    """
    blobs = [s.data for s in specs if s.data is not None]
    files, k = [], 0
    for s in specs:
        files.append(s.request(k))
        k += s.data is not None
    limit = timeout_for(specs)
    request = {"files": files, "read_limit": READ_LIMIT, "blobs": [len(b) for b in blobs], "timeout": limit}
    try:
        line = SERVER.ask(json.dumps(request).encode() + b"\n" + b"".join(blobs), limit)
    except OSError as e:
        raise CorruptCheckpoint(f"{specs[0].where}: cannot run the HDF5 check ({e.strerror or e})") from None
    if line is None:
        raise CorruptCheckpoint(
            f"{specs[0].where}: the HDF5 library did not finish reading the file's structure within {limit:.0f} s "
            "(a damaged or hostile file); nothing was read (WINSPECT_HDF5_TIMEOUT sets the limit)"
        )
    return answer_of(json.loads(line), specs)


def answer_of(out: dict, specs: list[FileSpec]) -> list[Survey]:
    where = specs[0].where
    if "crashed" in out:
        sig = out["crashed"]
        name = signal.Signals(sig).name if sig in signal.valid_signals() else f"exit status {out.get('status')}"
        raise CorruptCheckpoint(
            f"{where}: the HDF5 library crashed ({name}) while reading the file's structure; "
            "the file is damaged or hostile, and nothing was read"
        )
    if "error" in out:
        at = specs[out.get("file", 0)].where
        if out["error"] == "unsafe":
            raise UnsafeCheckpoint(f"{at}: refused: {out['message']}; winspect reads only the file it is given")
        raise CorruptCheckpoint(f"{at}: {out['message']}; the HDF5 file is damaged or truncated")
    return [Survey({int(k): v for k, v in f.items()}) for f in out["files"]]
