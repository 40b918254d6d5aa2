"""Finding the models under a scan's paths: one entry per model, whatever its files.

The loader registry decides what a file or directory is (:func:`inspector.loaders.choose_loader`);
a directory a loader reads (a Hugging Face folder) and a shard index are one model each, and the
files they read are not models of their own. (see :func:`_is_model_dir`). A file reached twice (a symlink, a hard link) is one
model: the second path is listed as ``skipped``. Files no loader reads (configs, READMEs) are not
models and are left out. Models are held as text and numbers (paths, sizes, times), not Path objects:
a scan's client keeps its list of models all along.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InspectorError, SourceNotFound
from ..loaders import LOADERS, choose_loader


@dataclass(frozen=True, slots=True)
class Model:
    path: str  # what is inspected: a file, a model directory or a shard index
    files: tuple[str, ...]  # every file reading it reads
    size: int  # their total size in bytes
    mtime_ns: int  # the newest of their modification times
    duplicate_of: str | None = None  # set when these files are already another model's

    @property
    def key(self) -> tuple[str, int, int]:
        """What --resume compares: a model is done when a row with this key exists."""
        return (self.path, self.size, self.mtime_ns)


def expand(args) -> list[Path]:
    """The scan's arguments as paths: globs expanded (``**`` included), ``@FILE`` read as one path a line."""
    out: list[Path] = []
    for arg in args:
        arg = str(arg)
        if arg.startswith("@"):
            out += expand(_list_file(arg[1:]))
        elif glob.has_magic(arg):
            out += [Path(p) for p in sorted(glob.glob(arg, recursive=True))]
        elif not os.path.lexists(arg):
            raise SourceNotFound(f"{arg}: no such file or directory")
        else:
            out.append(Path(arg))
    return out


def _list_file(name: str) -> list[str]:
    try:
        text = Path(name).read_text(encoding="utf-8")
    except OSError as e:
        raise SourceNotFound(f"{name}: cannot read the list of paths ({e.strerror or e})") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def discover(args) -> list[Model]:
    """Every model under ``args`` (paths, globs, ``@lists``), sorted by path."""
    candidates: dict[str, tuple[str, ...]] = {}  # text, not Path objects: a zoo's worth of them is held here
    for path in expand(args):
        for source in _walk(path):
            files = _files_of(source)
            if files is not None:
                src = str(source)
                candidates[src] = tuple(src if f == source else str(f) for f in files)
    claimed = {_identity(f) for src, files in candidates.items() for f in files if f != src}
    return _dedupe((src for src in sorted(candidates) if _identity(src) not in claimed), candidates)


def _walk(root: Path):
    """The files and model directories under ``root``, following links to directories once."""
    if not root.is_dir():
        yield root
        return
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        here = Path(dirpath)
        if _is_model_dir(here):
            yield here
        for name in sorted(filenames):
            yield here / name


def _is_model_dir(path: Path) -> bool:
    """A folder that is one model: one a loader reads that holds a ``config.json`` (a Hugging Face folder)
    or whose checkpoint is several files (an index and its shards). Any other folder's files are models
    of their own (a folder of epochs is not one model, even when it holds a single checkpoint)."""
    try:
        loader = choose_loader(str(path))
        return loader.takes_dirs and ((path / "config.json").is_file() or len(loader.files(path)) > 1)
    except Exception:  # a folder whose index cannot be read: its files are scanned one by one
        return False


def _files_of(source: Path) -> list[Path] | None:
    """The files reading ``source`` reads, or None when it is not a model (no loader reads it).
    A file whose format is recognised but broken is still a model: reading it says what is wrong."""
    try:
        loader = choose_loader(str(source))
    except InspectorError:
        return [source] if source.is_file() and _checkpoint_suffix(source) else None
    try:
        files = loader.files(source)
    except Exception:  # a broken index: inspecting it reports the error
        files = [source]
    if source.is_file() and source not in files:
        files = [source, *files]
    return files


def _checkpoint_suffix(path: Path) -> bool:
    """A name a checkpoint format uses (an empty or unreadable ``.pth`` is a broken model, not a stray file)."""
    name = path.name.lower()
    return any(name.endswith(s) for lo in LOADERS for s in lo.suffixes)


def _identity(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return path
    return (st.st_dev, st.st_ino)


def _dedupe(sources, candidates: dict[str, tuple[str, ...]]) -> list[Model]:
    """Models in path order; a later source whose files are an earlier one's is a duplicate."""
    first: dict[tuple, str] = {}
    models = []
    for src in sources:
        files = candidates[src]
        ident = tuple(sorted(map(str, (_identity(f) for f in files))))
        size, mtime = _size_mtime(files)
        models.append(Model(src, files, size, mtime, first.get(ident)))
        first.setdefault(ident, src)
    return models


def _size_mtime(files) -> tuple[int, int]:
    size = mtime = 0
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            continue
        size += st.st_size
        mtime = max(mtime, st.st_mtime_ns)
    return size, mtime
