"""PyTorch checkpoints (``.pt .pth .bin .ckpt .tar``) read without torch and without running anything.

Every container torch writes (:mod:`.torch_archive`: zip, legacy, legacy tar, TorchScript) is read
by winspect's restricted unpickler: nothing named in the file is imported or called; unknown globals
become inert placeholders. Every pickle in the file is first scanned statically
(:mod:`inspector.safety.pickle_scan`): dangerous globals, duplicate members and a scan that could
not finish become findings (``unsafe``, ``scan_incomplete``) -- the tensors are still inspected,
since they are only data. The tensors are found in a state dict (bare, or nested in a training
checkpoint) or, for a pickled model object or a TorchScript archive, anywhere in the object graph,
named by attribute path as ``state_dict()`` names them. Their values are read from memory-mapped
storages through each tensor's own offset and strides, chunk by chunk (:mod:`.strided`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import CorruptCheckpoint, InspectorError, UnsupportedSource
from ..names import strip_prefixes
from ..kinds import classify
from ..records import TensorRecord, array_range_reader, array_reader
from ..safety.pickle_scan import ScanResult, is_legacy_tar, is_torch_zip, scan_file, unreadable_and_alarming
from ..safety.restricted_unpickler import Placeholder, Unreadable, unwrap
from . import Loader, LoadOptions, OpenedSource, register
from .shards import is_json_index, is_json_index_head, shards_of_index
from .strided import ViewRange
from .torch_archive import Checkpoint, read_legacy, read_tar, read_zip
from .torch_objects import StoredTensor

# Keys under which training checkpoints commonly nest the model's state dict, by preference.
NESTED_KEYS = (
    "state_dict",
    "model_state_dict",
    "model",
    "module",
    "model_state",
    "net",
    "network",
    "ema",
    "model_ema",
    "ema_state_dict",
    "state_dict_ema",
    "params",
    "weights",
)
MODULE_SLOTS = ("_parameters", "_buffers", "_modules")  # nn.Module attributes that state_dict() names see through
MAX_NODES = 2_000_000
MAX_DEPTH = 200


def is_tensor(v) -> bool:
    """A stored tensor or a numeric NumPy array (rebuilt by the unpickler from its raw bytes)."""
    v = unwrap(v)
    return isinstance(v, StoredTensor) or (isinstance(v, np.ndarray) and v.dtype.kind in "biuf")


def read_checkpoint(path: Path) -> tuple[Checkpoint, ScanResult]:
    """The unpickled checkpoint and the scan of every pickle in it. A file that cannot be read raises
    CorruptCheckpoint, or UnsafePickle when its scan found something a gate must see."""
    scan = scan_file(path)
    reader = read_zip if is_torch_zip(path) else read_tar if is_legacy_tar(path) else read_legacy
    try:
        ckpt = reader(path, checked=not (scan.incomplete or scan.problems))
    except Exception as e:  # hostile bytes raise many types inside the unpickler; none may escape as a crash
        error = e if isinstance(e, InspectorError) else _unreadable(path, e)
        if scan.alarming:
            raise unreadable_and_alarming(path, error, scan) from None
        raise error from None
    for g in ckpt.named:
        scan.add(g)
    return ckpt, scan


def _unreadable(path: Path, e: Exception) -> CorruptCheckpoint:
    if isinstance(e, EOFError):
        why = "the file ends early; truncated?"
    elif isinstance(e, (RecursionError, MemoryError)):
        why = f"{type(e).__name__}: the pickle is nested too deeply or too large"
    else:
        text = str(e).strip()
        why = text.splitlines()[0][:300] if text else type(e).__name__
    return CorruptCheckpoint(f"{path}: not a readable PyTorch checkpoint ({why})")


# --- where the tensors are ---------------------------------------------------------------------

def find_state_dict(obj, source: str) -> tuple[dict, str | None]:
    """The tensors of a checkpoint by name, and where they were found: None for a bare state dict, the
    nested key path, or ``<Class>`` for tensors found in a pickled object (model or TorchScript module)."""
    found = _search(obj, [], 0) if isinstance(obj, dict) else None
    if found:
        sd, path = found
        return sd, ".".join(path) if path else None
    holder = obj
    if isinstance(obj, dict):
        holder = next((obj[k] for k in NESTED_KEYS if isinstance(obj.get(k), Placeholder)), None)
    tensors = tensors_in_graph(holder) if holder is not None else {}
    if not tensors:
        keys = list(obj.keys())[:12] if isinstance(obj, dict) else type(obj).__name__
        raise UnsupportedSource(f"{source}: no state dict of tensors found in the checkpoint (top level: {keys})")
    return tensors, f"<{getattr(holder, 'origin', type(holder).__name__)}>"


def _tensor_dict(d) -> bool:
    return isinstance(d, dict) and len(d) > 0 and any(is_tensor(v) for v in d.values())


def _search(d, path: list[str], depth: int):
    if not isinstance(d, dict) or depth > 3:
        return None
    if _tensor_dict(d) and sum(is_tensor(v) or isinstance(unwrap(v), Unreadable) for v in d.values()) * 2 >= len(d):
        return d, path
    for key in NESTED_KEYS:
        if key in d:
            found = _search(d[key], path + [key], depth + 1)
            if found:
                return found
    candidates = [k for k, v in d.items() if _tensor_dict(v) and "optim" not in str(k)]
    if len(candidates) == 1:
        return _search(d[candidates[0]], path + [str(candidates[0])], depth + 1)
    return None


def tensors_in_graph(root) -> dict:
    """Every tensor reachable from ``root`` by attribute path (``features.0.weight``), first path wins.

    Iterative, each object visited once, bounded in depth and objects: a self-referencing or deeply
    nested pickle ends the walk, never the process."""
    out: dict = {}
    seen: set[int] = set()
    stack = [("", root, 0)]
    while stack and len(seen) < MAX_NODES:
        path, value, depth = stack.pop()
        value = unwrap(value)
        if is_tensor(value) or isinstance(value, Unreadable):
            out.setdefault(path, value)
            continue
        if id(value) in seen or depth > MAX_DEPTH:
            continue
        seen.add(id(value))
        children = _children(value)
        for name, child in reversed(children):
            full = f"{path}.{name}" if path and name else path or name
            stack.append((full, child, depth + 1))
    return out


def _children(value) -> list[tuple[str, object]]:
    if isinstance(value, Placeholder):
        state = value.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], (dict, type(None))):
            state = {**(state[0] or {}), **(state[1] if isinstance(state[1], dict) else {})}
        if isinstance(state, dict):
            return [("" if k in MODULE_SLOTS else str(k), v) for k, v in state.items()]
        return []
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items() if isinstance(k, (str, int))]
    if isinstance(value, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(value)]
    return []


# --- records ------------------------------------------------------------------------------------

def view_range(t: StoredTensor, big_endian: bool) -> ViewRange:
    """The range reader of a stored tensor (quantization parameters read up front)."""
    base, byte_offset = t.storage.base()
    path, begin, _length = base.location
    quant = t.quant
    if quant is not None and quant[0] == "channel":
        quant = ("channel", read_values(quant[1], big_endian).astype(np.float64),
                 read_values(quant[2], big_endian).astype(np.int64), quant[3])
    return ViewRange((path, begin + byte_offset, t.storage.nbytes), t.dtype.np_dtype, t.offset, t.shape, t.stride,
                     quant, big_endian)


def read_values(t: StoredTensor, big_endian: bool) -> np.ndarray:
    """All the values of a (small) stored tensor."""
    parts = list(view_range(t, big_endian)(0, t.numel, max(t.numel, 1)))
    return np.concatenate(parts) if parts else np.empty(0, t.dtype.np_dtype)


def _value_dtype(v) -> tuple[np.dtype, str | None]:
    """(element type of the values read, the stored type's name when they differ: quantized tensors)."""
    if isinstance(v, np.ndarray):
        return v.dtype.newbyteorder("="), None
    if v.quant is not None:
        return np.dtype(np.float32), v.dtype.name
    return v.dtype.np_dtype, None


class StateDictSource(OpenedSource):
    """Records over named tensors (stored tensors or NumPy arrays); kinds from module types when known."""

    def __init__(self, source: str, fmt: str, state_dict: dict, module_info: dict | None = None,
                 big_endian: bool = False):
        super().__init__(source, fmt)
        self.big_endian = big_endian
        self.checkpoint: Checkpoint | None = None  # closed with the source (temporary storage files)
        self.items = []
        skipped = []
        stripped = 0
        for key, value in state_dict.items():
            value = unwrap(value)
            name = strip_prefixes(str(key))
            stripped += name != str(key)
            if not is_tensor(value):
                what = value.what if isinstance(value, Unreadable) else type(value).__name__
                skipped.append(f"{name} ({what})")
                continue
            self.items.append((name, np.ascontiguousarray(value) if isinstance(value, np.ndarray) else value))
        if stripped:
            self.note(f"stripped 'module.' / '_orig_mod.' prefixes from {stripped} names")
        if skipped:
            self.note(f"skipped {len(skipped)} entries that are not numeric tensors: {', '.join(skipped[:5])}")
        self.module_info = module_info or {}
        self.classes = classify([(n, tuple(t.shape)) for n, t in self.items])
        self.meta["order"] = "module"  # a state dict lists its tensors in the modules' order

    def totals(self) -> tuple[int, int]:
        return len(self.items), sum(t.nbytes for _, t in self.items)

    def close(self) -> None:
        if self.checkpoint is not None:
            self.checkpoint.close()

    def records(self) -> Iterator[TensorRecord]:
        first_of: dict[tuple, str] = {}
        for name, t in self.items:
            key = _storage_key(t)
            tied_to = first_of.get(key) if key else None
            if key and tied_to is None:
                first_of[key] = name
            yield self._record(name, t, tied_to)

    def _record(self, name: str, t, tied_to: str | None) -> TensorRecord:
        info = self.module_info.get(name) or vars(self.classes[name])
        np_dtype, stored = _value_dtype(t)
        if isinstance(t, np.ndarray):
            reader, ranges = array_reader(t), array_range_reader(t)
        else:
            ranges = view_range(t, self.big_endian)
            reader = _whole(ranges, t.numel)
        return TensorRecord(
            name=name, kind=info["kind"], np_dtype=np_dtype, shape=tuple(t.shape), reader=reader,
            range_reader=ranges, out_axis=info["out_axis"], module_type=info["module_type"], tied_to=tied_to,
            nbytes=t.nbytes, stored_dtype=stored,
        )


def _whole(ranges: ViewRange, numel: int):
    def read(max_elems: int) -> Iterator[np.ndarray]:
        return ranges(0, numel, max_elems)

    return read


def _storage_key(t):
    if not isinstance(t, StoredTensor):
        return None
    base, byte_offset = t.storage.base()
    return (id(base), byte_offset + t.offset * t.itemsize, tuple(t.shape), tuple(t.stride), t.dtype.name)


# --- opening ------------------------------------------------------------------------------------

def open_state_dict_file(source: str, path: Path, module_info=None, fmt: str | None = None) -> StateDictSource:
    ckpt, scan = read_checkpoint(path)
    try:
        try:
            sd, key = find_state_dict(ckpt.obj, source)
        except InspectorError as e:
            if scan.alarming:
                raise unreadable_and_alarming(path, e, scan) from None
            raise
        if ckpt.fmt == "torchscript" and isinstance(ckpt.constants, (tuple, list)):
            sd = {**sd, **{f"constants.{i}": c for i, c in enumerate(ckpt.constants) if is_tensor(c)}}
        src = StateDictSource(source, fmt or ckpt.fmt, sd, module_info, ckpt.big_endian)
    except BaseException:
        ckpt.close()
        raise
    src.checkpoint = ckpt
    if key and key.startswith("<"):
        src.note(f"tensors found in the pickled object {key[1:-1]}, named by attribute path as state_dict() "
                 "names them")
    elif key:
        src.note(f"state dict taken from the checkpoint's {key!r} entry")
        src.meta["nested_key"] = key
    describe_scan(src, scan)
    return src


def describe_scan(src: OpenedSource, scan: ScanResult) -> None:
    """The scan's findings, and a note naming the classes that were kept as inert placeholders."""
    src.meta["findings"].extend(scan.findings())
    unknown = scan.of_class("unknown")
    if unknown:
        more = f" and {len(unknown) - 6} more" if len(unknown) > 6 else ""
        src.note(f"the pickle names {len(unknown)} classes winspect does not know, kept as inert placeholders "
                 f"(never imported): {', '.join(unknown[:6])}{more}")
    dangerous = scan.of_class("dangerous")
    if dangerous:
        src.meta["unsafe_globals"] = dangerous


class _MultiSource(OpenedSource):
    """Several state-dict files read one after another (sharded ``pytorch_model-*.bin``)."""

    def __init__(self, source: str, files: list[Path]):
        super().__init__(source, "pytorch-sharded")
        self.files = files
        self.opened = [open_state_dict_file(source, f) for f in files]
        for shard in self.opened:
            self.meta["findings"].extend(shard.meta["findings"])
        self.note(f"{len(files)} shards")

    def records(self) -> Iterator[TensorRecord]:
        for shard in self.opened:
            yield from shard.records()

    def close(self) -> None:
        for shard in self.opened:
            shard.close()


@register
class TorchPickleLoader(Loader):
    name = "pytorch"
    title = ("PyTorch .pt/.pth/.bin/.ckpt/.tar (zip, legacy, legacy tar, TorchScript, full-model pickles; "
             "sharded *.bin.index.json)")
    dir_hint = "pytorch_model.bin"
    order = 30
    suffixes = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".tar", ".bin.index.json")
    takes_dirs = True

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        if path.name.endswith(".bin.index.json") and is_json_index_head(path, head):
            return True
        if head[:2] == b"\x80\x02" or head[:1] == b"\x80" and head[1:2] in (b"\x03", b"\x04", b"\x05"):
            return True
        if head[:4] == b"PK\x03\x04":
            return is_torch_zip(path)
        return is_legacy_tar(path)

    @classmethod
    def accepts_dir(cls, path: Path) -> bool:
        return (path / "pytorch_model.bin").is_file() or (path / "pytorch_model.bin.index.json").is_file()

    @staticmethod
    def _target(path: Path) -> Path:
        if path.is_dir():
            path = path / "pytorch_model.bin"
            if not path.is_file():
                path = path.with_name("pytorch_model.bin.index.json")
        return path

    @classmethod
    def files(cls, path: Path) -> list[Path]:
        target = cls._target(path)
        return [target, *shards_of_index(target)] if is_json_index(target) else [target]

    @classmethod
    def open(cls, source: str, options: LoadOptions) -> OpenedSource:
        path = cls._target(Path(source))
        if is_json_index(path):
            return _MultiSource(source, shards_of_index(path))
        return open_state_dict_file(source, path)
