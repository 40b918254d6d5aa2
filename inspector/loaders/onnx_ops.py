"""What an ONNX tensor is, judged by the operator that consumes it.

An initializer has no module around it; the node that reads it says what it is:
``Conv`` input 1 is a weight with output channels on axis 0, ``Gemm`` input 1 has
them on axis 0 or 1 by ``transB``, ``BatchNormalization`` inputs 3 and 4 are running
statistics, and so on (:data:`ROLES`). Quantized weights are found through the nodes
that dequantize them (``DequantizeLinear``, ``QLinearConv``, ``QLinearMatMul``,
``MatMulInteger``, ``ConvInteger``): :func:`quant_specs` says which tensors hold the
scale and zero point of each, and along which axis.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..records import layer_of
from .onnx_proto import Node

W, B, N, BUF, Q = ("weight", 0), ("bias", None), ("norm", None), ("buffer", None), ("other", None)
_RNN = {1: ("weight", 1), 2: ("weight", 1), 3: B}
_NORM2 = {1: N, 2: N}

# op_type -> {input index: (kind, output axis)}; an axis "transB" is Gemm's, negative counts from the end
ROLES: dict[str, dict[int, tuple[str, int | str | None]]] = {
    "Conv": {1: W, 2: B},
    "ConvTranspose": {1: ("weight", 1), 2: B},
    "Gemm": {1: ("weight", "transB"), 2: B},
    "MatMul": {0: ("weight", -2), 1: ("weight", -1)},
    "LSTM": _RNN, "GRU": _RNN, "RNN": _RNN,
    "BatchNormalization": {1: N, 2: N, 3: BUF, 4: BUF},
    "LayerNormalization": _NORM2, "InstanceNormalization": _NORM2, "GroupNormalization": _NORM2,
    "RMSNormalization": {1: N}, "SimplifiedLayerNormalization": {1: N},
    "SkipLayerNormalization": {2: N, 3: N, 4: B}, "SkipSimplifiedLayerNormalization": {2: N},
    "Gather": {0: ("weight", None)},
    "QLinearConv": {3: W, 8: B, **{i: Q for i in (1, 2, 4, 5, 6, 7)}},
    "QLinearMatMul": {0: ("weight", -2), 3: ("weight", -1), **{i: Q for i in (1, 2, 4, 5, 6, 7)}},
    "QGemm": {3: ("weight", "transB"), 6: B, **{i: Q for i in (1, 2, 4, 5, 7, 8)}},
    "MatMulInteger": {0: ("weight", -2), 1: ("weight", -1), 2: Q, 3: Q},
    "ConvInteger": {1: W, 2: Q, 3: Q},
    "DequantizeLinear": {1: Q, 2: Q},
    "QuantizeLinear": {1: Q, 2: Q},
}
_BIAS_AFTER = ("MatMul", "Gemm", "Conv", "ConvTranspose", "MatMulInteger", "QLinearMatMul")


@dataclass
class Role:
    kind: str
    axis: int | None
    node: Node


@dataclass
class QuantSpec:
    """A tensor stored quantized: real value = (q - zero_point) * product of scales, per ``axis``
    (None: one scale for the whole tensor) and, with ``block_size``, per block along it."""

    node: Node
    scales: tuple[str, ...]
    zero_point: str | None
    axis: int | None
    block_size: int = 0
    output: str | None = None  # the dequantized tensor, whose consumer says what it is


class Graph:
    """Producers and consumers of every tensor name, across the graph and its subgraphs."""

    def __init__(self, nodes: list[Node]):
        self.consumers: dict[str, list[tuple[Node, int]]] = {}
        self.producer: dict[str, Node] = {}
        for node in nodes:
            for i, name in enumerate(node.inputs):
                if name:
                    self.consumers.setdefault(name, []).append((node, i))
            for name in node.outputs:
                self.producer.setdefault(name, node)

    def role(self, name: str) -> Role | None:
        """The first consumer of ``name`` that says what it is."""
        for node, i in self.consumers.get(name, ()):
            spec = ROLES.get(node.op_type, {}).get(i)
            if spec is not None:
                return Role(spec[0], _axis(spec[1], node), node)
            if node.op_type == "Add" and self._after_product(node, i):
                return Role("bias", None, node)
        return None

    def _after_product(self, node: Node, i: int) -> bool:
        other = node.inputs[1 - i] if len(node.inputs) == 2 else ""
        producer = self.producer.get(other)
        return producer is not None and producer.op_type in _BIAS_AFTER

    def first_consumer(self, name: str) -> Node | None:
        users = self.consumers.get(name)
        return users[0][0] if users else None


def _axis(axis, node: Node) -> int | None:
    if axis == "transB":
        return 0 if node.ints.get("transB", 0) else 1
    return axis


def normalise_axis(axis: int | None, ndim: int) -> int | None:
    if axis is None or ndim < 2:
        return None
    axis = axis + ndim if axis < 0 else axis
    return axis if 0 <= axis < ndim else None


def quant_specs(graph: Graph, nodes: list[Node], constants: set[str]) -> dict[str, QuantSpec]:
    """Tensor name -> how it is dequantized, for constant tensors that quantized nodes read."""
    specs: dict[str, QuantSpec] = {}
    for node in nodes:
        ins = node.inputs + [""] * 9

        def add(q: str, scales: tuple[str, ...], zp: str, axis: int | None, **kw) -> None:
            if q in constants and q not in specs and all(s in constants for s in scales):
                specs[q] = QuantSpec(node, scales, zp if zp in constants else None, axis, **kw)

        op = node.op_type
        if op == "DequantizeLinear":
            add(ins[0], (ins[1],), ins[2], node.ints.get("axis", 1), block_size=node.ints.get("block_size", 0),
                output=node.outputs[0] if node.outputs else None)
        elif op == "QLinearConv":
            add(ins[3], (ins[4],), ins[5], 0)
            add(ins[8], (ins[1], ins[4]), "", 0)
        elif op == "QLinearMatMul":
            add(ins[3], (ins[4],), ins[5], -1)
        elif op == "QGemm":
            add(ins[3], (ins[4],), ins[5], 0 if node.ints.get("transB", 0) else 1)
            add(ins[6], (ins[1], ins[4]), "", 0)
        elif op in ("MatMulInteger", "ConvInteger"):
            scale = dynamic_scale(graph, node, constants)
            add(ins[1], (scale,) if scale else (), ins[3], -1 if op == "MatMulInteger" else 0)
    return specs


def dynamic_scale(graph: Graph, node: Node, constants: set[str]) -> str | None:
    """The weight scale of an integer product as dynamic quantization writes it:
    ``MatMulInteger -> Cast -> Mul(·, s)`` where ``s = Mul(input scale, weight scale)``."""
    for cast, _ in graph.consumers.get(node.outputs[0] if node.outputs else "", ()):
        if cast.op_type != "Cast" or not cast.outputs:
            continue
        for mul, i in graph.consumers.get(cast.outputs[0], ()):
            if mul.op_type != "Mul" or len(mul.inputs) != 2:
                continue
            scales = graph.producer.get(mul.inputs[1 - i])
            if scales is not None and scales.op_type == "Mul":
                found = [s for s in scales.inputs if s in constants]
                if len(found) == 1:
                    return found[0]
    return None


def is_opaque(name: str) -> bool:
    """A name that says nothing about its layer: ``onnx::Conv_123``, ``123``, ``val_7``, or a
    node output path (``/conv1/Conv_output_0_scale``) that the node's own name says better."""
    return name.startswith(("onnx::", "/")) or layer_of(name) == ""


def node_layer(node: Node) -> str:
    """A layer path from a node's name: ``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``."""
    parts = [p for p in node.name.strip("/").split("/") if p]
    if len(parts) > 1:
        parts = parts[:-1]
    out: list[str] = []
    for p in parts:
        if out and p.startswith(out[-1] + "."):
            out[-1] = p
        else:
            out.append(p)
    return ".".join(out)
