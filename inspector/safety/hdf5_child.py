"""The child side of :mod:`inspector.safety.hdf5_guard`: survey untrusted HDF5 files in a process of its own.

Run as a script (``python -I hdf5_child.py``) so that it imports nothing but h5py and numpy. It reads
requests on standard input, one JSON line each -- ``{"files": [{"path", "offset", "size"} | {"blob": i}],
"read_limit": N, "blobs": [sizes]}`` -- followed by the bytes of the in-memory files, and writes one JSON
line per request. Each request is answered by a fresh fork of this process: if libhdf5 crashes, the
answer says so (``{"crashed": signal}``); if it hangs, the caller kills this process group.

For every file it opens the file, visits every object once (hard links to one object count once),
reads every attribute, and checks every dataset's layout:

- external raw storage, virtual datasets, external and user-defined links: refused (they make the
  library read other files);
- filters other than HDF5's built-in ones (and LZF): refused;
- where the data lies: every contiguous block and every written chunk within the file;
- chunks or contiguous storage never written (declared sizes beyond what the file holds): the dataset
  is reported ``unallocated`` and is not read.

When the numeric datasets hold at most ``read_limit`` bytes in all, their data are read as well, so
that damaged chunk indexes or compressed chunks also surface here first.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import sys

import h5py
import numpy as np

# HDF5's built-in filters (deflate, shuffle, fletcher32, szip, nbit, scaleoffset) and h5py's LZF.
SAFE_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset", 32000: "lzf"}
SLAB_ELEMS = 1 << 22


class Refused(Exception):
    """The file uses an HDF5 feature that reads outside it (error "unsafe") or is inconsistent ("corrupt")."""

    def __init__(self, error: str, message: str):
        super().__init__(message)
        self.error = error


class Window(io.RawIOBase):
    """A read-only, seekable view of ``size`` bytes of a file, starting at ``start``."""

    def __init__(self, f, start: int, size: int):
        self.f, self.start, self.size, self.pos = f, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buf) -> int:
        n = max(0, min(len(buf), self.size - self.pos))
        if n == 0:
            return 0
        self.f.seek(self.start + self.pos)
        got = self.f.readinto(memoryview(buf)[:n])
        self.pos += got
        return got


def check_attrs(obj, name: str, file_size: int) -> None:
    """Read every attribute of ``obj``, refusing one that declares more bytes than the file holds."""
    for key in list(obj.attrs.keys()):
        aid = h5py.h5a.open(obj.id, key.encode("utf8") if isinstance(key, str) else key)
        declared = aid.shape and math.prod(aid.shape) or 1
        if declared * max(aid.dtype.itemsize, 1) > file_size + (1 << 16):
            raise Refused("corrupt", f"attribute {key!r} of {name} declares {declared:,} values, more than the file holds")
        obj.attrs[key]


def check_links(group, name: str) -> None:
    for key in group.keys():
        link = group.get(key, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise Refused("unsafe", f"{name.rstrip('/')}/{key} links to another file ({link.filename})")
        if not isinstance(link, (h5py.HardLink, h5py.SoftLink)):
            raise Refused("unsafe", f"{name.rstrip('/')}/{key} is a user-defined link")


def check_filters(plist, name: str) -> None:
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in SAFE_FILTERS:
            raise Refused("corrupt", f"dataset {name} uses HDF5 filter {code}, which is not a built-in one")


def chunk_status(ds, name: str, file_size: int) -> tuple[str, int]:
    """("ok" | "unallocated", stored bytes) of a chunked dataset; every written chunk lies in the file."""
    chunks = ds.chunks
    expected = math.prod(math.ceil(s / c) for s, c in zip(ds.shape, chunks)) if ds.shape else 1
    spans = []

    def one(info) -> None:
        spans.append((info.byte_offset, info.size))

    if hasattr(ds.id, "chunk_iter"):
        ds.id.chunk_iter(one)
    else:  # pragma: no cover - older HDF5
        for i in range(ds.id.get_num_chunks()):
            one(ds.id.get_chunk_info(i))
    stored = 0
    for offset, size in spans:
        if offset is None or offset + size > file_size:
            raise Refused("corrupt", f"dataset {name}: a chunk lies outside the file")
        stored += size
    return ("ok" if len(spans) >= expected else "unallocated"), stored


def layout_status(ds, name: str, file_size: int) -> tuple[str, int]:
    """("ok" | "unallocated", stored bytes) of a dataset, refusing layouts that read other files."""
    plist = ds.id.get_create_plist()
    layout = plist.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        raise Refused("unsafe", f"dataset {name} is a virtual dataset (it maps data of other files)")
    if plist.get_external_count() > 0:
        raise Refused("unsafe", f"dataset {name} keeps its data in an external file ({plist.get_external(0)[0]!r})")
    if layout not in (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED, h5py.h5d.COMPACT):
        raise Refused("corrupt", f"dataset {name} has an unknown storage layout ({layout})")
    check_filters(plist, name)
    declared = math.prod(ds.shape) * ds.dtype.itemsize if ds.shape is not None else 0
    if declared == 0 or layout == h5py.h5d.COMPACT:
        return "ok", declared
    if layout == h5py.h5d.CHUNKED:
        return chunk_status(ds, name, file_size)
    offset = ds.id.get_offset()
    if offset is None:
        return "unallocated", 0
    size = ds.id.get_storage_size()
    if offset + size > file_size or size < declared:
        raise Refused("corrupt", f"dataset {name}: its data lies outside the file")
    return "ok", size


def numeric(ds) -> bool:
    dt = ds.dtype
    return ds.shape is not None and dt.fields is None and dt.subdtype is None and dt.kind in "fiubcV"


def read_all(ds) -> None:
    """Read a dataset's values in slabs of at most SLAB_ELEMS (only to see that they can be read)."""
    shape = ds.shape
    if not shape:
        ds[()]
        return
    rows = max(1, SLAB_ELEMS // max(1, math.prod(shape[1:])))
    for start in range(0, shape[0], rows):
        np.asarray(ds[start:start + rows])


def survey_file(h5, file_size: int, read_limit: int) -> dict:
    """{object address: {"status", "stored"}} of every numeric dataset of an open file."""
    datasets: dict[str, dict] = {}
    readable = []
    check_attrs(h5, "/", file_size)
    check_links(h5, "/")

    def visit(name: str, obj) -> None:
        check_attrs(obj, name, file_size)
        if isinstance(obj, h5py.Group):
            check_links(obj, name)
        elif isinstance(obj, h5py.Dataset):
            status, stored = layout_status(obj, name, file_size)
            addr = h5py.h5o.get_info(obj.id).addr
            if numeric(obj):
                datasets[str(addr)] = {"status": status, "stored": stored}
                if status == "ok":
                    readable.append((name, obj.size * obj.dtype.itemsize))

    h5.visititems(visit)
    if sum(n for _, n in readable) <= read_limit:
        for name, _ in readable:
            read_all(h5[name])
    return datasets


def open_spec(spec: dict, blobs: list[bytes]):
    """(h5py file, size in bytes, things to close) for one file of the request."""
    if "blob" in spec:
        data = blobs[spec["blob"]]
        return h5py.File(io.BytesIO(data), "r"), len(data), []
    f = open(spec["path"], "rb")
    try:
        size = spec.get("size")
        if size is None:
            size = f.seek(0, io.SEEK_END)
            return h5py.File(f, "r"), size, [f]
        return h5py.File(Window(f, spec.get("offset", 0), size), "r"), size, [f]
    except BaseException:
        f.close()
        raise


def answer(request: dict, blobs: list[bytes]) -> dict:
    files = []
    for i, spec in enumerate(request["files"]):
        try:
            h5, size, closers = open_spec(spec, blobs)
        except Exception as e:  # noqa: BLE001 - any failure to open is a damaged file
            return {"error": "corrupt", "file": i, "message": f"opening the HDF5 file failed ({first_line(e)})"}
        try:
            files.append(survey_file(h5, size, request.get("read_limit", 0)))
        except Refused as e:
            return {"error": e.error, "file": i, "message": str(e)}
        except Exception as e:  # noqa: BLE001 - libhdf5 and h5py raise many types on damaged files
            return {"error": "corrupt", "file": i, "message": f"reading the HDF5 structure failed ({first_line(e)})"}
        finally:
            h5.close()
            for f in closers:
                f.close()
    return {"files": files}


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def limit_resources() -> None:
    """No core dump on a crash, and a bound on memory."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = 16 << 30
    if hard == resource.RLIM_INFINITY or hard > cap:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def run_forked(request: dict, blobs: list[bytes]) -> bytes:
    """The answer to one request, computed in a forked process: a crash there is reported, not suffered."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: survey, write the answer, exit without running any cleanup
        os.close(r)
        signal.alarm(int(request.get("timeout", 600)) + 5)  # a backstop should the caller die without killing us
        try:
            out = json.dumps(answer(request, blobs)).encode()
        except BaseException as e:  # noqa: BLE001 - MemoryError, RecursionError, ...
            out = json.dumps({"error": "corrupt", "file": 0, "message": f"the check failed ({first_line(e)})"}).encode()
        view = memoryview(out)
        while view:
            view = view[os.write(w, view):]
        os._exit(0)
    os.close(w)
    parts = []
    while chunk := os.read(r, 1 << 16):
        parts.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return json.dumps({"crashed": os.WTERMSIG(status)}).encode()
    reply = b"".join(parts)
    return reply if reply else json.dumps({"crashed": 0, "status": os.waitstatus_to_exitcode(status)}).encode()


def serve() -> None:
    """Answer requests until standard input closes: one JSON line, then the bytes of in-memory files.

    Each request is surveyed in a fresh fork of this process (which has h5py loaded and no file
    open), so no state of one file's survey reaches the next, and a start costs milliseconds.
    """
    limit_resources()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while line := stdin.readline():
        request = json.loads(line)
        blobs = [stdin.read(n) for n in request.get("blobs", [])]
        stdout.write(run_forked(request, blobs) + b"\n")
        stdout.flush()


if __name__ == "__main__":
    serve()
