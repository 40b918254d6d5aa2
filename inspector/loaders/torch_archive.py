"""The containers PyTorch writes, read without torch: zip (torch >= 1.6 and TorchScript), legacy, legacy tar.

- **zip**: ``<root>/data.pkl`` (the object), ``<root>/data/<key>`` (one member per storage, stored
  uncompressed and memory-mapped; a compressed one is decompressed into a private temporary file,
  never more bytes than the storage needs), ``<root>/byteorder`` (``little`` or ``big``). TorchScript
  archives add ``constants.pkl`` and a ``code/`` folder that is never read.
- **legacy** (before 1.6): pickles of the magic number, protocol, system info, the object and the
  storage keys, then every storage as an 8-byte element count and its raw bytes.
- **legacy tar** (before 0.4): members ``sys_info``, ``storages`` (pickled headers and raw bytes),
  ``tensors`` (pickled headers and binary views) and ``pickle`` (the object).

Every pickle is read by :class:`~inspector.safety.restricted_unpickler.RestrictedUnpickler` with
the reconstructors of :mod:`.torch_objects`: nothing named in the file is imported or called.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CorruptCheckpoint
from ..safety.pickle_scan import LEGACY_MAGIC, check_pickle, legacy_tar_members, torch_zip_layout
from ..safety.restricted_unpickler import RestrictedUnpickler, unwrap
from ..safety.zipcheck import check_zip, read_member, stored_data_start
from .torch_objects import TORCH_RECONSTRUCTORS, Storage, StorageType, StoredTensor, check_view

MAX_PICKLE = 1 << 30  # bytes of one pickle read into memory
COPY_BLOCK = 1 << 22


@dataclass
class Checkpoint:
    """The unpickled object of a PyTorch file and where its storages' bytes are."""

    obj: object
    fmt: str  # pytorch-zip, pytorch-legacy, pytorch-tar, torchscript, pickle
    named: list[str] = field(default_factory=list)  # every global the pickles named
    big_endian: bool = False
    constants: object = None  # TorchScript constants.pkl
    tempdir: tempfile.TemporaryDirectory | None = None

    def close(self) -> None:
        if self.tempdir is not None:
            self.tempdir.cleanup()
            self.tempdir = None


class _Storages:
    """Storages by key, as persistent ids name them, validated on the way."""

    def __init__(self, legacy: bool):
        self.by_key: dict[str, Storage] = {}
        self.legacy = legacy

    def __call__(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.60}")
        if pid[0] == "module" and self.legacy and len(pid) >= 2:
            return pid[1]
        if pid[0] != "storage" or len(pid) not in (5, 6):
            raise pickle.UnpicklingError(f"unknown persistent id {pid[:1]!r:.60}")
        stype, key, _location, numel = pid[1:5]
        if not isinstance(stype, StorageType) or not isinstance(key, (str, int)) or not _count(numel):
            raise pickle.UnpicklingError(f"malformed storage id {pid!r:.120}")
        storage = self._root(str(key), stype, numel)
        view = pid[5] if len(pid) == 6 else None
        return self._view(storage, view) if view else storage

    def _root(self, key: str, stype: StorageType, numel: int) -> Storage:
        if key not in self.by_key:
            self.by_key[key] = Storage(key, stype.dtype, numel)
        storage = self.by_key[key]
        if storage.dtype != stype.dtype and not stype.untyped:
            raise pickle.UnpicklingError(f"storage {key} named with two element types")
        return storage

    def _view(self, root: Storage, view) -> Storage:
        if not (isinstance(view, tuple) and len(view) == 3 and _count(view[1]) and _count(view[2])):
            raise pickle.UnpicklingError("malformed storage view")
        key, offset, numel = view
        if offset + numel > root.numel:
            raise pickle.UnpicklingError(f"storage view {key} extends past its storage")
        return Storage(str(key), root.dtype, numel, element_offset=offset, root=root)


def _count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 62


def unpickle(data, persistent_load, named: list[str], end: int | None = None, checked: bool = False):
    """One pickle from bytes or a file object (ending by byte ``end``), restricted; the globals it names
    are added to ``named``. Its opcodes are checked first (sizes, memo indexes, bounds) unless the
    file's static scan already parsed these very bytes cleanly (``checked``)."""
    f = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    if not checked:
        check_pickle(f, len(data) if end is None and isinstance(data, (bytes, bytearray)) else end)
    unpickler = RestrictedUnpickler(f, TORCH_RECONSTRUCTORS, persistent_load)
    try:
        return unwrap(unpickler.load())
    finally:
        named.extend(n for n in unpickler.named if n not in named)


# --- zip ----------------------------------------------------------------------------------

def read_zip(path: Path, checked: bool = False) -> Checkpoint:
    with check_zip(path) as zf:
        layout = torch_zip_layout(zf, path)
        root = layout.root
        names = {i.filename: i for i in zf.infolist()}
        storages = _Storages(legacy=False)
        named: list[str] = []
        obj = unpickle(read_member(zf, root + "data.pkl", MAX_PICKLE, path), storages, named, checked=checked)
        constants = None
        if root + "constants.pkl" in names:
            constants = unpickle(read_member(zf, root + "constants.pkl", MAX_PICKLE, path), storages, named,
                                 checked=checked)
        order = read_member(zf, root + "byteorder", 16, path).strip() if root + "byteorder" in names else b"little"
        if order not in (b"little", b"big"):
            raise CorruptCheckpoint(f"{path}: byteorder member says {order[:16]!r}; expected little or big")
        fmt = "torchscript" if layout.torchscript else "pytorch-zip"
        ckpt = Checkpoint(obj, fmt, named, big_endian=order == b"big", constants=constants)
        try:
            for key, storage in storages.by_key.items():
                storage.location = _zip_storage(zf, names.get(f"{root}data/{key}"), storage, path, ckpt)
        except BaseException:
            ckpt.close()
            raise
    return ckpt


def _zip_storage(zf: zipfile.ZipFile, info, storage: Storage, path: Path, ckpt: Checkpoint) -> tuple:
    """(file, byte offset, byte length) of a storage's bytes: the member itself when stored, else a
    temporary file holding exactly the bytes the storage needs."""
    if info is None:
        raise CorruptCheckpoint(f"{path}: storage {storage.key!r} has no data member")
    if info.file_size < storage.nbytes:
        raise CorruptCheckpoint(f"{path}: storage {storage.key!r} needs {storage.nbytes} bytes; its member "
                                f"holds {info.file_size}")
    if info.compress_type == zipfile.ZIP_STORED:
        return (str(path), stored_data_start(path, info), storage.nbytes)
    if ckpt.tempdir is None:
        ckpt.tempdir = tempfile.TemporaryDirectory(prefix="winspect-")
    out = Path(ckpt.tempdir.name) / f"storage-{len(list(Path(ckpt.tempdir.name).iterdir()))}"
    try:
        with zf.open(info) as src, open(out, "wb") as dst:
            _copy_exactly(src, dst, storage.nbytes)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as e:
        raise CorruptCheckpoint(f"{path}: storage member {info.filename!r} is unreadable ({e})") from None
    return (str(out), 0, storage.nbytes)


def _copy_exactly(src, dst, n: int) -> None:
    left = n
    while left:
        block = src.read(min(COPY_BLOCK, left))
        if not block:
            raise EOFError("member ends before the storage does")
        dst.write(block)
        left -= len(block)


# --- legacy ---------------------------------------------------------------------------------

def read_legacy(path: Path, checked: bool = False) -> Checkpoint:
    """A legacy file, or a plain pickle when its first pickle is not torch's magic number."""
    named: list[str] = []
    storages = _Storages(legacy=True)
    size = path.stat().st_size
    with open(path, "rb") as f:
        first = unpickle(f, None, named, size, checked)
        if first != LEGACY_MAGIC:
            return Checkpoint(first, "pickle", named)
        version = unpickle(f, None, named, size, checked)
        info = unpickle(f, None, named, size, checked)
        if version != 1001 or not isinstance(info, dict):
            raise CorruptCheckpoint(f"{path}: legacy PyTorch file with protocol {version!r:.20} (expected 1001)")
        if info.get("little_endian") is False:
            raise CorruptCheckpoint(f"{path}: legacy PyTorch file written on a big-endian machine")
        obj = unpickle(f, storages, named, size, checked)
        keys = unpickle(f, None, named, size, checked)
        _place_legacy_storages(f, path, size, keys, storages)
    return Checkpoint(obj, "pytorch-legacy", named)


def _place_legacy_storages(f, path: Path, size: int, keys, storages: _Storages) -> None:
    if not isinstance(keys, list) or any(str(k) not in storages.by_key for k in keys):
        raise CorruptCheckpoint(f"{path}: legacy storage keys do not match the storages the pickle names")
    pos = f.tell()
    for key in keys:
        storage = storages.by_key[str(key)]
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            raise CorruptCheckpoint(f"{path}: file ends before storage {key!r} (truncated?)")
        (count,) = struct.unpack("<q", head)
        if count != storage.numel:
            raise CorruptCheckpoint(f"{path}: storage {key!r} holds {count} elements; the pickle says {storage.numel}")
        if pos + 8 + storage.nbytes > size:
            raise CorruptCheckpoint(f"{path}: storage {key!r} extends past the end of the file (truncated?)")
        storage.location = (str(path), pos + 8, storage.nbytes)
        pos += 8 + storage.nbytes
    missing = [k for k, s in storages.by_key.items() if s.location is None]
    if missing:
        raise CorruptCheckpoint(f"{path}: storage {missing[0]!r} is named but not stored")


# --- legacy tar -------------------------------------------------------------------------------

class _Slice(io.RawIOBase):
    """A file region [begin, end) read as a file of its own."""

    def __init__(self, path: Path, begin: int, end: int):
        self.f = open(path, "rb")
        self.begin, self.end = begin, end
        self.f.seek(begin)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), max(self.end - self.f.tell(), 0))
        return self.f.readinto(memoryview(b)[:n]) if n else 0

    def tell(self) -> int:
        return self.f.tell() - self.begin

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        origin = {io.SEEK_SET: self.begin, io.SEEK_CUR: self.f.tell(), io.SEEK_END: self.end}[whence]
        return self.f.seek(max(origin + pos, self.begin)) - self.begin

    def close(self) -> None:
        self.f.close()
        super().close()


def read_tar(path: Path, checked: bool = False) -> Checkpoint:  # its header pickles are not in the scan
    members = legacy_tar_members(path)
    named: list[str] = []
    storages = _tar_storages(path, members["storages"], named)
    tensors = _tar_tensors(path, members["tensors"], storages, named)

    def persistent_load(pid):
        if isinstance(pid, tuple) and pid:
            return pid[0]
        if isinstance(pid, (str, int)) and str(pid).lstrip("-").isdigit() and int(pid) in tensors:
            return tensors[int(pid)]
        raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.60}")

    with _open_member(path, members["pickle"]) as f:
        obj = unpickle(f, persistent_load, named, members["pickle"].size)
    return Checkpoint(obj, "pytorch-tar", named)


def _open_member(path: Path, info: tarfile.TarInfo):
    return io.BufferedReader(_Slice(path, info.offset_data, info.offset_data + info.size))


def _tar_headers(f, path: Path, info: tarfile.TarInfo, what: str, named: list[str], valid):
    """The pickled count, then each pickled 3-tuple header (checked by ``valid``) of a tar member."""
    count = unpickle(f, None, named, info.size)
    if not _count(count) or count > 1 << 24:
        raise CorruptCheckpoint(f"{path}: legacy tar {what} count {count!r:.20} is invalid")
    for _ in range(count):
        header = unpickle(f, None, named, info.size)
        if not (isinstance(header, tuple) and len(header) == 3 and valid(header)):
            raise CorruptCheckpoint(f"{path}: legacy tar {what} header {header!r:.80} is invalid")
        yield header


def _tar_storages(path: Path, info: tarfile.TarInfo, named: list[str]) -> dict:
    found: dict = {}
    with _open_member(path, info) as f:
        for key, _location, stype in _tar_headers(f, path, info, "storage", named,
                                                  lambda h: isinstance(h[2], StorageType)):
            raw = f.read(8)
            numel = struct.unpack("<q", raw)[0] if len(raw) == 8 else -1
            storage = Storage(str(key), stype.dtype, max(numel, 0))
            begin = info.offset_data + f.tell()
            if numel < 0 or f.tell() + storage.nbytes > info.size:
                raise CorruptCheckpoint(f"{path}: legacy tar storage {key!r} extends past its member")
            storage.location = (str(path), begin, storage.nbytes)
            f.seek(storage.nbytes, io.SEEK_CUR)
            found[key] = storage
        views = unpickle(f, None, named, info.size)
    for view in views if isinstance(views, list) else []:
        target, root, offset, numel = view if isinstance(view, tuple) and len(view) == 4 else (None,) * 4
        if root not in found or not _count(offset) or not _count(numel) or offset + numel > found[root].numel:
            raise CorruptCheckpoint(f"{path}: legacy tar storage view {view!r:.80} is invalid")
        found[target] = Storage(str(target), found[root].dtype, numel, element_offset=offset, root=found[root])
    return found


def _tar_tensors(path: Path, info: tarfile.TarInfo, storages: dict, named: list[str]) -> dict:
    tensors: dict = {}
    with _open_member(path, info) as f:
        for key, storage_id, _type in _tar_headers(f, path, info, "tensor", named, lambda h: h[1] in storages):
            ndim = struct.unpack("<i", _read(f, 4, path))[0]
            if not 0 <= ndim <= 64:
                raise CorruptCheckpoint(f"{path}: legacy tar tensor {key!r} has {ndim} dimensions")
            _read(f, 4, path)
            shape = struct.unpack(f"<{ndim}q", _read(f, 8 * ndim, path))
            stride = struct.unpack(f"<{ndim}q", _read(f, 8 * ndim, path))
            (offset,) = struct.unpack("<q", _read(f, 8, path))
            storage = storages[storage_id]
            t = StoredTensor(storage, offset, shape, stride, storage.dtype)
            try:
                check_view(t)
            except pickle.UnpicklingError as e:
                raise CorruptCheckpoint(f"{path}: legacy tar tensor {key!r}: {e}") from None
            tensors[key] = t
    return tensors


def _read(f, n: int, path: Path) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise CorruptCheckpoint(f"{path}: legacy tar member ends early (truncated?)")
    return data
