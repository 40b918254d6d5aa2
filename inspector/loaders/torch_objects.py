"""What a PyTorch pickle describes, rebuilt without torch: storages, tensors, parameters.

The reconstructors below are what :class:`~inspector.safety.restricted_unpickler.RestrictedUnpickler`
answers for torch's own globals (``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``,
``torch.bfloat16``, ...). They build plain descriptions -- a :class:`Storage` (element type, count,
where its bytes are) and a :class:`StoredTensor` (storage, offset, shape, strides, quantization) --
and read nothing: the bytes are located by the archive reader and read chunk by chunk later.
Tensors torch can hold but winspect does not read (sparse, nested, complex32, packed 4-bit) become
:class:`~inspector.safety.restricted_unpickler.Unreadable` values that a note names.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

from ..safety.restricted_unpickler import (BUILTIN_RECONSTRUCTORS, NUMPY_RECONSTRUCTORS, Placeholder,
                                           Unreadable, unwrap)

MAX_NDIM = 64
MAX_NUMEL = 1 << 48  # elements of one tensor (a petabyte of float32)
MAX_EXPANSION = 1 << 32  # elements of a view reading its storage's values more than 16 times over

# torch dtype names -> numpy element types (ml_dtypes for bf16 / f8)
DTYPES: dict[str, np.dtype] = {name: np.dtype(t) for name, t in {
    "float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
    "float8_e4m3fn": ml_dtypes.float8_e4m3fn, "float8_e5m2": ml_dtypes.float8_e5m2,
    "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz, "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "float8_e8m0fnu": ml_dtypes.float8_e8m0fnu,
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8,
    "uint64": np.uint64, "uint32": np.uint32, "uint16": np.uint16, "uint8": np.uint8, "bool": np.bool_,
    "complex64": np.complex64, "complex128": np.complex128,
    "qint8": np.int8, "quint8": np.uint8, "qint32": np.int32,
}.items()}
ALIASES = {"float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32",
           "short": "int16", "cfloat": "complex64", "cdouble": "complex128"}
QUANTIZED = ("qint8", "quint8", "qint32")
UNREAD_DTYPES = ("complex32", "chalf", "quint4x2", "quint2x4", "bits1x8", "bits2x4", "bits4x2", "bits8", "bits16")

# legacy typed storages -> torch dtype name
STORAGE_TYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "QInt8Storage": "qint8", "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32", "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
    "UntypedStorage": "uint8",
}


@dataclass(frozen=True)
class TorchDtype:
    """``torch.float32`` and friends, by name."""

    name: str

    @property
    def np_dtype(self) -> np.dtype | None:
        return DTYPES.get(self.name)


@dataclass(frozen=True)
class StorageType:
    """``torch.FloatStorage`` (typed) or ``torch.UntypedStorage`` (bytes: ``untyped``)."""

    name: str

    @property
    def dtype(self) -> TorchDtype:
        return TorchDtype(STORAGE_TYPES[self.name])

    @property
    def untyped(self) -> bool:
        return self.name == "UntypedStorage"


@dataclass(frozen=True)
class Named:
    """A torch constant that is only a name: a layout, a memory format, a quantization scheme, a device."""

    name: str


@dataclass(eq=False)
class Storage:
    """A run of ``numel`` elements of ``dtype`` (bytes for untyped storages), found by ``key`` in its archive.

    ``location`` is set by the archive reader: (file path, absolute byte offset, byte order '<' or '>').
    """

    key: str
    dtype: TorchDtype
    numel: int
    location: tuple | None = None
    element_offset: int = 0  # for a legacy storage view: where it starts inside its root storage
    root: "Storage | None" = None

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize

    @property
    def itemsize(self) -> int:
        dt = self.dtype.np_dtype
        return dt.itemsize if dt is not None else 1

    def base(self) -> tuple["Storage", int]:
        """The storage holding the bytes and this one's byte offset inside it."""
        if self.root is None:
            return self, 0
        root, off = self.root.base()
        return root, off + self.element_offset * self.itemsize


@dataclass(eq=False)
class StoredTensor:
    """A tensor as the pickle describes it: a view (offset, shape, strides in elements) of a storage."""

    storage: Storage
    offset: int
    shape: tuple
    stride: tuple
    dtype: TorchDtype
    requires_grad: bool = False
    quant: tuple | None = None  # ("tensor", scale, zero_point) or ("channel", scales, zero_points, axis)
    extra: dict = field(default_factory=dict)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return self.dtype.np_dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _size(size) -> tuple:
    size = tuple(size) if isinstance(size, (tuple, list)) else size
    if not isinstance(size, tuple) or len(size) > MAX_NDIM or not all(_is_count(s) for s in size):
        raise pickle.UnpicklingError(f"tensor with an invalid size {size!r:.80}")
    return size


def check_view(t: StoredTensor) -> None:
    """The view fits its storage: offsets and strides non-negative, the last element inside."""
    if not _is_count(t.offset) or len(t.stride) != len(t.shape) or not all(_is_count(s) for s in t.stride):
        raise pickle.UnpicklingError(f"tensor with invalid strides {t.stride!r:.80} or offset {t.offset!r:.40}")
    numel = t.numel
    if numel > MAX_NUMEL:
        raise pickle.UnpicklingError(f"tensor of shape {t.shape} declares {numel} elements")
    if numel == 0:
        return
    last = t.offset + sum((n - 1) * s for n, s in zip(t.shape, t.stride))
    available = t.storage.nbytes // t.itemsize
    if last >= available:
        raise pickle.UnpicklingError(f"tensor of shape {t.shape}, strides {t.stride}, offset {t.offset} needs "
                                     f"{last + 1} elements; its storage holds {available}")
    if numel > MAX_EXPANSION and numel > 16 * available:
        raise pickle.UnpicklingError(f"tensor of shape {t.shape} repeats its {available} stored elements "
                                     f"{numel // max(available, 1)} times over")


def _tensor(storage, offset, size, stride, dtype: TorchDtype | None = None, requires_grad=False, quant=None):
    if not isinstance(storage, Storage):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    dtype = dtype or storage.dtype
    if not isinstance(dtype, TorchDtype):
        raise pickle.UnpicklingError("tensor of an unknown dtype")
    if dtype.name in UNREAD_DTYPES or dtype.np_dtype is None:
        return Unreadable(f"{dtype.name} tensor")
    t = StoredTensor(storage, offset, _size(size), _size(stride), dtype, bool(requires_grad), quant)
    check_view(t)
    return t


def rebuild_tensor(storage, storage_offset, size, stride, *rest):
    """``_rebuild_tensor`` and ``_rebuild_tensor_v2`` (requires_grad, backward_hooks, metadata)."""
    return _tensor(storage, storage_offset, size, stride, requires_grad=rest[0] if rest else False)


def rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    return _tensor(storage, storage_offset, size, stride, dtype, requires_grad)


def rebuild_qtensor(storage, storage_offset, size, stride, quantizer_params, requires_grad=False, hooks=None):
    """Quantized tensors: per-tensor and per-channel affine schemes are read as real values."""
    scheme = quantizer_params[0] if isinstance(quantizer_params, tuple) and quantizer_params else None
    name = scheme.name if isinstance(scheme, Named) else "?"
    if name in ("per_tensor_affine", "per_tensor_symmetric") and len(quantizer_params) == 3:
        _, scale, zero_point = quantizer_params
        if not isinstance(scale, float) or not isinstance(zero_point, int):
            raise pickle.UnpicklingError("quantized tensor with an invalid scale or zero point")
        quant = ("tensor", scale, zero_point)
    elif name in ("per_channel_affine", "per_channel_symmetric") and len(quantizer_params) == 4:
        _, scales, zero_points, axis = quantizer_params
        if not (isinstance(scales, StoredTensor) and isinstance(zero_points, StoredTensor) and _is_count(axis)):
            raise pickle.UnpicklingError("per-channel quantized tensor with invalid scales or axis")
        quant = ("channel", scales, zero_points, axis)
    else:
        return Unreadable(f"quantized tensor ({name})")
    t = _tensor(storage, storage_offset, size, stride, requires_grad=requires_grad, quant=quant)
    if isinstance(t, StoredTensor) and quant[0] == "channel":
        axis = quant[3]
        if axis >= len(t.shape) or quant[1].numel != t.shape[axis] or quant[2].numel != t.shape[axis]:
            raise pickle.UnpicklingError("per-channel quantized tensor whose scales do not match its axis")
    return t


def rebuild_parameter(data, requires_grad=True, backward_hooks=None, state=None):
    """``nn.Parameter``: the tensor it wraps, marked as requiring grad."""
    if isinstance(data, StoredTensor):
        data.requires_grad = bool(requires_grad)
    return data


def rebuild_from_type(func, new_type, args, state=None):
    """A tensor subclass: the tensor ``func(*args)`` builds when ``func`` is one of ours."""
    if callable(func) and not (isinstance(func, type) and issubclass(func, Placeholder)) and isinstance(args, tuple):
        return func(*args)
    return Unreadable("tensor subclass built by an unknown function")


def _unreadable(what: str):
    def build(*args, **kwargs):
        return Unreadable(what)

    return build


def _identity(value=None, *rest):
    return unwrap(value)


def _torch_names() -> dict:
    table: dict = {}
    for name in list(DTYPES) + list(UNREAD_DTYPES) + list(ALIASES):
        table[f"torch.{name}"] = TorchDtype(ALIASES.get(name, name))
    for name in STORAGE_TYPES:
        table[f"torch.{name}"] = StorageType(name)
        table[f"torch.cuda.{name}"] = StorageType(name)
    table["torch.storage.UntypedStorage"] = StorageType("UntypedStorage")
    for name in ("per_tensor_affine", "per_channel_affine", "per_tensor_symmetric", "per_channel_symmetric",
                 "per_channel_affine_float_qparams", "strided", "sparse_coo", "sparse_csr", "sparse_csc",
                 "sparse_bsr", "sparse_bsc", "_mkldnn", "contiguous_format", "channels_last", "channels_last_3d",
                 "preserve_format"):
        table[f"torch.{name}"] = Named(name)
    return table


TORCH_RECONSTRUCTORS = {
    **BUILTIN_RECONSTRUCTORS,
    **NUMPY_RECONSTRUCTORS,
    **_torch_names(),
    "torch._utils._rebuild_tensor": rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": rebuild_tensor,
    "torch._utils._rebuild_tensor_v3": rebuild_tensor_v3,
    "torch._utils._rebuild_qtensor": rebuild_qtensor,
    "torch._utils._rebuild_parameter": rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": rebuild_parameter,
    "torch._tensor._rebuild_from_type": rebuild_from_type,
    "torch._tensor._rebuild_from_type_v2": rebuild_from_type,
    "torch._utils._rebuild_sparse_tensor": _unreadable("sparse tensor"),
    "torch._utils._rebuild_sparse_csr": _unreadable("sparse tensor"),
    "torch._utils._rebuild_nested_tensor": _unreadable("nested tensor"),
    "torch._utils._rebuild_meta_tensor_no_storage": _unreadable("tensor without data (meta device)"),
    "torch._utils._rebuild_wrapper_subclass": _unreadable("tensor subclass without storage"),
    "torch._utils._rebuild_device_tensor_from_numpy": _unreadable("device tensor"),
    "torch._utils._rebuild_mkldnn_tensor": _unreadable("mkldnn tensor"),
    "torch.Size": lambda *a: tuple(*a),
    "torch.device": lambda *a: Named(str(a[0]) if a else "cpu"),
    "torch.serialization._get_layout": lambda name="": Named(str(name)),
    "torch.nn.parameter.Parameter": rebuild_parameter,
    "torch.jit._pickle.build_intlist": _identity,
    "torch.jit._pickle.build_doublelist": _identity,
    "torch.jit._pickle.build_boollist": _identity,
    "torch.jit._pickle.build_tensorlist": _identity,
    "torch.jit._pickle.build_complexlist": _identity,
    "torch.jit._pickle.restore_type_tag": _identity,
}
