"""ONNX models (``.onnx``, with external data beside them), read without the onnx package.

Tensors are graph initializers, sparse initializers and ``Constant`` node values, in the
main graph and in every subgraph. Each gets its kind, output axis and (for opaque names
such as ``onnx::Conv_123``) its layer from the node that consumes it. Quantized weights
are read as their real values ``(q - zero_point) * scale``, per tensor, per axis or per
block, with the stored type kept in ``dtype``; their scales and zero points are kind
``other``. The model is never run or deserialised: its protobuf is walked field by field
(:mod:`.onnx_proto`) and the values are read where they lie (:mod:`.onnx_data`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import CorruptCheckpoint, UnsupportedSource
from ..kinds import default_out_axis, infer_kinds
from ..records import TensorRecord, layer_of
from ..safety.protobuf import LEN, VARINT
from . import Loader, LoadOptions, OpenedSource, register
from .onnx_data import UNREAD_TYPES, DataContext, Values
from .onnx_ops import Graph, QuantSpec, Role, is_opaque, node_layer, normalise_axis, quant_specs
from .onnx_proto import TensorInfo, read_model

_MODEL_FIELDS = {1: VARINT, 2: LEN, 3: LEN, 4: LEN, 5: VARINT, 6: LEN, 7: LEN, 8: LEN, 14: LEN, 20: LEN, 25: LEN}


@dataclass(frozen=True)
class Dequantized:
    """Range reader of a quantized tensor's real values, ``(q - zero_point) * scale`` in float32.
    ``inner``/``dim``: the strides that find each value's index along the quantization axis;
    ``block``: values per scale along it (0: one scale per index)."""

    base: object  # range reader of the stored integers
    scale: np.ndarray
    zero_point: np.ndarray
    inner: int
    dim: int
    block: int

    def __call__(self, start: int, stop: int, max_elems: int) -> Iterator[np.ndarray]:
        pos = start
        for q in self.base(start, stop, max_elems):
            yield self.real(q, pos)
            pos += q.size

    def real(self, q: np.ndarray, pos: int) -> np.ndarray:
        if self.scale.size == 1:
            return (q.astype(np.float32) - self.zero_point.reshape(-1)[0]) * self.scale.reshape(-1)[0]
        flat = np.arange(pos, pos + q.size, dtype=np.int64)
        idx = (flat // self.inner) % self.dim
        if self.block:
            outer = flat // (self.inner * self.dim)
            nblocks = -(-self.dim // self.block)
            idx = (outer * nblocks + idx // self.block) * self.inner + flat % self.inner
        return (q.astype(np.float32) - self.zero_point[idx]) * self.scale[idx]


class OnnxSource(OpenedSource):
    def __init__(self, source: str, path: Path):
        super().__init__(source, "onnx")
        self.pf, model = read_model(path)
        try:
            self._setup(model)
        except BaseException:
            self.pf.close()
            raise

    def _setup(self, model) -> None:
        self.ctx = DataContext(self.pf)
        self.graph = Graph(model.nodes)
        seen = Counter(t.name for t in model.tensors)
        dup = next((n for n, c in seen.items() if c > 1), None)
        if dup is not None:
            raise CorruptCheckpoint(f"{self.pf.path}: tensor name {dup!r} is defined twice")
        self.infos = {t.name: t for t in model.tensors}
        self.quant = quant_specs(self.graph, model.nodes, set(self.infos))
        self.params = {s: q for q, spec in self.quant.items() for s in (*spec.scales, spec.zero_point) if s}
        self.entries: list[tuple[TensorInfo, Values]] = []
        for t in model.tensors:
            if t.data_type in UNREAD_TYPES:
                self.note(f"{t.name}: {UNREAD_TYPES[t.data_type]} values, not read")
                continue
            self.entries.append((t, self.ctx.values(t)))
        self.kinds = infer_kinds([(t.name, t.dims) for t, _ in self.entries])
        self._describe(model)

    def _describe(self, model) -> None:
        opset = model.opsets.get("ai.onnx")
        self.meta["metadata"] = {k: str(v) for k, v in (("ir_version", model.ir_version), ("opset", opset),
                                                        ("producer", model.producer)) if v}
        self.paths = external_files(self.pf.path, self.ctx, self.entries)
        self.meta["files"] = [str(p) for p in self.paths]
        if self.quant:
            self.note(f"{len(self.quant)} quantized tensors reported as their real values (q - zero_point) * scale, "
                      "dtype as stored; their scales and zero points are kind other")
        if model.functions:
            self.note(f"{model.functions} model-local functions: their constants are not read")

    def totals(self) -> tuple[int, int]:
        return len(self.entries), sum(v.nbytes for _, v in self.entries)

    def close(self) -> None:
        self.pf.close()

    def records(self) -> Iterator[TensorRecord]:
        for t, v in self.entries:
            yield self.record(t, v)

    def record(self, t: TensorInfo, v: Values) -> TensorRecord:
        spec = self.quant.get(t.name)
        role = self._role(t, spec)
        kind = role.kind if role else self.kinds[t.name]
        if kind == "weight" and (len(t.dims) < 2 or (spec is None and v.dtype.kind not in "fV")):
            kind = "other"  # shape tables, index lists: not matrices of a layer
        if t.name in self.params:
            kind = "other"
        axis = normalise_axis(role.axis, len(t.dims)) if role and kind == "weight" else (
            None if role else default_out_axis(kind, t.dims, t.name))
        owner = self.params.get(t.name)  # a scale or zero point belongs to its weight's layer
        layer = self._layer(self.infos[owner], self._role(self.infos[owner], self.quant[owner])) if owner else \
            self._layer(t, role)
        rec = TensorRecord(name=t.name, kind=kind, np_dtype=v.dtype, shape=t.dims, reader=v.reader, layer=layer,
                           out_axis=axis, module_type=role.node.op_type if role else None, nbytes=v.nbytes,
                           range_reader=v.range_reader, stored_dtype=v.stored)
        if spec is not None:
            self._dequantize(rec, t, v, spec)
        return rec

    @staticmethod
    def _layer(t: TensorInfo, role: Role | None) -> str:
        """The name's module path, or the consuming node's when the name is opaque (onnx::Conv_12)."""
        return node_layer(role.node) if role and is_opaque(t.name) and role.node.name else layer_of(t.name)

    def _role(self, t: TensorInfo, spec: QuantSpec | None) -> Role | None:
        """What the consuming node says; a dequantized tensor's is said by its output's consumer."""
        role = self.graph.role(spec.output) if spec is not None and spec.output else None
        return role or self.graph.role(t.name)

    def _dequantize(self, rec: TensorRecord, t: TensorInfo, v: Values, spec: QuantSpec) -> None:
        """Make the record yield real values: (q - zero_point) * scale along the spec's axis."""
        scale, zp = self._params(t, spec)
        dims, axis = t.dims, None
        if scale.size > 1 and spec.axis is not None and -len(dims) <= spec.axis < len(dims):
            axis = spec.axis % len(dims)
        if scale.size > 1 and axis is None:
            raise self._bad(t, f"has {scale.size} scales but no axis to apply them along")
        dim = dims[axis] if axis is not None else 1
        inner = math.prod(dims[axis + 1 :]) if axis is not None else 1
        block = spec.block_size if spec.block_size > 0 and scale.size > 1 else 0
        want = (t.numel // dim if dim else 0) * -(-dim // block) if block else dim
        if scale.size > 1 and scale.size != want:
            raise self._bad(t, f"of shape {list(dims)} has {scale.size} scales along axis {axis}, expected {want}")
        base = v.range_reader or (lambda s, e, n, r=v.reader: _slice(r, s, e, n))
        deq = Dequantized(base, scale, zp, inner, dim, block)
        rec.np_dtype = np.dtype(np.float32)
        rec.reader = lambda n, d=deq, k=t.numel: d(0, k, n)
        rec.range_reader = deq if v.range_reader is not None else None

    def _params(self, t: TensorInfo, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray]:
        """Scale (the product of the spec's scales) and zero point, as float32 arrays of one size."""
        scale = np.ones(1, np.float32)
        for name in spec.scales:
            s = self.ctx.small(self.infos[name]).astype(np.float32).reshape(-1)
            if s.size == 0 or s.size != scale.size and 1 not in (s.size, scale.size):
                raise self._bad(t, f"has scales of {scale.size} and {s.size} values that do not combine")
            scale = scale * s
        zp = np.zeros(1, np.float32)
        if spec.zero_point:
            zp = self.ctx.small(self.infos[spec.zero_point]).astype(np.float32).reshape(-1)
        if zp.size not in (1, scale.size):
            raise self._bad(t, f"has {scale.size} scales but {zp.size} zero points")
        return scale, np.broadcast_to(zp, scale.shape).copy()

    def _bad(self, t: TensorInfo, problem: str) -> CorruptCheckpoint:
        return CorruptCheckpoint(f"{self.pf.path}: quantized tensor {t.name!r} {problem}")


def _slice(reader, start: int, stop: int, max_elems: int) -> Iterator[np.ndarray]:
    """Values [start, stop) of a reader that can only read from the beginning (only start=0 is used)."""
    pos = 0
    for chunk in reader(max_elems):
        lo, hi = max(start - pos, 0), min(stop - pos, chunk.size)
        if hi > lo:
            yield chunk[lo:hi]
        pos += chunk.size
        if pos >= stop:
            return


def external_files(path: Path, ctx: DataContext, entries) -> list[Path]:
    """The model file, then each external data file its tensors read (checked), each once."""
    out = [path]
    for t, v in entries:
        if t.external is not None:
            target = ctx.external(t, v.dtype)[0]
            if target not in out:
                out.append(target)
    return out


def looks_like_onnx(head: bytes) -> bool:
    """ModelProto as ONNX writers emit it: ir_version first (field 1, a small varint), then
    only ModelProto's own field numbers with their wire types."""
    if len(head) < 4 or head[0] != 0x08 or not 1 <= head[1] <= 30:
        return False
    pos, fields = 2, 0
    while pos < len(head) and fields < 3:
        tag = head[pos]
        number, wire = tag >> 3, tag & 7
        if tag >= 0x80 or _MODEL_FIELDS.get(number) != wire:
            return False
        fields += 1
        if wire != LEN or pos + 1 >= len(head) or head[pos + 1] >= 0x80:
            return True
        pos += 2 + head[pos + 1]
    return True


@register
class OnnxLoader(Loader):
    name = "onnx"
    title = "ONNX .onnx (weights embedded or as external data)"
    suffixes = (".onnx",)
    order = 80

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        return looks_like_onnx(head)

    @classmethod
    def files(cls, path: Path) -> list[Path]:
        with OnnxSource(str(path), path) as src:
            return src.files()

    @classmethod
    def open(cls, source: str, options: LoadOptions) -> OpenedSource:
        path = Path(source)
        if path.stat().st_size == 0:
            raise UnsupportedSource(f"{path}: file is empty")
        return OnnxSource(source, path)
