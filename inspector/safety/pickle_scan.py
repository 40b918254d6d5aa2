"""Static scan of pickle opcodes: which globals would unpickling import? Nothing is executed.

Unpickling runs code only through the callables a pickle imports (``GLOBAL``,
``STACK_GLOBAL``, ``INST``, extension codes). :func:`scan_file` walks the opcodes with
``pickletools.genops`` over bounded reads, collects those imports and classifies each
as *dangerous* (process, file, network and interpreter access), *safe* (what winspect's
restricted reader rebuilds tensors, containers and NumPy arrays with), or *unknown*
(anything else: a user's own classes, for instance).

Every pickle of a file is scanned: a legacy PyTorch file is several pickles in a row
(magic number, protocol, system info, the object, storage keys) followed by raw storage
bytes; a zip checkpoint holds its pickles as ``*.pkl`` members (each one, duplicates too);
a legacy tar checkpoint as its ``sys_info`` and ``pickle`` members. The scan is bounded in
pickle members, opcodes, bytes and time; a file it could not finish gets a ``scan_incomplete``
finding, never a clean bill.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CorruptCheckpoint, UnsafeCheckpoint
from ..finding import Finding, duplicate_member_finding, scan_incomplete_finding, unsafe_finding
from .restricted_unpickler import python3_name
from .zipcheck import check_zip

MAX_PKL_MEMBER = 1 << 30  # bytes of one pickle member
MAX_OPS = 10_000_000  # opcodes scanned in all the pickles of one file
MAX_PICKLES = 1_000  # pickle members of one archive
MAX_SECONDS = 30.0  # wall time of one file's scan
MAX_LINE = 1 << 20  # text-protocol arguments (GLOBAL, UNICODE, ...) longer than this are malformed
LEGACY_PICKLES = 5  # magic number, protocol, sys info, object, storage keys
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

COMPUTED = "<import computed at load time>"

# Modules whose import in a checkpoint can only mean running code, touching files, processes or the network.
DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "sys", "runpy", "socket", "shutil", "pty",
    "importlib", "pickle", "_pickle", "cPickle", "dill", "marshal", "types", "code", "codeop", "ctypes",
    "webbrowser", "commands", "multiprocessing", "threading", "_thread", "asyncio", "signal", "http",
    "urllib", "urllib2", "requests", "httplib", "ftplib", "smtplib", "telnetlib", "tempfile", "glob",
    "pathlib", "io", "_io", "platform", "operator", "_operator", "inspect", "gc", "sysconfig", "pip",
    "setuptools", "distutils", "bdb", "pdb", "timeit", "trace", "cProfile", "profile", "site", "zipimport",
    "pkgutil", "linecache", "fileinput", "sqlite3", "tarfile", "zipfile", "venv", "ensurepip", "imp",
    "nturl2path",
})
# Attribute names that reach code execution when they appear anywhere in a dotted global.
DANGEROUS_PARTS = frozenset({
    "eval", "exec", "compile", "system", "popen", "spawn", "execv", "execve", "__import__", "getattr",
    "setattr", "delattr", "globals", "locals", "vars", "__builtins__", "__globals__", "__subclasses__",
    "__code__", "__reduce__", "__reduce_ex__", "__getattribute__", "__class__", "__bases__", "__mro__",
    "load", "loads", "open", "breakpoint", "input", "os", "posix", "nt", "sys", "subprocess", "builtins",
    "importlib", "runpy", "socket", "shutil", "pty",
})
BUILTINS = ("builtins", "__builtin__", "__builtins__")
SAFE_BUILTINS = frozenset({
    "set", "frozenset", "bytearray", "bytes", "complex", "slice", "range", "dict", "list", "tuple", "int",
    "float", "bool", "str", "object",
})
SAFE_GLOBALS = frozenset({
    "collections.OrderedDict", "collections.Counter", "collections.defaultdict", "collections.deque",
    "torch.nn.parameter.Parameter", "torch.serialization._get_layout", "torch.Size", "torch.Tensor",
    "torch.device", "torch.storage.TypedStorage", "torch.storage.UntypedStorage", "_codecs.encode",
    "torch._tensor._rebuild_from_type_v2", "copyreg._reconstructor", "torch.strided", "torch.sparse_coo",
    "torch.sparse_csr", "torch.contiguous_format", "torch.channels_last", "torch.preserve_format",
    "numpy.ndarray", "numpy.dtype",
})
SAFE_PATTERNS = re.compile(
    r"torch(\.cuda)?(\.sparse)?\.[A-Z][A-Za-z0-9]*(Storage|Tensor)"
    r"|torch\.(u?int\d+|float\d+\w*|bfloat16|complex\d+|bcomplex32|bool|bits\w+|q(u)?int\w+)"
    r"|torch\.(chalf|float|double|half|long|int|short|cfloat|cdouble)"
    r"|torch\.(sparse_(coo|csr|csc|bsr|bsc)|_mkldnn|strided|(contiguous|preserve)_format|channels_last(_3d)?)"
    r"|torch\.per_(tensor|channel)_\w+"
    r"|torch\._utils\._rebuild_\w+"
    r"|numpy\.(_?core\.multiarray\.(_reconstruct|scalar)|_?core\.numeric\._frombuffer|dtypes\.\w+DType)"
    r"|torch\.jit\._pickle\.(build_\w+list|restore_type_tag)"
    r"|torch\._tensor\._rebuild_from_type(_v2)?"
)


def classify(dotted: str) -> str:
    """``dangerous``, ``safe`` or ``unknown`` for a global's full dotted name (``posix.system``)."""
    parts = dotted.split(".")
    if dotted == COMPUTED:
        return "dangerous"
    if dotted in SAFE_GLOBALS or SAFE_PATTERNS.fullmatch(dotted):
        return "safe"
    if parts[0] in BUILTINS:
        return "safe" if len(parts) == 2 and parts[1] in SAFE_BUILTINS else "dangerous"
    if parts[0] in DANGEROUS_MODULES or any(p in DANGEROUS_PARTS for p in parts[1:]):
        return "dangerous"
    if dotted in SAFE_GLOBALS or SAFE_PATTERNS.fullmatch(dotted):
        return "safe"
    if dotted.startswith(("torch.load", "torch.hub", "torch.jit", "torch.package", "torch.utils.cpp_extension")):
        return "dangerous"
    return "unknown"


@dataclass
class ScanResult:
    """Globals a file's pickles would import, in first-seen order, and what kept the scan from finishing."""

    source: str
    globals: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # pickles that could not be parsed
    incomplete: list[str] = field(default_factory=list)  # bounds hit: what was not scanned
    duplicates: list[str] = field(default_factory=list)  # archive members named twice

    def add(self, dotted: str) -> None:
        if dotted not in self.globals:
            self.globals.append(dotted)

    def of_class(self, cls: str) -> list[str]:
        return [g for g in self.globals if classify(g) == cls]

    @property
    def unsafe(self) -> list[str]:
        """Dangerous globals first, then unknown ones."""
        return self.of_class("dangerous") + self.of_class("unknown")

    @property
    def alarming(self) -> bool:
        """Something a gate must see even in a file that cannot be read: dangerous globals, a duplicate
        member, a scan stopped by its bounds. (A malformed pickle alone is just a broken file.)"""
        return bool(self.of_class("dangerous") or self.duplicates or self.incomplete)

    def describe(self, limit: int = 8) -> str:
        """``dangerous globals posix.system; unknown globals mylib.Net``."""
        parts = []
        for cls in ("dangerous", "unknown"):
            names = self.of_class(cls)
            if names:
                more = f" and {len(names) - limit} more" if len(names) > limit else ""
                parts.append(f"{cls} globals {', '.join(names[:limit])}{more}")
        return "; ".join(parts)

    def findings(self) -> list[Finding]:
        """``unsafe`` findings (dangerous globals, duplicate members) and ``scan_incomplete`` ones."""
        out = [unsafe_finding(g, "dangerous") for g in self.of_class("dangerous")]
        out += [duplicate_member_finding(n) for n in self.duplicates]
        out += [scan_incomplete_finding(self.source, why) for why in self.incomplete + self.problems]
        return out


class Budget:
    """What one file's scan may still spend: opcodes, pickle members and time."""

    def __init__(self):
        self.ops, self.pickles, self.seconds = MAX_OPS, MAX_PICKLES, MAX_SECONDS
        self.deadline = time.monotonic() + self.seconds

    def spend_op(self) -> None:
        self.ops -= 1
        if self.ops < 0:
            raise ScanLimit(f"more than {MAX_OPS} pickle opcodes")
        if self.ops % 4096 == 0 and time.monotonic() > self.deadline:
            raise ScanLimit(f"scanning took longer than {self.seconds:g} s")


class ScanLimit(Exception):
    """A bound of :class:`Budget` was reached."""


class _Bounded:
    """A read-only view of ``f`` up to byte ``end``: reads never ask for more than is there."""

    def __init__(self, f, end: int):
        self.f, self.end, self.pos = f, end, 0

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        left = max(self.end - self.pos, 0)
        data = self.f.read(left if n is None or n < 0 else min(n, left))
        self.pos += len(data)
        return data

    def readline(self) -> bytes:
        data = self.f.readline(min(max(self.end - self.pos, 0), MAX_LINE))
        self.pos += len(data)
        return data


_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
                         "SHORT_BINSTRING"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})
_NEUTRAL_OPS = frozenset({"PROTO", "FRAME"})
_OTHER = object()  # any stack value that is not a known string


def scan_one(f, result: ScanResult, budget: Budget | None = None) -> list:
    """Scan one pickle from ``f`` (up to its STOP) into ``result``; returns the values it pushed last."""
    budget = budget or Budget()
    recent: list = []  # the most recent stack values, strings where known
    memo: dict = {}
    proto = 0
    for op, arg, _pos in pickletools.genops(f):
        budget.spend_op()
        name = op.name
        _check_sizes(f, name, arg, memo)
        if name in _STRING_OPS:
            recent.append(arg)
        elif name in _GET_OPS:
            recent.append(memo.get(arg, _OTHER))
        elif name in _PUT_OPS:
            if len(memo) < 1 << 20 or name != "MEMOIZE":
                memo[len(memo) if name == "MEMOIZE" else arg] = recent[-1] if recent else _OTHER
        elif name == "PROTO":
            proto = arg
        elif name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            result.add(python3_name(module, attr) if proto < 3 else f"{module}.{attr}")
            recent.append(_OTHER)
        elif name == "STACK_GLOBAL":
            module, attr = (recent[-2:] if len(recent) >= 2 else [_OTHER, _OTHER])
            if isinstance(module, str) and isinstance(attr, str):
                result.add(f"{module}.{attr}")
            else:
                result.add(COMPUTED)
            recent.append(_OTHER)
        elif name in ("EXT1", "EXT2", "EXT4"):
            result.add(f"copyreg.extension_{arg}")
            recent.append(_OTHER)
        elif name not in _NEUTRAL_OPS:
            recent.append(arg if name in ("LONG1", "LONG4") else _OTHER)
        del recent[:-8]
    return recent


MAX_MEMO_INDEX = 1 << 24


def _check_sizes(f, name: str, arg, memo: dict) -> None:
    """Refuse what would make a real unpickler allocate without bound: a frame longer than the bytes
    left, a memo index far beyond any real pickle's."""
    if name == "FRAME" and isinstance(f, _Bounded) and arg > f.end - f.pos:
        raise ValueError(f"frame of {arg} bytes with {f.end - f.pos} left")
    if name in _PUT_OPS and name != "MEMOIZE" and isinstance(arg, int) and arg > MAX_MEMO_INDEX:
        raise ValueError(f"memo index {arg} out of range")


def check_pickle(f, end: int) -> None:
    """Raise pickle.UnpicklingError unless the pickle at ``f``'s position (ending by byte ``end``) parses
    within the bounds; ``f`` is left where it was. Run before a real unpickler reads the same bytes."""
    start = f.tell()
    try:
        scan_one(_Bounded(f, end - start), ScanResult(""), Budget())
    except ScanLimit as e:
        raise pickle.UnpicklingError(f"pickle too large to read ({e})") from None
    except Exception as e:  # malformed: pickletools raises ValueError and friends
        raise pickle.UnpicklingError(f"malformed pickle ({str(e)[:160] or type(e).__name__})") from None
    finally:
        f.seek(start)


def scan_sequence(f, end: int, result: ScanResult, where: str, budget: Budget | None = None,
                  count: int = LEGACY_PICKLES) -> None:
    """A plain pickle file, or a legacy PyTorch file's run of pickles (only after its magic number)."""
    budget = budget or Budget()
    reader = _Bounded(f, end)
    for i in range(count):
        if i and reader.tell() >= end:
            return
        try:
            pushed = scan_one(reader, result, budget)
        except ScanLimit:
            raise
        except Exception as e:  # malformed or truncated pickle: pickletools raises ValueError and friends
            member = f" of {where}" if where else ""
            result.problems.append(f"pickle {i + 1}{member} is malformed ({str(e)[:120] or type(e).__name__})")
            return
        if i == 0 and count == LEGACY_PICKLES and LEGACY_MAGIC not in pushed:
            return  # torch stops after a first pickle that is not its magic number


def is_zip(path) -> bool:
    """Zip magic at byte 0 and a central directory (found from the end, whatever the member count)."""
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return False
    return zipfile.is_zipfile(path)


TAR_MEMBERS = ("sys_info", "pickle", "storages", "tensors")
MAX_TAR_MEMBERS = 64


def is_legacy_tar(path) -> bool:
    """A tar archive (checksummed header at byte 0) whose first member is one of a legacy checkpoint's."""
    try:
        with open(path, "rb") as f:
            block = f.read(512)
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except (tarfile.TarError, OSError, ValueError):
        return False
    return info.name in TAR_MEMBERS


def legacy_tar_members(path) -> dict[str, tarfile.TarInfo]:
    """The four members of a legacy tar checkpoint (regular files, uncompressed, inside the file), or
    CorruptCheckpoint. A file may end right after its last member's data (no end-of-archive blocks)."""
    found: dict[str, tarfile.TarInfo] = {}
    size = Path(path).stat().st_size
    try:
        with tarfile.open(path, "r:") as tar:
            for i in range(MAX_TAR_MEMBERS + 1):
                info = _next_member(tar, complete=len(found) == len(TAR_MEMBERS))
                if info is None:
                    break
                if i == MAX_TAR_MEMBERS or info.offset_data + info.size > size:
                    raise CorruptCheckpoint(f"{path}: legacy tar member {info.name!r} is past the end of the file "
                                            f"or beyond the {MAX_TAR_MEMBERS}th")
                if info.name in TAR_MEMBERS and info.isreg():
                    if info.name in found:
                        raise CorruptCheckpoint(f"{path}: legacy tar checkpoint names {info.name!r} twice")
                    found[info.name] = info
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        raise CorruptCheckpoint(f"{path}: not a readable legacy tar checkpoint ({e})") from None
    missing = [m for m in TAR_MEMBERS if m not in found]
    if missing:
        raise CorruptCheckpoint(f"{path}: legacy tar checkpoint without member {missing[0]!r}")
    return found


def _next_member(tar: tarfile.TarFile, complete: bool) -> tarfile.TarInfo | None:
    try:
        return tar.next()
    except tarfile.ReadError:
        if complete:  # the four members are there; what follows them is not needed
            return None
        raise


@dataclass
class ZipLayout:
    root: str  # "archive/"
    torchscript: bool


def pickle_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    return [i for i in zf.infolist() if i.filename.endswith(".pkl")]


def torch_zip_layout(zf: zipfile.ZipFile, path) -> ZipLayout:
    """The archive root of a PyTorch zip; CorruptCheckpoint for no ``data.pkl``, two of them, several
    roots or members outside the root."""
    names = [i.filename for i in zf.infolist()]
    data = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if not data:
        raise CorruptCheckpoint(f"{path}: zip archive without a <root>/data.pkl member (not a PyTorch checkpoint)")
    if len(data) > 1:
        what = "members named " + repr(data[0]) if len(set(data)) == 1 else f"archive roots {sorted(set(data))}"
        raise CorruptCheckpoint(f"{path}: zip archive with {len(data)} {what} (an ambiguous checkpoint)")
    root = data[0][: -len("data.pkl")]
    outside = next((n for n in names if not n.startswith(root)), None)
    if outside is not None:
        raise CorruptCheckpoint(f"{path}: zip member {outside!r} lies outside the archive root {root!r}")
    return ZipLayout(root, torchscript=root + "constants.pkl" in names)


def is_torch_zip(path) -> bool:
    """A zip checkpoint as torch.load sees it: zip magic at byte 0 and a ``<root>/data.pkl`` member."""
    try:
        if not is_zip(path):
            return False
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/data.pkl") and n.count("/") == 1 for n in z.namelist())
    except Exception:  # a sniff never raises: any unreadable zip is simply not one
        return False


def scan_file(path, zipped: bool | None = None) -> ScanResult:
    """The globals every pickle in a PyTorch checkpoint (zip, legacy, legacy tar) or pickle file would
    import, within the bounds of :class:`Budget`; what was left unscanned is in ``incomplete``."""
    path = Path(path)
    result = ScanResult(str(path))
    budget = Budget()
    zipped = is_zip(path) if zipped is None else zipped
    try:
        if zipped:
            _scan_zip(path, result, budget)
        elif is_legacy_tar(path):
            _scan_tar(path, result, budget)
        else:
            with open(path, "rb") as f:
                scan_sequence(f, path.stat().st_size, result, "", budget)
    except ScanLimit as e:
        result.incomplete.append(f"scan stopped: {e}")
    return result


def _scan_zip(path: Path, result: ScanResult, budget: Budget) -> None:
    with check_zip(path) as zf:
        names = [i.filename for i in zf.infolist()]
        seen: set[str] = set()
        result.duplicates = sorted({n for n in names if n in seen or seen.add(n)})
        members = pickle_members(zf)
        for i, info in enumerate(members):
            if i >= budget.pickles:
                result.incomplete.append(f"{len(members) - i} of {len(members)} pickle members not scanned "
                                         f"(more than {budget.pickles})")
                return
            if info.file_size > MAX_PKL_MEMBER:
                result.incomplete.append(f"pickle member {info.filename!r} of {info.file_size} bytes not scanned")
                continue
            try:
                with zf.open(info) as f:
                    scan_sequence(f, info.file_size, result, info.filename, budget, count=1)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as e:
                result.problems.append(f"pickle member {info.filename!r} is unreadable ({str(e)[:120]})")


def _scan_tar(path: Path, result: ScanResult, budget: Budget) -> None:
    members = legacy_tar_members(path)
    with open(path, "rb") as f:
        for name in ("sys_info", "pickle", "storages", "tensors"):
            info = members[name]
            f.seek(info.offset_data)
            scan_sequence(f, info.size, result, name, budget, count=1)


class UnsafePickle(UnsafeCheckpoint):
    """A checkpoint that could not be read, whose scan found something a gate must see (``scan``)."""

    def __init__(self, message: str, scan: ScanResult):
        super().__init__(message)
        self.scan = scan


def unreadable_and_alarming(path, error: Exception, scan: ScanResult) -> UnsafePickle:
    """The error for a file that could not be read although its scan found something to report."""
    found = scan.describe() or "; ".join(f.detail for f in scan.findings()[:3])
    return UnsafePickle(f"{str(error).rstrip('.')}; the scan found: {found}. Nothing was executed", scan)
