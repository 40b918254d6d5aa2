"""PyTorch pickle checkpoints (``.pt .pth .bin .ckpt``), zip and legacy formats.

Only ``torch.load(weights_only=True)`` is used: the restricted unpickler that builds
tensors and plain containers and refuses everything else. A refused file is scanned
statically (:mod:`inspector.safety.pickle_scan`) so the error names what it would import;
it is fully unpickled only under an explicit ``unsafe_load``. Zip checkpoints are bounded
(:mod:`inspector.safety.zipcheck`) before torch reads them, then memory-mapped and read
tensor by tensor. torch is imported only here, when a pickle is actually opened.
"""

from __future__ import annotations

import contextlib
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from ..dtypes import torch_to_numpy
from ..errors import CorruptCheckpoint, UnsupportedSource
from ..safety.pickle_scan import refusal
from ..safety.zipcheck import check_zip
from ..names import strip_prefixes
from ..records import TensorRecord, default_out_axis, infer_kinds
from . import Loader, LoadOptions, OpenedSource, register
from .pages import PageReleaser, file_mappings
from .shards import is_json_index, is_json_index_head, shards_of_index

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


def is_torch_zip(path: Path) -> bool:
    """A zip checkpoint as torch.load sees it: zip magic at byte 0 and a ``data.pkl`` member."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                return False
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("data.pkl") for n in z.namelist()[:4096])
    except Exception:  # a sniff never raises: any unreadable zip is simply not one
        return False


def load_pickle(path: Path, options: LoadOptions):
    """torch.load with weights_only=True (memory-mapped for zip files); a refusal names what the pickle imports."""
    return load_pickle_reporting(path, options)[0]


def load_pickle_reporting(path: Path, options: LoadOptions):
    """(object, whether it was fully unpickled). The full unpickler runs only when the restricted one
    refused the file and the user asked for it with ``unsafe_load``; otherwise the refusal is raised."""
    zipped = is_torch_zip(path)
    if zipped:
        check_zip(path).close()
    try:
        return _torch_load(path, zipped, weights_only=True), False
    except pickle.UnpicklingError as e:
        if not options.unsafe_load:
            raise refusal(path, str(e), zipped) from None
    try:
        return _torch_load(path, zipped, weights_only=False), True
    except Exception as e:
        raise _unreadable(path, e) from None


def numpy_globals() -> list:
    """numpy's array and scalar reconstruction, which training checkpoints often hold beside the
    weights (``best_acc = np.float64(...)``). They only build arrays and scalars from data; the
    elements of an object array are themselves built by the restricted unpickler, so nothing beyond
    torch's own allowlist can be reached through them."""
    import numpy.dtypes as npd
    from numpy._core.multiarray import _reconstruct, scalar

    dtypes = [getattr(npd, n) for n in dir(npd) if n.endswith("DType")]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtypes]


def _torch_load(path: Path, zipped: bool, weights_only: bool):
    import torch

    allowed = torch.serialization.safe_globals(numpy_globals()) if weights_only else contextlib.nullcontext()
    try:
        with warnings.catch_warnings(), allowed, _torch_input(path, zipped) as f:
            warnings.simplefilter("ignore")
            return torch.load(f, map_location="cpu", weights_only=weights_only, mmap=f is path)
    except pickle.UnpicklingError:
        raise
    except Exception as e:  # torch.load on hostile bytes raises many types; none may escape as a crash
        raise _unreadable(path, e) from None


@contextlib.contextmanager
def _torch_input(path: Path, zipped: bool):
    """The path itself for zip files (memory-mapped), else an open file: torch.load must not pick its
    reader from the name (it hands any ``*.safetensors`` path to safetensors)."""
    if zipped and not path.name.endswith(".safetensors"):
        yield path
        return
    with open(path, "rb") as f:
        yield f


def _unreadable(path: Path, e: Exception) -> CorruptCheckpoint:
    if isinstance(e, EOFError):
        why = "the file ends early; truncated?"
    else:
        text = str(e).strip()
        why = text.splitlines()[0].split(". ")[0][:300] if text else type(e).__name__
    return CorruptCheckpoint(f"{path}: not a readable PyTorch checkpoint ({why})")


def find_state_dict(obj, source: str) -> tuple[dict, str | None]:
    """The tensor dict inside a checkpoint, and the nested key path that held it (None for a bare one)."""
    import torch

    def tensor_dict(d) -> bool:
        return isinstance(d, dict) and len(d) > 0 and any(isinstance(v, torch.Tensor) for v in d.values())

    def search(d, path: list[str], depth: int):
        if not isinstance(d, dict) or depth > 3:
            return None
        if tensor_dict(d) and sum(isinstance(v, torch.Tensor) for v in d.values()) * 2 >= len(d):
            return d, path
        for key in NESTED_KEYS:
            if key in d:
                found = search(d[key], path + [key], depth + 1)
                if found:
                    return found
        candidates = [k for k, v in d.items() if isinstance(v, dict) and tensor_dict(v) and "optim" not in str(k)]
        if len(candidates) == 1:
            return search(d[candidates[0]], path + [str(candidates[0])], depth + 1)
        return None

    if hasattr(obj, "state_dict") and callable(obj.state_dict) and not isinstance(obj, dict):
        return obj.state_dict(), "<module>.state_dict()"
    found = search(obj, [], 0)
    if not found:
        keys = list(obj.keys())[:12] if isinstance(obj, dict) else type(obj).__name__
        raise UnsupportedSource(f"{source}: no state dict of tensors found in the checkpoint (top level: {keys})")
    sd, path = found
    return sd, ".".join(path) if path else None


def tensor_reader(t, pages: PageReleaser | None = None):
    """Chunked reader over a torch tensor's values as numpy arrays (bf16/f8 via ml_dtypes).

    With ``pages``, the mapped pages of each chunk are released once it has been used.
    """
    read_range = tensor_range_reader(t, pages)

    def read(max_elems: int) -> Iterator[np.ndarray]:
        return read_range(0, t.numel(), max_elems)

    return read


def tensor_range_reader(t, pages: PageReleaser | None = None):
    """Range reader (see TensorRecord.range_chunks) over a torch tensor's flat values."""
    np_dtype, view = torch_to_numpy(t.dtype)

    def read(begin: int, stop: int, max_elems: int) -> Iterator[np.ndarray]:
        flat = t.reshape(-1) if t.is_contiguous() else t.contiguous().reshape(-1)
        for start in range(begin, stop, max_elems):
            part = flat[start : min(start + max_elems, stop)]
            arr = part.view(view).numpy().view(np_dtype) if view is not None else part.numpy()
            yield arr
            if pages is not None:
                pages.release(arr)

    return read


class StateDictSource(OpenedSource):
    """Records over a dict of torch tensors; kinds from module types when known."""

    def __init__(self, source: str, fmt: str, state_dict: dict, module_info: dict | None = None,
                 pages: PageReleaser | None = None):
        super().__init__(source, fmt)
        self.pages = pages
        import torch

        self.items = []
        skipped = []
        stripped = 0
        for key, value in state_dict.items():
            name = strip_prefixes(str(key))
            stripped += name != str(key)
            if not isinstance(value, torch.Tensor):
                skipped.append(f"{name} ({type(value).__name__})")
                continue
            if value.is_quantized:
                value = value.dequantize()
            if torch_to_numpy(value.dtype)[0] is None:
                skipped.append(f"{name} ({str(value.dtype).replace('torch.', '')})")
                continue
            self.items.append((name, value))
        if stripped:
            self.note(f"stripped 'module.' / '_orig_mod.' prefixes from {stripped} names")
        if skipped:
            self.note(f"skipped {len(skipped)} entries that are not numeric tensors: {', '.join(skipped[:5])}")
        self.module_info = module_info or {}
        self.kinds = infer_kinds([(n, tuple(t.shape)) for n, t in self.items])

    def totals(self) -> tuple[int, int]:
        return len(self.items), sum(t.numel() * t.element_size() for _, t in self.items)

    def records(self) -> Iterator[TensorRecord]:
        first_of: dict[tuple, str] = {}
        for name, t in self.items:
            key = _storage_key(t)
            tied_to = first_of.get(key) if key else None
            if key and tied_to is None:
                first_of[key] = name
            info = self.module_info.get(name)
            kind = info["kind"] if info else self.kinds[name]
            shape = tuple(t.shape)
            out_axis = info["out_axis"] if info else default_out_axis(kind, shape, name)
            yield TensorRecord(
                name=name,
                kind=kind,
                np_dtype=torch_to_numpy(t.dtype)[0],
                shape=shape,
                reader=tensor_reader(t, self.pages),
                range_reader=tensor_range_reader(t, self.pages),
                out_axis=out_axis,
                module_type=info["module_type"] if info else None,
                tied_to=tied_to,
                nbytes=t.numel() * t.element_size(),
            )


def _storage_key(t):
    try:
        return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
    except (RuntimeError, NotImplementedError):
        return None


def open_state_dict_file(source: str, path: Path, options: LoadOptions, module_info=None) -> StateDictSource:
    obj, unpickled = load_pickle_reporting(path, options)
    sd, key = find_state_dict(obj, source)
    zipped = is_torch_zip(path)
    pages = PageReleaser(file_mappings(path)) if zipped else None
    src = StateDictSource(source, "pytorch-zip" if zipped else "pytorch-legacy", sd, module_info, pages)
    if key:
        src.note(f"state dict taken from the checkpoint's {key!r} entry")
        src.meta["nested_key"] = key
    if unpickled:
        src.note("loaded with --unsafe-load: the restricted loader refused the file, so it was fully unpickled")
    return src


class _MultiSource(OpenedSource):
    """Several state-dict files read one after another (sharded ``pytorch_model-*.bin``)."""

    def __init__(self, source: str, files: list[Path], options: LoadOptions):
        super().__init__(source, "pytorch-sharded")
        self.files = files
        self.options = options
        self.note(f"{len(files)} shards")

    def records(self) -> Iterator[TensorRecord]:
        for f in self.files:
            yield from open_state_dict_file(self.source, f, self.options).records()


@register
class TorchPickleLoader(Loader):
    name = "pytorch"
    title = "PyTorch .pt/.pth/.bin/.ckpt (zip or legacy pickle, sharded *.bin.index.json)"
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
        return head[:4] == b"PK\x03\x04" and is_torch_zip(path)

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
            return _MultiSource(source, shards_of_index(path), options)
        return open_state_dict_file(source, path, options)
