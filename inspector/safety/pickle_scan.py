"""Static scan of pickle opcodes: which globals would unpickling import? Nothing is executed.

Unpickling runs code only through the callables a pickle imports (``GLOBAL``,
``STACK_GLOBAL``, ``INST``, extension codes). :func:`scan_file` walks the opcodes with
``pickletools.genops`` over bounded reads, collects those imports and classifies each
as *dangerous* (process, file, network and interpreter access), *safe* (what torch's
weights-only loader builds tensors and containers with, plus numpy's array
reconstruction), or *unknown* (anything else: a user's own classes, for instance).

A legacy PyTorch file is several pickles in a row (magic number, protocol, system
info, the object, storage keys) followed by raw storage bytes; a zip checkpoint holds
its pickles as ``*.pkl`` members.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickletools
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CorruptCheckpoint, InspectorError, UnsafeCheckpoint
from .zipcheck import check_zip, read_member

MAX_PKL_MEMBER = 1 << 30  # bytes of one pickle member read from a zip
MAX_OPS = 20_000_000  # opcodes scanned per pickle
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
    r"|torch\.per_(tensor|channel)_\w+"
    r"|torch\._utils\._rebuild_\w+"
    r"|numpy\.(_?core\.multiarray\.(_reconstruct|scalar)|dtypes\.\w+DType)"
)


def classify(dotted: str) -> str:
    """``dangerous``, ``safe`` or ``unknown`` for a global's full dotted name (``posix.system``)."""
    parts = dotted.split(".")
    if dotted == COMPUTED:
        return "dangerous"
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
    """Globals a pickle (or several) would import, in first-seen order, and what stopped the scan."""

    source: str
    globals: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # pickles that could not be parsed

    def add(self, dotted: str) -> None:
        if dotted not in self.globals:
            self.globals.append(dotted)

    def of_class(self, cls: str) -> list[str]:
        return [g for g in self.globals if classify(g) == cls]

    @property
    def unsafe(self) -> list[str]:
        """Dangerous globals first, then unknown ones."""
        return self.of_class("dangerous") + self.of_class("unknown")

    def describe(self, limit: int = 8) -> str:
        """``dangerous globals posix.system; unknown globals mylib.Net``."""
        parts = []
        for cls in ("dangerous", "unknown"):
            names = self.of_class(cls)
            if names:
                more = f" and {len(names) - limit} more" if len(names) > limit else ""
                parts.append(f"{cls} globals {', '.join(names[:limit])}{more}")
        return "; ".join(parts)


class _Bounded:
    """A read-only view of ``f`` up to byte ``end``: reads never ask the OS for more than is there."""

    def __init__(self, f, end: int):
        self.f, self.end = f, end

    def tell(self) -> int:
        return self.f.tell()

    def read(self, n: int = -1) -> bytes:
        left = max(self.end - self.f.tell(), 0)
        return self.f.read(left if n is None or n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self.f.readline(min(max(self.end - self.f.tell(), 0), MAX_LINE))


_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
                         "SHORT_BINSTRING"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})
_NEUTRAL_OPS = frozenset({"PROTO", "FRAME"})
_OTHER = object()  # any stack value that is not a known string


def scan_one(f, result: ScanResult) -> list:
    """Scan one pickle from ``f`` (up to its STOP) into ``result``; returns the values it pushed last."""
    recent: list = []  # the most recent stack values, strings where known
    memo: dict = {}
    proto = 0
    for count, (op, arg, _pos) in enumerate(pickletools.genops(f)):
        if count >= MAX_OPS:
            raise ValueError(f"more than {MAX_OPS} opcodes")
        name = op.name
        if name in _STRING_OPS:
            recent.append(arg)
        elif name in _GET_OPS:
            recent.append(memo.get(arg, _OTHER))
        elif name in _PUT_OPS:
            memo[len(memo) if name == "MEMOIZE" else arg] = recent[-1] if recent else _OTHER
        elif name == "PROTO":
            proto = arg
        elif name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            result.add(_python3_name(module, attr) if proto < 3 else f"{module}.{attr}")
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


def _python3_name(module: str, attr: str) -> str:
    """The name Python 3 imports for a protocol 0-2 global (``__builtin__.exec`` -> ``builtins.exec``)."""
    if (module, attr) in _compat_pickle.NAME_MAPPING:
        module, attr = _compat_pickle.NAME_MAPPING[(module, attr)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{attr}"


def scan_sequence(f, end: int, result: ScanResult, where: str) -> None:
    """A plain pickle file, or a legacy PyTorch file's run of pickles (only after its magic number)."""
    reader = _Bounded(f, end)
    for i in range(LEGACY_PICKLES):
        if i and reader.tell() >= end:
            return
        try:
            pushed = scan_one(reader, result)
        except Exception as e:  # malformed or truncated pickle: pickletools raises ValueError and friends
            member = f" of {where}" if where else ""
            result.problems.append(f"pickle {i + 1}{member} is malformed ({str(e)[:120] or type(e).__name__})")
            return
        if i == 0 and LEGACY_MAGIC not in pushed:
            return  # torch stops after a first pickle that is not its magic number


def scan_file(path, zipped: bool | None = None) -> ScanResult:
    """The globals every pickle in a PyTorch checkpoint (zip or legacy) or pickle file would import.

    ``zipped`` says whether the file is read as a zip (default: it starts with a zip local header and
    has a central directory, as torch.load decides).
    """
    path = Path(path)
    result = ScanResult(str(path))
    if zipped is None:
        with open(path, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04" and zipfile.is_zipfile(path)
    if zipped:
        with check_zip(path) as zf:
            for name in [n for n in zf.namelist() if n.endswith(".pkl")]:
                data = read_member(zf, name, MAX_PKL_MEMBER, path)
                scan_sequence(io.BytesIO(data), len(data), result, name)
        return result
    with open(path, "rb") as f:
        scan_sequence(f, path.stat().st_size, result, "")
    return result


class UnsafePickle(UnsafeCheckpoint):
    """A pickle that torch's weights-only loader refused; ``scan`` says what it would import."""

    def __init__(self, message: str, scan: ScanResult):
        super().__init__(message)
        self.scan = scan


ADVICE = "Nothing was executed. Use a safetensors export, or --unsafe-load only for a file you made yourself"


def refusal(path, torch_message: str, zipped: bool | None = None) -> InspectorError:
    """The error for a pickle torch refused to load with weights_only=True, from a static scan of it."""
    try:
        scan = scan_file(path, zipped)
    except OSError as e:
        return CorruptCheckpoint(f"{path}: cannot read ({e.strerror or e})")
    if scan.unsafe:
        return UnsafePickle(f"{path}: refused: the pickle imports {scan.describe()}. {ADVICE}", scan)
    if scan.problems:
        return CorruptCheckpoint(f"{path}: not a readable PyTorch checkpoint ({scan.problems[0]})")
    return UnsafePickle(
        f"{path}: refused: torch's weights-only loader does not accept this pickle ({torch_reason(torch_message)}), "
        f"although every global it imports is harmless by winspect's list. {ADVICE}",
        scan,
    )


def torch_reason(message: str) -> str:
    """The informative line of torch's long weights-only error message."""
    found = re.search(r"(Unsupported[^\n]*|Trying to [^\n]*|Can only [^\n]*)", message)
    line = found.group(1) if found else (message.strip().splitlines() or ["unknown reason"])[0]
    return line.split(". ")[0].strip().rstrip(".")[:200]
