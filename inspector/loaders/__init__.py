"""The loader registry: the only place that decides which loader reads a source.

A source is a file, a directory, or a model name. Files are identified by their
content first (magic bytes), then by suffix; directories by what they contain;
anything that is not a path is offered to the loaders that take names
(torchvision). Adding a format means one new module with a ``@register``ed
:class:`Loader` subclass (its ``name``, ``title``, ``suffixes``, ``order``), listed in
``FORMAT_MODULES``. Sniffing order is the loaders' ``order``, not import order; the format lists
of ``--help`` and of the errors are built from the registered loaders.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import InspectorError, SourceNotFound, UnsupportedSource
from ..names import natural_key
from ..records import TensorRecord
from ..remote import is_remote
from .refusals import recognise_dir, recognise_file, recognise_magic, refusal

HEAD_BYTES = 64


@dataclass
class LoadOptions:
    weights: str = "DEFAULT"  # for model names: DEFAULT, an enum member name, or "none"
    no_download: bool = False  # refuse remote formats that cannot be read by range
    cache: str | None = None  # keep remote files in this directory (and read them from there later)


class OpenedSource:
    """An open checkpoint: metadata up front, tensors streamed by :meth:`records`."""

    def __init__(self, source: str, fmt: str, meta: dict | None = None):
        self.source = source
        self.format = fmt
        self.paths: list[Path] = []  # the files this source reads (set by open_source from its loader)
        self.network = None  # the HTTP client of a remote source (its ``received`` bytes), else None
        self.meta: dict = {"format": fmt, "notes": [], "findings": []}
        self.meta.update(meta or {})

    def records(self) -> Iterator[TensorRecord]:  # pragma: no cover - abstract
        raise NotImplementedError

    def totals(self) -> tuple[int, int] | None:
        """(tensors, bytes) that :meth:`records` will yield, when known up front (for progress)."""
        return None

    def files(self) -> list[Path]:
        """The files reading this source reads: the source itself and any shards or members beside it."""
        return list(self.paths)

    def note(self, text: str) -> None:
        self.meta["notes"].append(text)

    def adopt(self, records: list[TensorRecord]) -> tuple[list[TensorRecord], list[str]]:
        """Another source's records, renamed into this format's naming where it has its own (GGUF's
        ``blk.0.attn_q.weight`` for Hugging Face's ``model.layers.0.self_attn.q_proj.weight``), so that a
        diff can match them; with notes on what was done. By default they are returned as they are."""
        return records, []

    def close(self) -> None:
        pass

    def __enter__(self) -> "OpenedSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Loader:
    """One checkpoint format. Subclasses set ``name``, ``title`` and ``suffixes`` and implement ``open``."""

    name = ""
    title = ""  # how --help and errors list the format ("safetensors (.safetensors, shard index)")
    dir_hint = ""  # what a directory of this format holds, for the error on a directory nobody reads
    suffixes: tuple[str, ...] = ()
    order = 100  # sniffing order: lower first (cheap, certain magic before structural guesses)
    takes_names = False  # accepts sources that are not paths (model names)
    takes_dirs = False
    reads_ranges = False  # reads a remote file by byte ranges (others are downloaded first)

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        """True when the file's first bytes (and, if needed, structure) are this format."""
        return False

    @classmethod
    def accepts_dir(cls, path: Path) -> bool:
        return False

    @classmethod
    def accepts_name(cls, name: str) -> bool:
        return False

    @classmethod
    def files(cls, path: Path) -> list[Path]:
        """The files that reading ``path`` (a file or directory this loader accepts) reads."""
        return [path]

    @classmethod
    def open(cls, source: str, options: LoadOptions) -> OpenedSource:  # pragma: no cover
        raise NotImplementedError


LOADERS: list[type[Loader]] = []
SHOWN_CANDIDATES = 8


class AmbiguousFolder(UnsupportedSource):
    """A directory holds several checkpoints and none is the one a model directory reads."""

    def __init__(self, folder: Path, candidates: list[Path]):
        names = [p.name for p in candidates]
        more = f", … ({len(names)} in all)" if len(names) > SHOWN_CANDIDATES else ""
        super().__init__(f"{folder}: holds several checkpoints and none is the model directory's own "
                         f"({', '.join(names[:SHOWN_CANDIDATES])}{more}); name the file to read")


def checkpoint_files(folder: Path) -> list[Path]:
    """The files of a directory that some loader reads by their suffix, in natural order."""
    suffixes = tuple(s for lo in LOADERS for s in lo.suffixes)
    try:
        found = [p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(suffixes)]
    except OSError as e:
        raise SourceNotFound(f"{folder}: cannot list the directory ({e.strerror or e})") from None
    return sorted(found, key=lambda p: natural_key(p.name))


def register(cls: type[Loader]) -> type[Loader]:
    """Add a loader to the registry, kept in sniffing order (``order``, then registration)."""
    LOADERS.append(cls)
    LOADERS.sort(key=lambda lo: lo.order)
    return cls


def format_names() -> list[str]:
    """The registered loaders' names, in sniffing order."""
    return [lo.name for lo in LOADERS]


def formats_text() -> str:
    """The formats winspect reads, as --help and the errors list them."""
    return "; ".join(lo.title for lo in LOADERS if lo.title)


def source_files(source: str) -> list[Path]:
    """The files reading ``source`` reads (the source itself, and shards or the checkpoint a directory
    holds); just the path when no loader takes it, and nothing for a model name."""
    if is_remote(source):
        return []  # a URL is never a local file an output could overwrite
    path = Path(source)
    if not path.exists():
        return []
    try:
        return [path, *(p for p in choose_loader(source).files(path) if p != path)]
    except InspectorError:  # reading it will say what is wrong
        return [path]


def choose_loader(source: str) -> type[Loader]:
    """The loader for a source: sniffed content, then suffix, then model name."""
    path = Path(source)
    if path.is_dir():
        for loader in LOADERS:
            if loader.takes_dirs and loader.accepts_dir(path):
                return loader
        known = recognise_dir(path)
        if known:
            raise UnsupportedSource(refusal(path, known))
        candidates = checkpoint_files(path)
        if len(candidates) > 1:
            raise AmbiguousFolder(path, candidates)
        hints = ", ".join(lo.dir_hint for lo in LOADERS if lo.takes_dirs and lo.dir_hint)
        raise UnsupportedSource(f"{source}: directory holds no checkpoint winspect reads (expected {hints})")
    if path.exists():
        return _loader_for_file(path)
    if _looks_like_path(source):
        raise SourceNotFound(f"{source}: no such file or directory")
    for loader in LOADERS:
        if loader.takes_names and loader.accepts_name(source):
            return loader
    names = [lo for lo in LOADERS if lo.takes_names]
    if names:  # let the name loader produce its "did you mean" error
        return names[0]
    raise SourceNotFound(f"{source}: no such file, directory or model name")


def _loader_for_file(path: Path) -> type[Loader]:
    if not path.is_file():
        raise UnsupportedSource(f"{path}: not a regular file (a device, pipe or socket)")
    try:
        with path.open("rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as e:
        raise SourceNotFound(f"{path}: cannot read ({e.strerror or e})") from None
    if not head:
        raise UnsupportedSource(f"{path}: file is empty")
    for loader in LOADERS:
        if _sniffs(loader, path, head):
            return loader
    known = recognise_magic(head)
    if known:
        raise UnsupportedSource(refusal(path, known))
    name = path.name.lower()
    for loader in LOADERS:
        if any(name.endswith(s) for s in loader.suffixes):
            return loader
    known = recognise_file(path, head)
    if known:
        raise UnsupportedSource(refusal(path, known))
    raise UnsupportedSource(f"{path}: not a format winspect reads ({formats_text()}); first bytes {head[:8]!r}")


def _sniffs(loader: type[Loader], path: Path, head: bytes) -> bool:
    """A loader's sniff, where any failure on hostile bytes counts as "not this format"."""
    try:
        return bool(loader.sniff(path, head))
    except Exception:
        return False


def _looks_like_path(source: str) -> bool:
    return (
        os.sep in source
        or "/" in source
        or source.startswith(".")
        or any(source.lower().endswith(s) for lo in LOADERS for s in lo.suffixes)
    )


def open_source(source: str, options: LoadOptions | None = None) -> OpenedSource:
    """Open a source with the loader the registry chooses for it."""
    options = options or LoadOptions()
    if is_remote(str(source)):
        from .remote_sources import open_remote

        return open_remote(str(source), options)
    path = Path(source)
    if path.is_dir():
        loose = checkpoint_files(path)
        if len(loose) == 1 and not any(lo.takes_dirs and lo.accepts_dir(path) for lo in LOADERS):
            src = open_source(str(loose[0]), options)  # the folder's only checkpoint
            src.note(f"read {loose[0].name}, the only checkpoint in the folder")
            return src
    loader = choose_loader(str(source))
    src = loader.open(str(source), options)
    if not src.paths and Path(source).exists():
        try:
            src.paths = loader.files(Path(source))
        except BaseException:
            src.close()
            raise
    if path.is_dir():
        src.note(_folder_note(path, src.paths))
    return src


def _folder_note(folder: Path, read: list) -> str:
    """Which file of a directory was read, and which other checkpoints it holds were not."""
    read = [Path(p) for p in read]
    if not read:
        return f"read {folder}"
    others = [p.name for p in checkpoint_files(folder) if p not in read]
    also = f"; also in the folder, not read: {', '.join(others[:SHOWN_CANDIDATES])}" if others else ""
    return f"read {read[0].name} from the folder{also}"


# The format modules; each registers its loaders (sniffing order is their ``order``, not this list's).
FORMAT_MODULES = ("safetensors", "torch_pickle", "torchvision_zoo", "keras_h5", "onnx_model", "numpy_files",
                  "gguf")
for _module in FORMAT_MODULES:
    importlib.import_module(f"{__name__}.{_module}")
