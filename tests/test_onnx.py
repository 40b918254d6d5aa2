"""ONNX models: every table equals the onnx package's reading of the same file.

The ``onnx`` package is the reference here only (winspect never imports it): initializers
through ``onnx.numpy_helper``, dequantized weights through ``onnx.reference`` running a
``DequantizeLinear`` node, and hand-built models through ``onnx.helper`` (the real writer).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import inspector
from inspector import CorruptCheckpoint, UnsafeCheckpoint, UnsupportedSource
from inspector.cli import main
from inspector.loaders import open_source
from tests.helpers import assert_stats_match, varint

FIX = Path(__file__).resolve().parents[1] / "fixtures"
OPSET = [helper.make_opsetid("", 21)]


def dequantize(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int = 1, block: int = 0) -> np.ndarray:
    """The onnx reference implementation of DequantizeLinear on these inputs."""
    inputs = {"q": q, "s": scale}
    names = ["q", "s"] + (["z"] if zp is not None else [])
    if zp is not None:
        inputs["z"] = zp
    attrs = {"axis": axis} | ({"block_size": block} if block else {})
    node = helper.make_node("DequantizeLinear", names, ["y"], **attrs)
    return ReferenceEvaluator(node).run(None, inputs)[0]


def initializers(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def reference_values(path: Path) -> dict[str, np.ndarray]:
    """What each initializer holds, dequantized where a quantized node reads it."""
    model = onnx.load(str(path))
    arrays = initializers(path)
    out = dict(arrays)
    for node in model.graph.node:
        ins = list(node.input) + [""] * 9
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if node.op_type == "DequantizeLinear" and ins[0] in arrays:
            out[ins[0]] = dequantize(arrays[ins[0]], arrays[ins[1]], arrays.get(ins[2]), axis)
        elif node.op_type in ("QLinearConv", "QGemm"):
            w = ins[3]
            out[w] = dequantize(arrays[w], arrays[ins[4]], arrays[ins[5]], 0)
            bias = ins[8] if node.op_type == "QLinearConv" else ins[6]
            out[bias] = dequantize(arrays[bias], (arrays[ins[1]] * arrays[ins[4]]).astype(np.float32), None, 0)
        elif node.op_type == "MatMulInteger":
            scale = arrays[ins[1].replace("_quantized", "_scale")]
            out[ins[1]] = dequantize(arrays[ins[1]], scale, arrays[ins[3]])
    return out


ONNX_FIXTURES = ["digits_cnn.onnx", "digits_cnn_int8.onnx", "digits_cnn_uint8.onnx", "digits_cnn_dynamic.onnx",
                 "digits_cnn_external.onnx"]


@pytest.mark.parametrize("fixture", ONNX_FIXTURES)
def test_every_tensor_equals_the_onnx_reference(fixture):
    path = FIX / fixture
    ref = reference_values(path)
    stored = {t.name: onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name
              for t in onnx.load(str(path)).graph.initializer}
    result = inspector.inspect(path)
    t = result.tensors.set_index("name", drop=False)
    assert result.summary["format"] == "onnx"
    assert sorted(t.index) == sorted(ref)
    for name, values in ref.items():
        row = t.loc[name]
        assert row["dtype"] == stored[name], name
        assert row["shape"] == ("x".join(map(str, values.shape)) or "scalar"), name
        assert_stats_match(row, values)


DIGITS_ROLES = {  # name -> (kind, out_axis, layer, module_type)
    "onnx::Conv_32": ("weight", 0, "conv1", "Conv"),
    "onnx::Conv_33": ("bias", None, "conv1", "Conv"),
    "onnx::Conv_35": ("weight", 0, "conv2", "Conv"),
    "onnx::Conv_36": ("bias", None, "conv2", "Conv"),
    "fc1.weight": ("weight", 0, "fc1", "Gemm"),
    "fc1.bias": ("bias", None, "fc1", "Gemm"),
    "fc2.weight": ("weight", 0, "fc2", "Gemm"),
    "fc2.bias": ("bias", None, "fc2", "Gemm"),
}


def axis_of(row):
    return None if pd.isna(row["out_axis"]) else int(row["out_axis"])


@pytest.mark.parametrize("fixture", ["digits_cnn.onnx", "digits_cnn_external.onnx"])
def test_kinds_axes_and_layers_come_from_the_consuming_nodes(fixture):
    t = inspector.inspect(FIX / fixture).tensors.set_index("name")
    for name, (kind, axis, layer, op) in DIGITS_ROLES.items():
        row = t.loc[name]
        assert (row["kind"], axis_of(row), row["layer"], row["module_type"]) == (kind, axis, layer, op), name


def test_torch_export_matches_the_trained_state_dict():
    """The exported fully connected layers are the safetensors fixture's, value for value."""
    onnx_t = inspector.inspect(FIX / "digits_cnn.onnx").tensors.set_index("name")
    st = inspector.inspect(FIX / "digits_cnn.safetensors").tensors.set_index("name")
    for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        for col in ("neg_count", "zero_count", "pos_count", "min", "max", "l2_norm"):
            assert onnx_t.loc[name, col] == st.loc[name, col], (name, col)


def test_quantized_weights_report_real_values_with_the_stored_dtype():
    t = inspector.inspect(FIX / "digits_cnn_int8.onnx")
    rows = t.tensors.set_index("name")
    w = rows.loc["fc1.weight_quantized"]
    assert (w["dtype"], w["kind"], axis_of(w), w["layer"], w["module_type"]) == ("int8", "weight", 0, "fc1", "Gemm")
    conv = rows.loc["onnx::Conv_32_quantized"]
    assert (conv["kind"], axis_of(conv), conv["layer"]) == ("weight", 0, "conv1")
    assert rows.loc["fc1.bias_quantized", "kind"] == "bias"
    for name in ("fc1.weight_scale", "fc1.weight_zero_point", "input_scale"):
        assert rows.loc[name, "kind"] == "other", name
    assert rows.loc["onnx::Conv_32_scale", "layer"] == rows.loc["onnx::Conv_32_zero_point", "layer"] == "conv1"
    assert any("(q - zero_point) * scale" in n for n in t.summary["notes"])
    uint8 = inspector.inspect(FIX / "digits_cnn_uint8.onnx").tensors.set_index("name")
    u = uint8.loc["fc1.weight_quantized"]
    assert u["dtype"] == "uint8" and 0.4 < u["neg_frac"] < 0.6  # stored 0..255, about half negative as reals
    assert initializers(FIX / "digits_cnn_uint8.onnx")["fc1.weight_quantized"].min() >= 0
    dyn = inspector.inspect(FIX / "digits_cnn_dynamic.onnx").tensors.set_index("name")
    d = dyn.loc["fc1.weight_Transposed_quantized"]
    assert (d["kind"], axis_of(d), d["module_type"], d["layer"]) == ("weight", 1, "MatMulInteger", "fc1")


def test_quantized_signs_follow_the_float_weights():
    """Quantization keeps nearly every sign: the real values' negative counts are the float model's."""
    f = inspector.inspect(FIX / "digits_cnn.onnx").tensors.set_index("name")
    q = inspector.inspect(FIX / "digits_cnn_int8.onnx").tensors.set_index("name")
    for name in ("fc1.weight", "fc2.weight", "onnx::Conv_35"):
        assert abs(q.loc[name + "_quantized", "neg_count"] - f.loc[name, "neg_count"]) <= 0.02 * f.loc[name, "numel"]


# --- hand-built models --------------------------------------------------------------------------


def save(tmp_path: Path, nodes, inits, name="m.onnx", sparse=(), opset=OPSET, **kw) -> Path:
    graph = helper.make_graph(nodes, "g", [], [], initializer=inits, sparse_initializer=list(sparse))
    model = helper.make_model(graph, opset_imports=opset, **kw)
    path = tmp_path / name
    onnx.save_model(model, str(path))
    return path


def rows_of(path: Path) -> pd.DataFrame:
    return inspector.inspect(path).tensors.set_index("name")


RNG = np.random.default_rng(12)


def test_typed_fields_of_every_type_are_read(tmp_path):
    """Initializers written through the typed fields (float_data, int32_data with its f16/bf16/int8/
    bool/f8/int4 payloads, int64_data, double_data, uint64_data) rather than raw_data."""
    arrays = {
        "f32": RNG.normal(size=(3, 5)).astype(np.float32),
        "f64": RNG.normal(size=(7,)),
        "f16": RNG.normal(size=(4, 4)).astype(np.float16),
        "i8": RNG.integers(-128, 127, size=(9,)).astype(np.int8),
        "u8": RNG.integers(0, 255, size=(2, 3)).astype(np.uint8),
        "i16": RNG.integers(-3000, 3000, size=(5,)).astype(np.int16),
        "i32": RNG.integers(-2**31, 2**31 - 1, size=(6,)).astype(np.int32),
        "i64": RNG.integers(-2**62, 2**62, size=(6,)).astype(np.int64),
        "u64": RNG.integers(0, 2**63, size=(4,)).astype(np.uint64),
        "u32": RNG.integers(0, 2**32 - 1, size=(4,)).astype(np.uint32),
        "b": RNG.integers(0, 2, size=(5,)).astype(bool),
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.array(-2.5, np.float32),
    }
    inits = [numpy_helper.from_array(v, k) for k, v in arrays.items()]
    for t in inits:  # move the values from raw_data to the typed field
        t.ClearField("raw_data")
    inits = [helper.make_tensor(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape, v.reshape(-1).tolist())
             for k, v in arrays.items()]
    bf = RNG.normal(size=(3, 3)).astype(np.float32)
    inits.append(helper.make_tensor("bf16", TensorProto.BFLOAT16, bf.shape, bf.reshape(-1).tolist()))
    i4 = RNG.integers(-8, 7, size=(5,))
    inits.append(helper.make_tensor("i4", TensorProto.INT4, i4.shape, i4.tolist()))
    inits.append(helper.make_tensor("f8", TensorProto.FLOAT8E4M3FN, (4,), [0.5, -1.0, 2.0, -0.0]))
    path = save(tmp_path, [], inits)
    assert all(not t.raw_data for t in onnx.load(str(path)).graph.initializer)
    ref = initializers(path)
    rows = rows_of(path)
    for name, values in ref.items():
        assert_stats_match(rows.loc[name], values.astype(np.float64) if values.dtype.kind == "V" else values)
    assert rows.loc["i4", "dtype"] == "int4" and rows.loc["bf16", "dtype"] == "bfloat16"
    assert rows.loc["f8", "dtype"] == "float8_e4m3fn"


def test_raw_int4_and_uint4_are_unpacked(tmp_path):
    i4 = RNG.integers(-8, 8, size=(3, 5))  # odd count: a pad nibble
    u4 = RNG.integers(0, 16, size=(4, 4))
    inits = [helper.make_tensor("i4", TensorProto.INT4, i4.shape, i4.astype(np.int8),
                                raw=True),
             helper.make_tensor("u4", TensorProto.UINT4, u4.shape, u4.astype(np.uint8),
                                raw=True)]
    path = save(tmp_path, [], inits)
    ref = initializers(path)
    rows = rows_of(path)
    for name in ("i4", "u4"):
        assert_stats_match(rows.loc[name], ref[name].astype(np.int64))
    assert np.array_equal(ref["i4"].astype(np.int64), i4)


def test_constant_nodes_of_every_form(tmp_path):
    w = RNG.normal(size=(4, 3)).astype(np.float32)
    sparse_vals = numpy_helper.from_array(np.array([1.5, -2.0], np.float32), "sp")
    sparse = helper.make_sparse_tensor(sparse_vals, numpy_helper.from_array(np.array([1, 6], np.int64)), [2, 4])
    nodes = [
        helper.make_node("Constant", [], ["cw"], value=numpy_helper.from_array(w, "cw"), name="/fc/Constant"),
        helper.make_node("Constant", [], ["cf"], value_float=-0.25),
        helper.make_node("Constant", [], ["cfs"], value_floats=[1.0, -2.0, 3.5]),
        helper.make_node("Constant", [], ["ci"], value_int=-7),
        helper.make_node("Constant", [], ["cis"], value_ints=[3, -1, 0, 2**40]),
        helper.make_node("Constant", [], ["csp"], sparse_value=sparse),
        helper.make_node("MatMul", ["x", "cw"], ["y"], name="/fc/MatMul"),
    ]
    path = save(tmp_path, nodes, [])
    rows = rows_of(path)
    expect = {"cw": w, "cf": np.float32(-0.25), "cfs": np.array([1.0, -2.0, 3.5], np.float32), "ci": np.int64(-7),
              "cis": np.array([3, -1, 0, 2**40]), "csp": np.array([0, 1.5, 0, 0, 0, 0, -2.0, 0], np.float32)}
    for node in nodes[:5]:  # the reference evaluator returns no sparse outputs
        assert np.array_equal(ReferenceEvaluator(node).run(None, {})[0], expect[node.output[0]])
    for name, values in expect.items():
        assert_stats_match(rows.loc[name], values)
    assert (rows.loc["cw", "kind"], axis_of(rows.loc["cw"])) == ("weight", 1)
    assert rows.loc["csp", "shape"] == "2x4"


def test_sparse_initializers_with_linear_and_coordinate_indices(tmp_path):
    dense = np.zeros((3, 4), np.float32)
    dense[0, 1], dense[2, 3], dense[1, 0] = -1.0, 2.0, 0.5
    flat = np.flatnonzero(dense)
    coords = np.argwhere(dense)
    s1 = helper.make_sparse_tensor(numpy_helper.from_array(dense.reshape(-1)[flat], "lin"),
                                   numpy_helper.from_array(flat.astype(np.int64)), dense.shape)
    s2 = helper.make_sparse_tensor(numpy_helper.from_array(dense[tuple(coords.T)], "coo"),
                                   numpy_helper.from_array(coords.astype(np.int64)), dense.shape)
    path = save(tmp_path, [], [], sparse=[s1, s2])
    rows = inspector.inspect(path, chunk_elems=5).tensors.set_index("name")
    for name in ("lin", "coo"):
        assert_stats_match(rows.loc[name], dense)


def test_subgraphs_of_if_and_loop_are_read(tmp_path):
    inner_w = numpy_helper.from_array(RNG.normal(size=(2, 2)).astype(np.float32), "then_w")
    then = helper.make_graph([helper.make_node("Constant", [], ["then_c"], value_floats=[-1.0, 2.0])], "then", [],
                             [helper.make_tensor_value_info("then_c", TensorProto.FLOAT, [2])], [inner_w])
    other = helper.make_graph([helper.make_node("Constant", [], ["else_c"], value_floats=[3.0, 4.0])], "else", [],
                              [helper.make_tensor_value_info("else_c", TensorProto.FLOAT, [2])])
    body_w = numpy_helper.from_array(np.array([[0.0, -3.0]], np.float32), "body_w")
    nested = helper.make_node("If", ["cond"], ["n"], then_branch=then, else_branch=other)
    body = helper.make_graph([nested], "body", [], [], [body_w])
    nodes = [helper.make_node("Loop", ["", "cond"], [], body=body)]
    path = save(tmp_path, nodes, [numpy_helper.from_array(np.array(True), "cond")])
    rows = rows_of(path)
    assert {"cond", "then_w", "then_c", "else_c", "body_w"} <= set(rows.index)
    assert_stats_match(rows.loc["then_w"], numpy_helper.to_array(inner_w))
    assert_stats_match(rows.loc["else_c"], np.array([3.0, 4.0], np.float32))
    assert_stats_match(rows.loc["body_w"], numpy_helper.to_array(body_w))


def test_kinds_from_every_consuming_op(tmp_path):
    def f(name, *shape):
        return numpy_helper.from_array(RNG.normal(size=shape).astype(np.float32), name)

    inits = [f("ct.w", 3, 5, 2, 2), f("g0.w", 4, 6), f("g1.w", 6, 4), f("mm.w", 6, 7), f("mm.b", 7),
             f("lstm.W", 1, 16, 3), f("lstm.R", 1, 16, 4), f("lstm.B", 1, 32),
             f("bn.s", 5), f("bn.b", 5), f("bn.m", 5), f("bn.v", 5), f("ln.s", 6), f("ln.b", 6), f("emb", 10, 6),
             numpy_helper.from_array(np.array([0, 1], np.int64), "ids"), f("onnx::MatMul_9", 6, 2)]
    nodes = [
        helper.make_node("ConvTranspose", ["x", "ct.w"], ["a"]),
        helper.make_node("Gemm", ["x", "g0.w"], ["b"], transB=1),
        helper.make_node("Gemm", ["x", "g1.w"], ["c"]),
        helper.make_node("MatMul", ["x", "mm.w"], ["d"], name="/mm/MatMul"),
        helper.make_node("Add", ["d", "mm.b"], ["e"]),
        helper.make_node("LSTM", ["x", "lstm.W", "lstm.R", "lstm.B"], ["h"], hidden_size=4),
        helper.make_node("BatchNormalization", ["x", "bn.s", "bn.b", "bn.m", "bn.v"], ["i"]),
        helper.make_node("LayerNormalization", ["x", "ln.s", "ln.b"], ["j"]),
        helper.make_node("Gather", ["emb", "ids"], ["k"]),
        helper.make_node("MatMul", ["x", "onnx::MatMul_9"], ["l"], name="/encoder/layer.0/attn/MatMul"),
    ]
    rows = rows_of(save(tmp_path, nodes, inits))
    expect = {"ct.w": ("weight", 1), "g0.w": ("weight", 0), "g1.w": ("weight", 1), "mm.w": ("weight", 1),
              "mm.b": ("bias", None), "lstm.W": ("weight", 1), "lstm.R": ("weight", 1), "lstm.B": ("bias", None),
              "bn.s": ("norm", None), "bn.b": ("norm", None), "bn.m": ("buffer", None), "bn.v": ("buffer", None),
              "ln.s": ("norm", None), "ln.b": ("norm", None), "emb": ("weight", None), "ids": ("other", None),
              "onnx::MatMul_9": ("weight", 1)}
    for name, (kind, axis) in expect.items():
        assert (rows.loc[name, "kind"], axis_of(rows.loc[name])) == (kind, axis), name
    assert rows.loc["onnx::MatMul_9", "layer"] == "encoder.layer.0.attn"


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_per_axis_int8_and_uint8_with_zero_point_128(tmp_path, axis):
    w = RNG.normal(size=(6, 8)).astype(np.float32)
    n = w.shape[axis]
    scale = np.linspace(0.01, 0.03, n).astype(np.float32)
    q8 = RNG.integers(-128, 128, size=w.shape).astype(np.int8)
    u8 = RNG.integers(0, 256, size=w.shape).astype(np.uint8)
    zp8 = RNG.integers(-5, 5, size=n).astype(np.int8)
    zpu = np.full(n, 128, np.uint8)
    inits = [numpy_helper.from_array(a, k) for k, a in
             [("q8", q8), ("u8", u8), ("s", scale), ("z8", zp8), ("zu", zpu)]]
    nodes = [helper.make_node("DequantizeLinear", ["q8", "s", "z8"], ["w8"], axis=axis),
             helper.make_node("DequantizeLinear", ["u8", "s", "zu"], ["wu"], axis=axis),
             helper.make_node("MatMul", ["x", "w8"], ["y"]), helper.make_node("MatMul", ["x", "wu"], ["z"])]
    rows = rows_of(save(tmp_path, nodes, inits))
    assert_stats_match(rows.loc["q8"], dequantize(q8, scale, zp8, axis))
    real = dequantize(u8, scale, zpu, axis)
    assert_stats_match(rows.loc["u8"], real)
    assert rows.loc["u8", "dtype"] == "uint8" and 0.4 < rows.loc["u8", "neg_frac"] < 0.6
    assert (rows.loc["u8", "kind"], axis_of(rows.loc["u8"])) == ("weight", 1)


def test_int4_blocked_quantization(tmp_path):
    q = RNG.integers(-8, 8, size=(4, 10))
    scale = RNG.uniform(0.01, 0.1, size=(4, 3)).astype(np.float32)  # blocks of 4 along axis 1
    zp = RNG.integers(-2, 2, size=(4, 3))
    inits = [helper.make_tensor("q", TensorProto.INT4, q.shape, q.astype(np.int8),
                                raw=True),
             numpy_helper.from_array(scale, "s"),
             helper.make_tensor("z", TensorProto.INT4, zp.shape, zp.astype(np.int8),
                                raw=True)]
    nodes = [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["w"], axis=1, block_size=4),
             helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)]
    path = save(tmp_path, nodes, inits)
    arrays = initializers(path)
    real = dequantize(arrays["q"], scale, arrays["z"], axis=1, block=4)
    rows = inspector.inspect(path, chunk_elems=7).tensors.set_index("name")
    assert_stats_match(rows.loc["q"], real)
    assert (rows.loc["q", "dtype"], rows.loc["q", "kind"], axis_of(rows.loc["q"])) == ("int4", "weight", 0)


def test_small_chunks_give_the_same_rows():
    for fixture in ("digits_cnn_int8.onnx", "digits_cnn_external.onnx"):
        whole = inspector.inspect(FIX / fixture).tensors
        small = inspector.inspect(FIX / fixture, chunk_elems=7).tensors
        for col in ("neg_count", "zero_count", "pos_count", "min", "max"):
            assert list(whole[col]) == list(small[col]), (fixture, col)


def test_embedded_values_are_read_in_bounded_chunks_at_their_offsets(tmp_path):
    w = RNG.normal(size=(50, 40)).astype(np.float32)
    path = save(tmp_path, [], [numpy_helper.from_array(w, "w")])
    data = path.read_bytes()
    assert data.count(w.tobytes()) == 1
    with open_source(str(path)) as src:
        (rec,) = list(src.records())
        parts = [c.copy() for c in rec.chunks(64)]
        assert max(p.size for p in parts) <= 64
        assert np.array_equal(np.concatenate(parts), w.reshape(-1))
        assert rec.range_reader.begin == data.index(w.tobytes())  # found by offset, not parsed out


# --- external data ---------------------------------------------------------------------------------


def external_model(tmp_path: Path, location: str, data: bytes | None = None, offset=0, length=None) -> Path:
    w = np.arange(12, dtype=np.float32) - 5
    t = numpy_helper.from_array(w.reshape(3, 4), "w")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for k, v in entries.items():
        t.external_data.add(key=k, value=v)
    (tmp_path / "m").mkdir(exist_ok=True)
    path = save(tmp_path / "m", [], [t])
    if data is not None:
        (tmp_path / "m" / "w.bin").write_bytes(data)
    return path


def test_external_data_is_read_from_its_offset(tmp_path):
    w = (np.arange(12, dtype=np.float32) - 5).tobytes()
    path = external_model(tmp_path, "w.bin", b"\0" * 16 + w, offset=16, length=48)
    ref = onnx.load(str(path))
    expect = numpy_helper.to_array(ref.graph.initializer[0])
    result = inspector.inspect(path)
    assert_stats_match(result.tensors.iloc[0], expect)
    assert str(tmp_path / "m" / "w.bin") in result.summary.get("files", result.meta.get("files", []))


@pytest.mark.parametrize("location", ["/etc/passwd", "../w.bin", "sub/../../w.bin", "link.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path, location):
    (tmp_path / "w.bin").write_bytes(b"\0" * 48)
    path = external_model(tmp_path, location)
    os.symlink(tmp_path / "w.bin", tmp_path / "m" / "link.bin")
    with pytest.raises(UnsafeCheckpoint, match="outside the model's folder"):
        inspector.inspect(path)


@pytest.mark.parametrize("case,match", [
    (dict(location="missing.bin"), "missing"),
    (dict(location="w.bin", data=b"\0" * 40), "past its end"),
    (dict(location="w.bin", data=b"\0" * 48, offset=8), "past its end"),
    (dict(location="w.bin", data=b"\0" * 48, length=44), "need 48"),
])
def test_external_data_that_does_not_fit(tmp_path, case, match):
    path = external_model(tmp_path, **case)
    with pytest.raises(CorruptCheckpoint, match=match):
        inspector.inspect(path)


# --- malformed protobuf ------------------------------------------------------------------------------


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def model_bytes(tensor: bytes) -> bytes:
    return b"\x08\x08" + field(7, field(5, tensor))


TENSOR_NAME = field(8, b"w")


@pytest.mark.parametrize("blob,match", [
    (b"\x08\x08" + b":\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "varint longer than 10 bytes"),
    (b"\x08\x08:\x20abc", "declares 32 bytes"),
    (b"\x08\x08\x0b", "wire type 3"),
    (b"\x08\x08", "holds one graph, this file 0"),
    (model_bytes(b"\x08\x03\x08\x05" + TENSOR_NAME + b"\x10\x01" + field(9, b"\0" * 8)), "need 60"),
    (model_bytes(field(1, varint(2**40) + varint(2**40)) + b"\x10\x01" + TENSOR_NAME), "absurdly large"),
    (model_bytes(b"\x08" + varint(2**64 - 3) + b"\x10\x01" + TENSOR_NAME), "negative dim"),
    (model_bytes(b"\x08\x02\x10\x63" + TENSOR_NAME), "data type 99"),
    (model_bytes(b"\x08\x03\x10\x01" + TENSOR_NAME + field(4, b"\0" * 8)), "holds 2 values where its dims need 3"),
    (model_bytes(b"\x08\x02\x10\x07" + TENSOR_NAME + field(7, b"\x01\x02\x03")), "more values than its dims"),
])
def test_malformed_protobuf_gives_one_clean_error(tmp_path, blob, match):
    path = tmp_path / "bad.onnx"
    path.write_bytes(blob)
    with pytest.raises((CorruptCheckpoint, UnsupportedSource), match=match) as info:
        inspector.inspect(path)
    assert str(info.value).startswith(f"{path}: ")
    res = CliRunner().invoke(main, [str(path), "-q"])
    assert res.exit_code == 1 and res.stderr.count("\n") == 1 and res.stderr.startswith("error: ")


def test_unpacked_repeated_fields_are_read_like_packed_ones(tmp_path):
    """proto3 readers accept repeated numbers one field each; so does winspect."""
    values = [1.5, -2.0, 0.0]
    floats = b"".join(b"\x25" + np.float32(v).tobytes() for v in values)  # field 4, fixed32, unpacked
    ints = b"".join(b"\x38" + varint(v % 2**64) for v in (5, -6))  # field 7, varint, unpacked
    blob = b"\x08\x08" + field(7, field(5, b"\x08\x03\x10\x01" + field(8, b"f") + floats)
                               + field(5, b"\x08\x02\x10\x07" + field(8, b"i") + ints))
    path = tmp_path / "unpacked.onnx"
    path.write_bytes(blob)
    ref = initializers(path)
    assert ref["f"].tolist() == values and ref["i"].tolist() == [5, -6]
    rows = rows_of(path)
    assert_stats_match(rows.loc["f"], ref["f"])
    assert_stats_match(rows.loc["i"], ref["i"])


def test_varints_split_across_blocks(monkeypatch, tmp_path):
    from inspector.loaders import onnx_data

    monkeypatch.setattr(onnx_data, "VALUE_BLOCK", 13)
    v = RNG.integers(-2**62, 2**62, size=50)
    path = save(tmp_path, [], [helper.make_tensor("v", TensorProto.INT64, v.shape, v.tolist())])
    assert_stats_match(rows_of(path).loc["v"], v)


# --- the commands --------------------------------------------------------------------------------------


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_commands_work_on_onnx(tmp_path):
    assert run(FIX / "digits_cnn_int8.onnx", "--out", tmp_path / "report", "-q").exit_code == 0
    assert (tmp_path / "report" / "report.html").is_file() and (tmp_path / "report" / "tensors.csv").is_file()
    res = run("audit", FIX / "digits_cnn.onnx")
    assert res.exit_code == 0, res.output
    res = run("diff", FIX / "digits_cnn.onnx", FIX / "digits_cnn_external.onnx", "--csv", tmp_path / "d.csv", "-q")
    assert res.exit_code == 0, res.output
    d = pd.read_csv(tmp_path / "d.csv")
    assert len(d) == 8 and (d["rel_change"] == 0).all()
    res = run("diff", FIX / "digits_cnn.safetensors", FIX / "digits_cnn.onnx", "--csv", tmp_path / "x.csv", "-q")
    assert res.exit_code == 0 and set(pd.read_csv(tmp_path / "x.csv")["name"]) >= {"fc1.weight", "fc2.bias"}
    shutil.copy(FIX / "digits_cnn.onnx", tmp_path / "epoch1.onnx")
    shutil.copy(FIX / "digits_cnn.onnx", tmp_path / "epoch2.onnx")
    assert run("track", tmp_path / "epoch1.onnx", tmp_path / "epoch2.onnx", "-q").exit_code == 0
    res = run("compare", FIX / "digits_cnn.onnx", FIX / "digits_cnn_int8.onnx")
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("scale,zp,match", [
    (np.ones(5, np.float32), None, "has 5 scales along axis 1, expected 8"),
    (np.ones(8, np.float32), np.zeros(3, np.int8), "has 8 scales but 3 zero points"),
    (np.ones(0, np.float32), None, "do not combine"),
])
def test_quantization_parameters_that_do_not_fit(tmp_path, scale, zp, match):
    inits = [numpy_helper.from_array(np.ones((6, 8), np.int8), "q"), numpy_helper.from_array(scale, "s")]
    ins = ["q", "s"]
    if zp is not None:
        inits.append(numpy_helper.from_array(zp, "z"))
        ins.append("z")
    path = save(tmp_path, [helper.make_node("DequantizeLinear", ins, ["w"], axis=1)], inits)
    with pytest.raises(CorruptCheckpoint, match=match):
        inspector.inspect(path)


def test_empty_quantized_tensor(tmp_path):
    inits = [numpy_helper.from_array(np.ones((0, 4), np.int8), "q"),
             numpy_helper.from_array(np.ones(4, np.float32), "s")]
    path = save(tmp_path, [helper.make_node("DequantizeLinear", ["q", "s"], ["w"], axis=1)], inits)
    row = rows_of(path).loc["q"]
    assert (row["numel"], row["dtype"]) == (0, "int8")


def test_reading_onnx_and_numpy_imports_neither_onnx_nor_torch():
    code = ("import sys, inspector\n"
            "for f in ('digits_cnn_int8.onnx', 'digits_cnn_external.onnx', 'digits_cnn_compressed.npz'):\n"
            f"    inspector.inspect({str(FIX)!r} + '/' + f)\n"
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'google.protobuf', 'torch') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(FIX.parent)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_external_data_is_an_input_that_outputs_never_overwrite(tmp_path):
    for name in ("digits_cnn_external.onnx", "digits_cnn_external.onnx.data"):
        shutil.copy(FIX / name, tmp_path / name)
    data = tmp_path / "digits_cnn_external.onnx.data"
    before = data.read_bytes()
    res = run(tmp_path / "digits_cnn_external.onnx", "--csv", data, "-q")
    assert res.exit_code == 1 and "is an input of this command" in res.stderr
    assert data.read_bytes() == before
    with open_source(str(tmp_path / "digits_cnn_external.onnx")) as src:
        assert src.files() == [tmp_path / "digits_cnn_external.onnx", data.resolve()]
