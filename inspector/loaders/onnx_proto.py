"""The parts of an ONNX model that hold or use weights, read from its protobuf without onnx.

:func:`read_model` walks ``ModelProto → GraphProto`` (and every subgraph of ``If``,
``Loop``, ``Scan`` …) with the bounded wire reader of :mod:`inspector.safety.protobuf`
and returns plain descriptions: each tensor's name, type, dims and *where its values
lie* (a byte range of ``raw_data``, the ranges of a typed field such as ``float_data``,
an external file, or a sparse pair), and each node's op type, name, inputs, outputs and
the few integer attributes the loader needs. No tensor value is read here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CorruptCheckpoint
from ..safety.protobuf import I32, I64, LEN, VARINT, Field, ProtoFile, signed64

MAX_DEPTH = 32  # nested subgraphs
MAX_DIMS = 64
MAX_NUMEL = 1 << 56

# TensorProto field numbers of the typed value fields, and their element wire types
FLOAT_DATA, INT32_DATA, STRING_DATA, INT64_DATA, DOUBLE_DATA, UINT64_DATA = 4, 5, 6, 7, 10, 11
TYPED_WIRE = {FLOAT_DATA: I32, INT32_DATA: VARINT, INT64_DATA: VARINT, DOUBLE_DATA: I64, UINT64_DATA: VARINT}


@dataclass
class Region:
    """Where some values of a repeated numeric field lie: ``packed`` values in ``[start, end)``,
    or a run of unpacked fields (tags included) in ``[start, end)``; ``wire`` is the element's."""

    wire: int
    packed: bool
    start: int
    end: int
    number: int  # the field number (unpacked runs are re-read by it)


@dataclass
class TensorInfo:
    name: str
    data_type: int = 0
    dims: tuple[int, ...] = ()
    raw: tuple[int, int] | None = None  # (offset, length) of raw_data in the model file
    typed: list[Region] = field(default_factory=list)
    external: dict[str, str] | None = None
    value: np.ndarray | None = None  # a Constant's value_float / value_int
    sparse: tuple["TensorInfo", "TensorInfo"] | None = None  # (values, indices)
    where: str = "initializer"
    segmented: bool = False

    @property
    def numel(self) -> int:
        return math.prod(self.dims)


@dataclass
class Node:
    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    domain: str = ""
    ints: dict[str, int] = field(default_factory=dict)  # integer attributes (axis, transB, block_size ...)


@dataclass
class Model:
    tensors: list[TensorInfo] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    ir_version: int | None = None
    producer: str = ""
    opsets: dict[str, int] = field(default_factory=dict)
    functions: int = 0


class OnnxReader:
    def __init__(self, pf: ProtoFile):
        self.pf = pf
        self.model = Model()

    def read(self) -> Model:
        pf, m = self.pf, self.model
        graphs = 0
        producer = ["", ""]
        for f in pf.fields(0, pf.size):
            if f.number == 1 and f.wire == VARINT:
                m.ir_version = f.value
            elif f.number in (2, 3) and f.wire == LEN:
                producer[f.number - 2] = pf.text(f, 4096)
            elif f.number == 7 and f.wire == LEN:
                graphs += 1
                self.graph(f, 0, "")
            elif f.number == 8 and f.wire == LEN:
                self.opset(f)
            elif f.number == 25 and f.wire == LEN:
                m.functions += 1
        if graphs != 1:
            raise CorruptCheckpoint(f"{pf.path}: an ONNX model holds one graph, this file {graphs}")
        m.producer = " ".join(p for p in producer if p)
        return m

    def opset(self, f: Field) -> None:
        domain, version = "", 0
        for g in self.pf.fields(f.value, f.value + f.length):
            if g.number == 1 and g.wire == LEN:
                domain = self.pf.text(g, 1024)
            elif g.number == 2 and g.wire == VARINT:
                version = g.value
        self.model.opsets[domain or "ai.onnx"] = version

    def graph(self, f: Field, depth: int, owner: str) -> None:
        if depth > MAX_DEPTH:
            raise self.pf.fail(f"subgraphs nested more than {MAX_DEPTH} deep", f.start)
        for g in self.pf.fields(f.value, f.value + f.length):
            if g.wire != LEN:
                continue
            if g.number == 1:
                self.node(g, depth)
            elif g.number == 5:
                self.model.tensors.append(self.tensor(g, "initializer" + owner))
            elif g.number == 15:
                self.model.tensors.append(self.sparse(g, "sparse initializer" + owner))

    def node(self, f: Field, depth: int) -> None:
        pf = self.pf
        node = Node("", "", [], [])
        attributes = []
        for g in pf.fields(f.value, f.value + f.length):
            if g.wire != LEN:
                continue
            if g.number == 1:
                node.inputs.append(pf.text(g))
            elif g.number == 2:
                node.outputs.append(pf.text(g))
            elif g.number == 3:
                node.name = pf.text(g)
            elif g.number == 4:
                node.op_type = pf.text(g, 1024)
            elif g.number == 7:
                node.domain = pf.text(g, 1024)
            elif g.number == 5:
                attributes.append(g)
        self.model.nodes.append(node)
        for g in attributes:
            self.attribute(g, node, depth)

    def attribute(self, f: Field, node: Node, depth: int) -> None:
        pf = self.pf
        name, parts = "", []
        for g in pf.fields(f.value, f.value + f.length):
            if g.number == 1 and g.wire == LEN:
                name = pf.text(g, 1024)
            else:
                parts.append(g)
        owner = f" of {node.op_type} node {node.name or node.outputs[:1]}"
        for g in parts:
            if g.number == 3 and g.wire == VARINT:
                node.ints[name] = signed64(g.value)
            elif g.number in (6, 11) and g.wire == LEN:  # g, graphs: subgraphs (If, Loop, Scan ...)
                self.graph(g, depth + 1, f" in a subgraph{owner}")
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.outputs:
            self.constant(name, parts, node.outputs[0], f"Constant node {node.name or node.outputs[0]}")

    def constant(self, attr: str, parts: list[Field], output: str, where: str) -> None:
        pf, t = self.pf, None
        for g in parts:
            if attr == "value" and g.number == 5 and g.wire == LEN:
                t = self.tensor(g, where)
            elif attr == "sparse_value" and g.number == 22 and g.wire == LEN:
                t = self.sparse(g, where)
            elif attr == "value_float" and g.number == 2 and g.wire == I32:
                t = TensorInfo(output, 1, (), value=np.array(pf.fixed(g, "<f4"), np.float32), where=where)
            elif attr == "value_int" and g.number == 3 and g.wire == VARINT:
                t = TensorInfo(output, 7, (), value=np.array(signed64(g.value), np.int64), where=where)
        if attr in ("value_floats", "value_ints"):
            number, dtype, wire = (7, 1, I32) if attr == "value_floats" else (8, 7, VARINT)
            t = TensorInfo(output, dtype, (0,), where=where)
            for g in parts:
                if g.number == number:
                    add_region(t.typed, g, wire, pf)
            t.dims = (sum(region_count(pf, r) for r in t.typed),)
        if t is not None:
            t.name = output
            self.model.tensors.append(t)

    def tensor(self, f: Field, where: str) -> TensorInfo:
        pf = self.pf
        t = TensorInfo("", where=where)
        dims: list[int] = []
        location = 0
        for g in pf.fields(f.value, f.value + f.length):
            n = g.number
            if n == 1:
                dims.extend(self.ints_of(g))
            elif n == 2 and g.wire == VARINT:
                t.data_type = g.value
            elif n == 3:
                t.segmented = True
            elif n == 8 and g.wire == LEN:
                t.name = pf.text(g)
            elif n == 9 and g.wire == LEN:
                t.raw = (g.value, g.length)
            elif n in TYPED_WIRE:
                add_region(t.typed, g, TYPED_WIRE[n], pf)
            elif n == STRING_DATA:
                t.typed.append(Region(LEN, False, g.start, g.value + g.length, n))
            elif n == 13 and g.wire == LEN:
                key, value = self.entry(g)
                t.external = t.external or {}
                t.external[key] = value
            elif n == 14 and g.wire == VARINT:
                location = g.value
        t.dims = self.checked_dims(dims, t.name, f.start)
        if location != 1:
            t.external = None
        elif t.external is None:
            t.external = {}
        return t

    def sparse(self, f: Field, where: str) -> TensorInfo:
        values = indices = None
        dims: list[int] = []
        for g in self.pf.fields(f.value, f.value + f.length):
            if g.number == 1 and g.wire == LEN:
                values = self.tensor(g, where)
            elif g.number == 2 and g.wire == LEN:
                indices = self.tensor(g, where)
            elif g.number == 3:
                dims.extend(self.ints_of(g))
        if values is None or indices is None:
            raise self.pf.fail("sparse tensor without values or indices", f.start)
        name = values.name
        return TensorInfo(name, values.data_type, self.checked_dims(dims, name, f.start),
                          sparse=(values, indices), where=where)

    def entry(self, f: Field) -> tuple[str, str]:
        key = value = ""
        for g in self.pf.fields(f.value, f.value + f.length):
            if g.number == 1 and g.wire == LEN:
                key = self.pf.text(g, 1024)
            elif g.number == 2 and g.wire == LEN:
                value = self.pf.text(g, 1 << 16)
        return key, value

    def ints_of(self, g: Field) -> list[int]:
        """A repeated int64 field's values from one occurrence (packed or not)."""
        if g.wire == VARINT:
            return [signed64(g.value)]
        if g.wire != LEN:
            raise self.pf.fail(f"field {g.number} of wire type {g.wire} where integers belong", g.start)
        out, pos, end = [], g.value, g.value + g.length
        while pos < end:
            if len(out) > MAX_DIMS:
                raise self.pf.fail(f"more than {MAX_DIMS} dims", g.start)
            v, pos = self.pf.varint(pos, end)
            out.append(signed64(v))
        return out

    def checked_dims(self, dims: list[int], name: str, pos: int) -> tuple[int, ...]:
        if len(dims) > MAX_DIMS:
            raise self.pf.fail(f"tensor {name!r} has {len(dims)} dims (at most {MAX_DIMS} read)", pos)
        numel = 1
        for d in dims:
            if d < 0:
                raise self.pf.fail(f"tensor {name!r} has a negative dim {d}", pos)
            numel *= d
            if numel > MAX_NUMEL:
                raise self.pf.fail(f"tensor {name!r} has dims {dims} whose product is absurdly large", pos)
        return tuple(dims)


def add_region(regions: list[Region], g: Field, wire: int, pf: ProtoFile) -> None:
    """Record where one occurrence of a repeated numeric field lies; runs of unpacked
    occurrences next to each other are kept as one region."""
    if g.wire == LEN:
        regions.append(Region(wire, True, g.value, g.value + g.length, g.number))
        return
    if g.wire != wire:
        raise pf.fail(f"field {g.number} has wire type {g.wire}, expected {wire}", g.start)
    end = g.value + g.length if g.wire != VARINT else _varint_end(pf, g)
    last = regions[-1] if regions else None
    if last is not None and not last.packed and last.number == g.number and last.end == g.start:
        last.end = end
    else:
        regions.append(Region(wire, False, g.start, end, g.number))


def region_count(pf: ProtoFile, r: Region) -> int:
    """How many values a region holds (packed varints are counted by their last bytes)."""
    if r.packed and r.wire in (I32, I64):
        width = 4 if r.wire == I32 else 8
        if (r.end - r.start) % width:
            raise pf.fail(f"packed field {r.number} of {r.end - r.start} bytes is not a whole number of "
                          f"{width}-byte values", r.start)
        return (r.end - r.start) // width
    if r.packed:
        return int(np.count_nonzero(np.frombuffer(pf.data, np.uint8, r.end - r.start, r.start) < 0x80))
    return sum(1 for g in pf.fields(r.start, r.end) if g.number == r.number)


def _varint_end(pf: ProtoFile, g: Field) -> int:
    _, pos = pf.varint(g.start, pf.size)  # the tag
    _, pos = pf.varint(pos, pf.size)
    return pos


def read_model(path: Path) -> tuple[ProtoFile, Model]:
    """The open model file and what it holds; CorruptCheckpoint when the protobuf is malformed."""
    pf = ProtoFile(path, "ONNX protobuf")
    try:
        return pf, OnnxReader(pf).read()
    except BaseException:
        pf.close()
        raise
