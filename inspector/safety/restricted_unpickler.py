"""A pickle reader under which nothing named in the file is ever imported or called.

Python's own unpickler machinery is used, but every global the pickle names goes through
:meth:`RestrictedUnpickler.find_class`, which answers with one of two things:

- a *reconstructor* from the table the caller passes in: a small function written in winspect
  (``collections.OrderedDict`` -> a real ``OrderedDict``, ``torch._utils._rebuild_tensor_v2``
  -> a description of a stored tensor, ``numpy.core.multiarray._reconstruct`` -> an array
  rebuilt from its raw bytes, ...);
- otherwise an inert :class:`Placeholder` class that records its module, name, arguments and
  state. It has no behaviour: calling it, ``__new__``, ``__setstate__``, item and list
  assignment only store what they are given.

The module named in the file is never imported, so ``posix.system``, ``builtins.exec`` or a
user's own class cost nothing but a record. Every global named is remembered in
:attr:`RestrictedUnpickler.named` (its full dotted name, after Python 2 renames).

NumPy arrays and scalars are rebuilt from their raw bytes by :mod:`numpy` ``frombuffer`` on a
dtype from a short list of plain numeric codes; numpy's own pickle hooks
(``dtype.__setstate__``, ``ndarray.__setstate__``) are never reached, and object or
structured dtypes are refused (the value becomes an :class:`Unreadable`).
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import math
import pickle
import re
from typing import Any, Callable

import numpy as np

Reconstructor = Callable[..., Any]


class Unreadable:
    """A value holding data that winspect does not read (object arrays, sparse tensors, ...)."""

    def __init__(self, what: str):
        self.what = what

    def __repr__(self) -> str:
        return f"<unreadable {self.what}>"


class Placeholder:
    """An instance of a class the pickle names and winspect does not know; it only records."""

    origin = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items = args, kwargs, None, []
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state) -> None:
        self.state = state

    def __setitem__(self, key, value) -> None:
        self.items.append((key, value))

    def append(self, value) -> None:
        self.items.append((None, value))

    def extend(self, values) -> None:
        for v in values:
            self.append(v)

    def __repr__(self) -> str:
        return f"<placeholder {self.origin}>"


def placeholder_class(dotted: str) -> type:
    """A fresh inert class standing for the global ``dotted`` (``mylib.Net``)."""
    name = dotted.rsplit(".", 1)[-1] or "Unnamed"
    return type(name if name.isidentifier() else "Unnamed", (Placeholder,), {"origin": dotted,
                                                                               "__module__": "placeholder"})


def python3_name(module: str, name: str) -> str:
    """The name Python 3 imports for a global (``__builtin__ exec`` -> ``builtins.exec``)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come from ``reconstructors`` or are placeholders.

    ``persistent_load`` (a callable or None) answers persistent ids; without one they are refused.
    """

    def __init__(self, file, reconstructors: dict[str, Reconstructor], persistent_load=None):
        super().__init__(file, encoding="latin1")
        self.reconstructors = reconstructors
        self.named: list[str] = []
        self.placeholders: dict[str, type] = {}
        self._persistent = persistent_load

    def find_class(self, module, name):
        dotted = python3_name(str(module), str(name))
        if dotted not in self.named:
            self.named.append(dotted)
        if dotted in self.reconstructors:
            return self.reconstructors[dotted]
        if dotted not in self.placeholders:
            self.placeholders[dotted] = placeholder_class(dotted)
        return self.placeholders[dotted]

    def persistent_load(self, pid):
        if self._persistent is None:
            raise pickle.UnpicklingError("persistent id in a pickle that has no external data")
        return self._persistent(pid)


# --- plain Python reconstructors ---------------------------------------------------------

def _encode(text, encoding="utf-8"):
    """``_codecs.encode`` as protocol 2 pickles use it for bytes: latin-1 text only."""
    if not isinstance(text, str) or codecs.lookup(str(encoding)).name not in ("iso8859-1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode used for something other than latin-1 bytes")
    return text.encode("latin-1")


def _reconstructor(cls, base, state=None):
    """``copyreg._reconstructor`` (protocol 0/1 objects): only placeholders are made this way."""
    if isinstance(cls, type) and issubclass(cls, Placeholder):
        obj = cls.__new__(cls)
        obj.state = state
        return obj
    raise pickle.UnpicklingError("copyreg._reconstructor on a type winspect does not build")


def _container(cls):
    def build(*args):
        if len(args) > 1 or (args and not isinstance(args[0], (list, tuple, set, frozenset, dict, str, bytes))):
            raise pickle.UnpicklingError(f"{cls.__name__} built from {type(args[0]).__name__}")
        return cls(*args)

    return build


def _number(kind):
    """``int``/``float``/``bool``/``complex`` called with at most one plain number or short string."""

    def build(*args):
        plain = all(isinstance(x, (int, float, str, bytes)) for x in args)
        if len(args) > 1 or not plain or (args and isinstance(args[0], (str, bytes)) and len(args[0]) > 4300):
            raise pickle.UnpicklingError(f"{cls.__name__} built from an unexpected value")
        return cls(*args)

    return build


BUILTIN_RECONSTRUCTORS: dict[str, Reconstructor] = {
    "collections.OrderedDict": _container(collections.OrderedDict),
    "builtins.set": _container(set),
    "builtins.frozenset": _container(frozenset),
    "builtins.list": _container(list),
    "builtins.tuple": _container(tuple),
    "builtins.dict": _container(dict),
    "builtins.bytearray": _container(bytearray),
    "builtins.bytes": _container(bytes),
    "builtins.slice": slice,
    "_codecs.encode": _encode,
    "copyreg._reconstructor": _reconstructor,
    **{f"builtins.{k.__name__}": _number(k) for k in (int, float, bool, complex)},
}


# --- NumPy arrays and scalars, from raw bytes ------------------------------------------

PLAIN_DTYPE = re.compile(r"[<>|=]?(b1|[iu][1248]|f[248]|c(8|16))")
MAX_ARRAY_BYTES = 1 << 34


class DtypeStub:
    """What ``numpy.dtype(code, align, copy)`` builds in a pickle: the code and, after BUILD, a byte order."""

    def __init__(self, code, align=False, copy=True):
        self.code = str(code)
        self.order = "="
        self.refused = None if PLAIN_DTYPE.fullmatch(self.code) else f"numpy dtype {self.code!r:.20}"
        if self.code.lstrip("<>|=").startswith("O"):
            self.refused = "numpy object array: its elements are Python objects"

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) < 2:
            self.refused = "numpy dtype with a malformed state"
            return
        if state[1] in ("<", ">", "|", "="):
            self.order = state[1]
        if len(state) > 3 and (state[2] is not None or state[3] is not None):
            self.refused = "numpy structured dtype"

    def resolve(self) -> np.dtype:
        if self.refused:
            raise _Refused(self.refused)
        return np.dtype(self.code).newbyteorder(self.order if self.order != "|" else "=")


class _Refused(Exception):
    pass


class ArrayStub:
    """``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')``: becomes an array on BUILD."""

    def __init__(self, *args):
        self.array: np.ndarray | Unreadable = Unreadable("numpy array without state")

    def __setstate__(self, state) -> None:
        try:
            self.array = rebuild_array(state)
        except _Refused as e:
            self.array = Unreadable(str(e))


def rebuild_array(state) -> np.ndarray:
    """An ndarray from ``(version, shape, dtype, is_fortran, rawdata)``, built from the bytes only."""
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        raise _Refused("numpy array with a malformed state")
    shape, dtype, fortran, raw = state[-4:]
    if not isinstance(dtype, DtypeStub):
        raise _Refused("numpy array of an unknown dtype")
    dt = dtype.resolve()
    if not (isinstance(shape, tuple) and all(isinstance(s, int) and 0 <= s for s in shape) and len(shape) <= 64):
        raise _Refused("numpy array with an invalid shape")
    if not isinstance(raw, (bytes, bytearray)):
        raise _Refused("numpy object array (its elements are Python objects)")
    if math.prod(shape) * dt.itemsize != len(raw) or len(raw) > MAX_ARRAY_BYTES:
        raise pickle.UnpicklingError(f"numpy array of shape {shape} does not match its {len(raw)} bytes")
    arr = np.frombuffer(bytes(raw), dtype=dt)
    return arr.reshape(shape, order="F" if fortran else "C")


def numpy_frombuffer(buf, dtype, shape, order="C"):
    """``numpy.core.numeric._frombuffer`` (protocol 5 arrays): the same checks as :func:`rebuild_array`."""
    try:
        return rebuild_array((shape, dtype, order == "F", bytes(buf) if isinstance(buf, bytearray) else buf))
    except _Refused as e:
        return Unreadable(str(e))


def numpy_scalar(dtype, raw=None):
    """``numpy.core.multiarray.scalar(dtype, bytes)``: the Python number it holds."""
    if not isinstance(dtype, DtypeStub):
        raise pickle.UnpicklingError("numpy scalar of an unknown dtype")
    try:
        dt = dtype.resolve()
    except _Refused as e:
        return Unreadable(str(e))
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != dt.itemsize:
        raise pickle.UnpicklingError("numpy scalar whose bytes do not match its dtype")
    return np.frombuffer(bytes(raw), dtype=dt)[0].item()


NUMPY_RECONSTRUCTORS: dict[str, Reconstructor] = {
    **{f"{m}.multiarray._reconstruct": ArrayStub for m in ("numpy.core", "numpy._core")},
    **{f"{m}.multiarray.scalar": numpy_scalar for m in ("numpy.core", "numpy._core")},
    **{f"{m}.numeric._frombuffer": numpy_frombuffer for m in ("numpy.core", "numpy._core")},
    "numpy.dtype": DtypeStub,
    "numpy.ndarray": ArrayStub,
}


def unwrap(value):
    """A rebuilt NumPy array in place of its stub (other values unchanged)."""
    return value.array if isinstance(value, ArrayStub) else value
