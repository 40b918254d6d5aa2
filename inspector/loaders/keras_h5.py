"""Keras checkpoints read with h5py alone: no TensorFlow, Keras or torch, no model deserialised.

Forms: legacy full-model HDF5 (``model_weights`` group, ``layer_names`` / ``weight_names``
attributes, possibly split into ``layer_names0``, ``layer_names1`` ... chunks), legacy
weights-only HDF5 (layer groups at the root), Keras 3 ``.weights.h5`` (``layers/<key>/vars/N``)
and Keras 3 ``.keras`` zips, whose ``model.weights.h5`` is read in place from the archive.
Optimizer state (``optimizer_weights`` / ``optimizer``) is never read. Datasets are read in
slabs of at most ``max_elems`` values, so a tensor of any size needs one chunk of memory.

Every file is surveyed first in a child process (:mod:`inspector.safety.hdf5_guard`); only then is it
opened here, and only the datasets the survey checked are read. Each group is walked once, however
many hard links lead to it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import ml_dtypes
import numpy as np

from ..errors import CorruptCheckpoint, InspectorError, UnsafeCheckpoint, UnsupportedSource, first_line
from ..names import natural_key
from ..records import TensorRecord
from ..safety.hdf5_guard import FileSpec, Survey, survey
from . import Loader, LoadOptions, OpenedSource, register
from .keras_config import (
    RNN_LAYERS,
    Node,
    class_of_key,
    config_findings,
    config_tree,
    kind_of,
    out_axis_of,
    var_names,
)
from .keras_zip import open_keras_zip
from .shards import keras_shards


class _LazyH5py:
    """h5py, imported when a Keras file is first opened (it costs start-up time every other run)."""

    def __getattr__(self, name: str):
        import h5py as module

        return getattr(module, name)


h5py = _LazyH5py()

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
USERBLOCK_OFFSETS = (512, 1024, 2048)  # HDF5 also looks for its signature after a user block
MAX_DEPTH = 32
# Groups holding a container's layers: Keras 3 keys them by class ("conv2d_1"), the ".keras" format
# of Keras 2.13-2.15 (``_layer_checkpoint_dependencies``) by layer name.
LAYER_CONTAINERS = ("layers", "_layer_checkpoint_dependencies")
H5_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, AttributeError, IndexError, UnicodeError)


@contextlib.contextmanager
def h5_errors(where: str, what: str):
    """Turn h5py/HDF5 errors into CorruptCheckpoint naming the file and what was being read."""
    try:
        yield
    except InspectorError:
        raise
    except H5_ERRORS as e:
        raise CorruptCheckpoint(f"{where}: {what} failed ({first_line(e)}); the HDF5 file is damaged or truncated") from None


def has_hdf5_magic(path: Path, head: bytes) -> bool:
    if head.startswith(HDF5_MAGIC):
        return True
    try:
        with open(path, "rb") as f:
            for off in USERBLOCK_OFFSETS:
                f.seek(off)
                if f.read(len(HDF5_MAGIC)) == HDF5_MAGIC:
                    return True
    except OSError:
        return False
    return False


def text(value) -> str:
    """A string attribute as valid text (bytes that are not UTF-8 shown as escapes, see valid_text)."""
    return valid_text(bytes(value).decode("utf8", "surrogateescape") if isinstance(value, (bytes, np.bytes_))
                      else str(value))


def str_list(group, name: str) -> list[str] | None:
    """A Keras string-list attribute, joined from ``name0``, ``name1`` ... chunks when split."""
    if name in group.attrs:
        parts = [group.attrs[name]]
    else:
        parts = []
        while f"{name}{len(parts)}" in group.attrs:
            parts.append(group.attrs[f"{name}{len(parts)}"])
        if not parts:
            return None
    return [text(v) for p in parts for v in np.atleast_1d(np.asarray(p)).reshape(-1)]


class Merged:
    """One group path across the shards of a sharded Keras 3 checkpoint, seen as one group.

    Its members are the union of the shards' members (a layer's variables may be split
    between shards); its attributes are those of the first shard that has each one. A
    dataset stored in two shards is an inconsistent checkpoint.
    """

    def __init__(self, groups: list, name: str):
        self.groups, self.name = groups, name

    def keys(self) -> list[str]:
        return list(dict.fromkeys(k for g in self.groups for k in g.keys()))

    @property
    def attrs(self) -> dict:
        out: dict = {}
        for g in self.groups:
            for k in g.attrs:
                out.setdefault(k, g.attrs[k])
        return out

    def member(self, part: str, where: str):
        found = [x for x in (child(g, part, where) for g in self.groups) if x is not None]
        datasets = [x for x in found if isinstance(x, h5py.Dataset)]
        groups = [x for x in found if isinstance(x, h5py.Group)]
        if datasets and (len(datasets) > 1 or groups):
            raise CorruptCheckpoint(f"{where}: {self.name.rstrip('/')}/{part} is stored in more than one shard")
        if datasets:
            return datasets[0]
        return Merged(groups, f"{self.name.rstrip('/')}/{part}") if groups else None

    def visititems(self, fn) -> None:
        for g in self.groups:
            g.visititems(fn)

    def close(self) -> None:
        for g in self.groups:
            with contextlib.suppress(Exception):
                g.file.close()


def is_group(node) -> bool:
    return isinstance(node, (h5py.Group, Merged))


def child(group, path: str, where: str):
    """The object at ``path`` under ``group`` (None when absent), refusing links to other files."""
    node = group
    for part in path.split("/"):
        if not part:
            continue
        if isinstance(node, Merged):
            node = node.member(part, where)
            if node is None:
                return None
            continue
        if not isinstance(node, h5py.Group):
            return None
        link = node.get(part, getlink=True)
        if link is None:
            return None
        if isinstance(link, h5py.ExternalLink):
            raise UnsafeCheckpoint(
                f"{where}: {node.name}/{part} links to another file ({link.filename}); "
                "winspect reads only the file it is given"
            )
        node = node[part]
    return node


def slabs(shape: tuple[int, ...], max_elems: int) -> Iterator[tuple]:
    """Selections covering a dataset in C order, each of at most ``max_elems`` values.

    The trailing axes that fit whole are kept whole; the axis before them is cut into
    blocks, and the axes before that are stepped one index at a time.
    """
    if any(s == 0 for s in shape):
        return
    inner, k = 1, len(shape)
    while k > 0 and inner * shape[k - 1] <= max_elems:
        inner *= shape[k - 1]
        k -= 1
    if k == 0:
        yield ()
        return
    block = max(1, max_elems // inner)
    for idx in np.ndindex(*shape[: k - 1]):
        for j in range(0, shape[k - 1], block):
            yield idx + (slice(j, min(j + block, shape[k - 1])),)


def element_type(ds) -> tuple[np.dtype | None, bool]:
    """(numpy dtype, read-as-raw-bits-and-view) of a dataset; (None, False) when not numeric."""
    dt = ds.dtype
    if text(ds.attrs.get("dtype", "")) == "bfloat16" and dt.itemsize == 2 and dt.kind in "Vui":
        return np.dtype(ml_dtypes.bfloat16), True
    if dt.kind in "fiubc" and dt.fields is None and dt.subdtype is None:
        return dt.newbyteorder("="), False
    return None, False


def dataset_reader(ds, np_dtype: np.dtype, view: bool, label: str):
    def read(max_elems: int) -> Iterator[np.ndarray]:
        for sel in slabs(ds.shape, max_elems):
            with h5_errors(label, "reading the tensor's data"):
                arr = np.asarray(ds[sel]).reshape(-1)
            yield arr.view(np_dtype) if view else arr.astype(np_dtype, copy=False)

    return read


@dataclass
class _Entry:
    name: str
    layer: str
    var: str
    module_type: str | None
    ds: object


class KerasH5Source(OpenedSource):
    """Records over the weight datasets of one Keras HDF5 file (legacy or Keras 3)."""

    def __init__(self, source: str, h5, checks: dict, tree: Node | None = None, fmt: str | None = None,
                 closers=()):
        self.h5, self.where, self.tree, self.closers = h5, source, tree, list(closers)
        self.checks: dict[tuple, Survey] = checks  # file number -> what the child found in that file
        self.entries: list[_Entry] = []
        self.walked: set = set()
        with h5_errors(source, "reading the HDF5 structure"):
            fmt = fmt or self._detect()
            super().__init__(source, fmt)
            self._read_layout(fmt)
            # legacy files list their layers in model order, a config gives it; else the keys' natural order
            self.meta["order"] = "module" if self.tree is not None or "legacy" in fmt else "keys"
        seen = set()
        for e in self.entries:
            if e.name in seen:
                raise CorruptCheckpoint(f"{source}: tensor name {e.name!r} occurs twice; the file's layout is inconsistent")
            seen.add(e.name)

    def _detect(self) -> str:
        root = self.h5
        if isinstance(child(root, "model_weights", self.where), h5py.Group):
            return "keras-h5-legacy"
        if str_list(root, "layer_names") is not None:
            return "keras-h5-legacy-weights"
        if any(isinstance(child(root, k, self.where), h5py.Group) for k in (*LAYER_CONTAINERS, "vars")):
            return "keras-weights-h5"
        raise UnsupportedSource(
            f"{self.where}: an HDF5 file, but not a Keras checkpoint (no model_weights group, layer_names "
            f"attribute or layers group; top level: {sorted(root.keys())[:10]})"
        )

    def _read_layout(self, fmt: str) -> None:
        if fmt == "keras-h5-legacy":
            self._legacy_meta(self.h5)
            self._skip_note("optimizer_weights")
            self._legacy(self.h5["model_weights"])
        elif fmt == "keras-h5-legacy-weights":
            self._legacy_meta(self.h5)
            self._skip_note("optimizer_weights")
            self._legacy(self.h5)
        else:
            self._skip_note("optimizer")
            self._walk3(self.h5, [], self.tree, self.tree.cls if self.tree else None, 0)

    def _skip_note(self, key: str) -> None:
        g = child(self.h5, key, self.where)
        if is_group(g):
            n = []
            g.visititems(lambda _, obj: n.append(1) if isinstance(obj, h5py.Dataset) else None)
            self.note(f"optimizer state in '{key}' not read ({len(n)} tensor{'s' if len(n) != 1 else ''})")

    # --- legacy Keras 1/2 layout -----------------------------------------------------------

    def _legacy_meta(self, root) -> None:
        for key in ("keras_version", "backend"):
            for g in (root, child(root, "model_weights", self.where)):
                if isinstance(g, h5py.Group) and key in g.attrs and key not in self.meta:
                    self.meta[key] = text(g.attrs[key])
        for key in ("model_config", "training_config"):
            if key not in root.attrs:
                continue
            try:
                config = json.loads(text(root.attrs[key]))
            except (ValueError, UnicodeError):
                self.note(f"{key} attribute is not valid JSON: not read")
                continue
            if isinstance(config, dict):
                self.tree = config_tree(config) if key == "model_config" else self.tree
                self.meta["findings"].extend(config_findings(config))

    def _legacy(self, g) -> None:
        names = str_list(g, "layer_names")
        if names is None:
            raise CorruptCheckpoint(f"{self.where}: {g.name} has no layer_names attribute")
        if "layer_names" not in g.attrs:
            self.note("layer_names stored in chunks (layer_names0, layer_names1, ...)")
        for layer in names:
            lg = child(g, layer, self.where)
            if not isinstance(lg, h5py.Group):
                raise CorruptCheckpoint(f"{self.where}: layer {layer!r} is listed in layer_names but has no group")
            for wn in str_list(lg, "weight_names") or []:
                self._legacy_weight(lg, layer, wn)
        top = child(g, "top_level_model_weights", self.where)
        if "top_level_model_weights" not in names and isinstance(top, h5py.Group):
            for wn in str_list(top, "weight_names") or []:
                self._legacy_weight(top, "", wn)

    def _legacy_weight(self, lg, layer: str, wn: str) -> None:
        ds = child(lg, wn, self.where)
        if not isinstance(ds, h5py.Dataset):
            raise CorruptCheckpoint(f"{self.where}: weight {wn!r} of layer {layer!r} is listed but has no dataset")
        rel = re.sub(r":\d+$", "", wn)
        if layer and rel.startswith(layer + "/"):
            rel = rel[len(layer) + 1:]
        full = f"{layer}/{rel}" if layer else rel
        path, _, var = full.rpartition("/")
        self._add(full, path, var, self._class_along(path.split("/") if path else []), ds)

    def _class_along(self, parts: list[str]) -> str | None:
        """Class of the deepest config layer on a user-name path (``lstm/lstm_cell`` -> LSTM)."""
        node, cls = self.tree, None
        for part in parts:
            node = node.by_name.get(part) if node else None
            if node is None:
                break
            cls = node.cls
        return cls

    # --- Keras 3 layout ----------------------------------------------------------------------

    def _walk3(self, group, path: list[str], node: Node | None, cls: str | None, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise CorruptCheckpoint(f"{self.where}: groups nested deeper than {MAX_DEPTH} levels at {group.name}")
        key = object_key(group)
        if key in self.walked:  # reached again through another hard link
            return
        self.walked.add(key)
        vars_g = child(group, "vars", self.where)
        if is_group(vars_g):
            self._vars3(vars_g, path, node, cls)
        for key in sorted(group.keys(), key=natural_key):
            sub = child(group, key, self.where)
            if key == "vars" or not is_group(sub) or (depth == 0 and key == "optimizer"):
                continue
            if key in LAYER_CONTAINERS:
                for k, name, n, c in self._children3(sub, node, by_name=key != "layers"):
                    self._walk3(child(sub, k, self.where), path + [name], n, c, depth + 1)
            else:  # a saveable held in an attribute: an RNN's cell, a wrapper's layer, ...
                c = RNN_LAYERS.get(cls or "") if key == "cell" else None
                n = Node(key, c, node.cfg) if node and c else None
                own = vars_name(sub, self.where)
                self._walk3(sub, path + [own or key], n, c or class_of_key(own or key), depth + 1)

    def _children3(self, container, node: Node | None, by_name: bool) -> list[tuple]:
        """(key, user name, config node, class) of a layer container's groups, in network order."""
        index = (node.by_name if by_name else node.by_key) if node else {}
        order = {k: i for i, k in enumerate(index)}
        keys = sorted(container.keys(), key=lambda k: (order.get(k, len(order)), natural_key(k)))
        out = []
        for key in keys:
            group = child(container, key, self.where)
            if not is_group(group):
                continue
            cn = index.get(key)
            attr = vars_name(group, self.where)
            if cn is not None and attr not in (None, cn.name):
                cn = None  # the file's own layer name wins over a config that does not match it
            name = attr or (cn.name if cn else key)
            out.append((key, name, cn, cn.cls if cn else None if by_name else class_of_key(key)))
        names = [o[1] for o in out]
        return [(k, n if names.count(n) == 1 else k, cn, c) for k, n, cn, c in out]

    def _vars3(self, vars_g, path: list[str], node: Node | None, cls: str | None) -> None:
        items = [(k, child(vars_g, k, self.where)) for k in sorted(vars_g.keys(), key=natural_key)]
        items = [(k, ds) for k, ds in items if isinstance(ds, h5py.Dataset)]
        numbered = all(k.isdigit() for k, _ in items)
        names = var_names(cls, node.cfg if node else None, len(items)) if numbered else None
        layer = "/".join(path)
        for i, (k, ds) in enumerate(items):
            var = names[i] if names else (f"vars/{k}" if k.isdigit() else k)
            self._add(f"{layer}/{var}" if layer else var, layer, var, cls, ds)

    # --- records ------------------------------------------------------------------------------

    def _add(self, name: str, layer: str, var: str, cls: str | None, ds) -> None:
        name, layer, var = (valid_text(x) for x in (name, layer, var))
        cls = valid_text(cls) if cls else cls
        np_dtype, _ = element_type(ds)
        if np_dtype is None or ds.shape is None:
            self.note(f"skipped {name}: dataset of type {ds.dtype} is not a numeric tensor")
            return
        survey_ = self.checks.get(ds.id.fileno)
        status = survey_.status(object_key(ds)[1]) if survey_ else None
        if status is None:
            raise CorruptCheckpoint(f"{self.where}: dataset {ds.name} was not found by the file's structure check")
        if status == "unallocated":
            self.note(f"skipped {name}: declares shape {tuple(ds.shape)} but the file does not hold its data "
                      "(unallocated storage); not read")
            return
        self.entries.append(_Entry(name, layer, var, cls, ds))

    def records(self) -> Iterator[TensorRecord]:
        for e in self.entries:
            with h5_errors(self.where, f"reading tensor {e.name!r}"):
                np_dtype, view = element_type(e.ds)
                shape = tuple(e.ds.shape)
            leaf = e.var.rsplit("/", 1)[-1]
            kind = kind_of(leaf, len(shape))
            yield TensorRecord(
                name=e.name,
                kind=kind,
                np_dtype=np_dtype,
                shape=shape,
                reader=dataset_reader(e.ds, np_dtype, view, f"{self.where}: tensor {e.name!r}"),
                layer=e.layer,
                out_axis=out_axis_of(kind, e.module_type, leaf, len(shape)),
                module_type=e.module_type,
                nbytes=math.prod(shape) * np_dtype.itemsize,
                layout="keras",
            )

    def close(self) -> None:
        for c in [self.h5.close, *self.closers]:
            with contextlib.suppress(Exception):
                c()


def valid_text(name: str) -> str:
    """A name from the file as valid text: bytes that are not UTF-8 (h5py keeps them as surrogates) shown
    as ``\\xNN`` escapes, so that every output can encode it."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def object_key(obj) -> tuple:
    """(file number, object address): one HDF5 object, whatever path reached it."""
    if isinstance(obj, Merged):
        return tuple(object_key(g) for g in obj.groups)
    return (obj.id.fileno, h5py.h5o.get_info(obj.id).addr)


def vars_name(group, where: str) -> str | None:
    """The layer's own name, which Keras 3.x writes as the ``name`` attribute of its ``vars`` group."""
    v = child(group, "vars", where) if is_group(group) else None
    attrs = v.attrs if is_group(v) else {}
    if "name" in attrs:
        name = text(attrs["name"])
        return name if name and "/" not in name else None
    return None


def open_h5(source, fileobj=None, where: str | None = None):
    where = where or str(source)
    with h5_errors(where, "opening the HDF5 file"):
        return h5py.File(fileobj if fileobj is not None else source, "r")


def open_checked(specs: list[FileSpec], fileobjs: list | None = None) -> tuple[list, dict]:
    """Survey the files in a child process, then open them here: (h5py files, file number -> Survey)."""
    surveys = survey(specs)
    files: list = []
    try:
        for i, spec in enumerate(specs):
            fileobj = fileobjs[i] if fileobjs else None
            files.append(open_h5(spec.path, fileobj, spec.where))
    except BaseException:
        for h5 in files:
            h5.close()
        raise
    return files, {h5.id.fileno: s for h5, s in zip(files, surveys)}


def weights_spec(source: str, weights) -> FileSpec:
    """The survey request for a ``.keras`` archive's model.weights.h5 (a window of the archive, or bytes)."""
    where = f"{source}: model.weights.h5"
    if isinstance(weights, io.BytesIO):
        return FileSpec(where, data=weights.getvalue())
    return FileSpec(where, path=Path(source), offset=weights.start, size=weights.size)


@register
class KerasH5Loader(Loader):
    name = "keras-h5"
    title = "Keras .h5 (HDF5: a Keras 3 .weights.h5 or a Keras 2 model or weights file)"
    dir_hint = "one Keras *.weights.h5"
    suffixes = (".h5", ".hdf5")
    takes_dirs = True  # a directory with one Keras 3 weights file (a KerasHub preset, say)
    order = 50

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        return has_hdf5_magic(path, head)

    @classmethod
    def accepts_dir(cls, path: Path) -> bool:
        return len(list(path.glob("*.weights.h5"))) == 1 and not any(path.glob("*.weights.json"))

    @classmethod
    def files(cls, path: Path) -> list[Path]:
        return [next(path.glob("*.weights.h5"))] if path.is_dir() else [path]

    @classmethod
    def open(cls, source: str, options: LoadOptions) -> OpenedSource:
        path = Path(source)
        target = cls.files(path)[0]
        (h5,), checks = open_checked([FileSpec(source, path=target)])
        try:
            return KerasH5Source(source, h5, checks)
        except BaseException:
            h5.close()
            raise


@register
class KerasZipLoader(Loader):
    name = "keras-zip"
    title = "Keras .keras"
    suffixes = (".keras",)
    order = 60

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        if head[:4] != b"PK\x03\x04":
            return False
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist()[:10_000])
        except (zipfile.BadZipFile, OSError, ValueError):
            return False
        return {"config.json", "model.weights.h5"} <= names

    @classmethod
    def open(cls, source: str, options: LoadOptions) -> OpenedSource:
        opened = open_keras_zip(Path(source))
        h5 = None
        try:
            (h5,), checks = open_checked([weights_spec(source, opened.weights)], [opened.weights])
            src = KerasH5Source(source, h5, checks, config_tree(opened.config), "keras-zip", opened.closers)
        except BaseException:
            if h5 is not None:
                h5.close()
            opened.close()
            raise
        src.meta["findings"].extend(config_findings(opened.config))
        src.meta.update(opened.meta)
        src.meta["notes"].extend(opened.notes)
        return src


@register
class KerasWeightsShardedLoader(Loader):
    """Keras 3 sharded weights: ``model.weights.json`` and its ``model_00000.weights.h5`` shards."""

    name = "keras-weights-sharded"
    title = "Keras sharded weights .weights.json"
    dir_hint = "or Keras sharded weights *.weights.json"
    suffixes = (".weights.json",)
    takes_dirs = True
    order = 70

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        return path.name.endswith(".weights.json") and head.lstrip()[:1] == b"{"

    @classmethod
    def accepts_dir(cls, path: Path) -> bool:
        return len(list(path.glob("*.weights.json"))) == 1

    @staticmethod
    def _index(path: Path) -> Path:
        return next(path.glob("*.weights.json")) if path.is_dir() else path

    @classmethod
    def files(cls, path: Path) -> list[Path]:
        index = cls._index(path)
        return [index, *keras_shards(index)]

    @classmethod
    def open(cls, source: str, options: LoadOptions) -> OpenedSource:
        index = cls._index(Path(source))
        roots = []
        try:
            roots, checks = open_checked([FileSpec(str(shard), path=shard) for shard in keras_shards(index)])
            merged = Merged(roots, "/")
            src = KerasH5Source(source, merged, checks, None, "keras-weights-sharded")
        except BaseException:
            for h5 in roots:
                h5.close()
            raise
        src.note(f"{len(roots)} shard{'s' if len(roots) != 1 else ''} from {index.name}")
        return src
