"""Per-unit sign structure and the initialisation baseline, against numpy oracles."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file

import inspector
from inspector.analysis.init_baseline import fans
from inspector.api import table_rows
from inspector.records import TensorRecord, array_reader
from inspector.table.schema import TENSOR_ANALYSIS_COLUMNS, TENSOR_COLUMNS, tensor_frame


def record(name, arr, kind="weight", out_axis=0):
    return TensorRecord(name=name, kind=kind, np_dtype=arr.dtype, shape=arr.shape, reader=array_reader(arr),
                        out_axis=out_axis)


def frame(records, chunk_elems=1 << 20) -> pd.DataFrame:
    rows, _ = table_rows(records, chunk_elems)
    return tensor_frame(rows).to_pandas().set_index("name")


def unit_oracle(w: np.ndarray, out_axis: int) -> dict:
    """Per-unit figures by moving the output axis first: one row of values per unit."""
    per_unit = np.moveaxis(w, out_axis, 0).reshape(w.shape[out_axis], -1)
    neg_frac = (per_unit < 0).mean(axis=1)
    nonpos = ~(per_unit > 0).any(axis=1)
    return {"units": per_unit.shape[0], "all_nonpos_units": int(nonpos.sum()),
            "unit_neg_frac_min": neg_frac.min(), "unit_neg_frac_max": neg_frac.max(), "nonpos": nonpos}


def with_nonpos_units(shape, out_axis, units_nonpos, seed=0) -> np.ndarray:
    """Random weights whose listed units have no positive value (some zeros among them)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32)
    moved = np.moveaxis(w, out_axis, 0)  # a view: writes go to w
    for u in units_nonpos:
        moved[u] = -np.abs(moved[u])
        moved[u].reshape(-1)[0] = 0.0
    return w


# --- per-unit signs ---------------------------------------------------------------------


@pytest.mark.parametrize("shape,out_axis", [
    ((6, 3, 3, 3), 0), ((3, 3, 4, 6), 3), ((3, 4, 20), 1), ((40, 17), 0), ((17, 40), 1), ((5, 7, 2), 1),
    ((4, 64), 0), ((2, 3), 0),
])
@pytest.mark.parametrize("chunk", [1, 5, 16, 17, 100, 1 << 20])
def test_unit_columns_match_oracle_across_chunk_boundaries(shape, out_axis, chunk):
    w = with_nonpos_units(shape, out_axis, [0, shape[out_axis] - 1], seed=len(shape) + chunk)
    row = frame([record("m.weight", w, out_axis=out_axis)], chunk).loc["m.weight"]
    o = unit_oracle(w, out_axis)
    assert row["units"] == o["units"]
    assert row["all_nonpos_units"] == o["all_nonpos_units"] == 2
    assert row["dead_relu_candidates"] == o["all_nonpos_units"]  # no bias in the layer
    assert row["unit_neg_frac_min"] == o["unit_neg_frac_min"]
    assert row["unit_neg_frac_max"] == o["unit_neg_frac_max"]


def conv_checkpoint() -> dict[str, np.ndarray]:
    """A conv layer with 4 all-non-positive filters of 8, 3 of them with a bias <= 0; a linear without bias."""
    w = with_nonpos_units((8, 3, 3, 3), 0, [0, 1, 2, 5])
    bias = np.array([-1.0, 0.5, 0.0, 2.0, 1.0, -0.25, 3.0, -2.0], dtype=np.float32)
    fc = with_nonpos_units((10, 12), 0, [3, 7], seed=1)
    return {"conv.weight": w, "conv.bias": bias, "fc.weight": fc}


def test_dead_relu_candidates_exact_from_a_file(tmp_path):
    path = tmp_path / "net.safetensors"
    save_file(conv_checkpoint(), str(path))
    ins = inspector.inspect(path)
    t = ins.tensors.set_index("name")
    assert t.loc["conv.weight", "all_nonpos_units"] == 4
    assert t.loc["conv.weight", "dead_relu_candidates"] == 3  # filters 0, 2, 5: bias -1, 0, -0.25
    assert t.loc["fc.weight", "all_nonpos_units"] == 2
    assert t.loc["fc.weight", "dead_relu_candidates"] == 2  # no bias: every all-non-positive unit
    assert pd.isna(t.loc["conv.bias", "units"])
    assert ins.summary["dead_relu_layers"] == [
        {"layer": "conv", "tensor": "conv.weight", "dead_relu_candidates": 3, "units": 8},
        {"layer": "fc", "tensor": "fc.weight", "dead_relu_candidates": 2, "units": 10},
    ]
    dead = [f for f in ins.summary["findings"] if f.type == "dead_relu"]
    assert [f.subject for f in dead] == ["conv.weight", "fc.weight"]
    assert "3 of 8 units" in dead[0].detail


def test_dead_relu_same_for_a_torch_checkpoint_and_either_stream_order(tmp_path):
    import torch

    ck = conv_checkpoint()
    path = tmp_path / "net.pt"
    torch.save({"model": {f"module.{k}": torch.from_numpy(v) for k, v in ck.items()}}, path)
    t = inspector.inspect(path).tensors.set_index("name")
    assert t.loc["conv.weight", "dead_relu_candidates"] == 3
    recs = [record(k, v, kind="bias" if k.endswith("bias") else "weight") for k, v in ck.items()]
    for order in (recs, recs[::-1]):
        assert frame(order).loc["conv.weight", "dead_relu_candidates"] == 3


def test_bias_with_nan_is_not_non_positive():
    w = -np.ones((3, 4), dtype=np.float32)
    b = np.array([np.nan, -1.0, 1.0], dtype=np.float32)
    f = frame([record("l.weight", w), record("l.bias", b, kind="bias", out_axis=None)])
    assert f.loc["l.weight", "all_nonpos_units"] == 3
    assert f.loc["l.weight", "dead_relu_candidates"] == 1


def test_keras_and_pytorch_layouts_give_the_same_unit_answers():
    conv_pt = with_nonpos_units((8, 3, 3, 3), 0, [1, 4, 6])  # (out, in, kh, kw)
    dense_pt = with_nonpos_units((5, 7), 0, [2], seed=3)  # (out, in)
    bias = np.array([-1, 1, -1, 1, 0, 1, 1, 1], dtype=np.float32)
    dense_bias = np.array([1, 1, 0, 1, 1], dtype=np.float32)
    torch_like = frame([record("conv.weight", conv_pt), record("conv.bias", bias, "bias", None),
                        record("fc.weight", dense_pt), record("fc.bias", dense_bias, "bias", None)])
    keras_like = frame([record("conv/kernel", conv_pt.transpose(2, 3, 1, 0).copy(), out_axis=3),
                        record("conv/bias", bias, "bias", None),
                        record("fc/kernel", dense_pt.T.copy(), out_axis=1),
                        record("fc/bias", dense_bias, "bias", None)], chunk_elems=7)
    cols = ["units", "all_nonpos_units", "dead_relu_candidates", "unit_neg_frac_min", "unit_neg_frac_max",
            "fan_in", "fan_out", "std_vs_kaiming_uniform"]
    for pt, ke in (("conv.weight", "conv/kernel"), ("fc.weight", "fc/kernel")):
        assert torch_like.loc[pt, cols].tolist() == pytest.approx(keras_like.loc[ke, cols].tolist(), rel=1e-12)
    assert keras_like.loc["conv/kernel", "all_nonpos_units"] == 3
    assert keras_like.loc["conv/kernel", "dead_relu_candidates"] == 1  # unit 4 (bias 0); units 1, 6 have bias 1
    assert keras_like.loc["fc/kernel", "dead_relu_candidates"] == 1
    assert keras_like.loc["conv/kernel", "fan_in"] == 27 and keras_like.loc["conv/kernel", "fan_out"] == 72


def test_tensors_without_output_axis_leave_the_columns_empty():
    emb = np.arange(12, dtype=np.float32).reshape(4, 3) - 5
    f = frame([record("emb.weight", emb, out_axis=None), record("x", np.ones(3, np.float32), "other", None)])
    assert f[TENSOR_ANALYSIS_COLUMNS].isna().all().all()


def test_csv_keeps_the_required_columns_first(tmp_path):
    path = tmp_path / "net.safetensors"
    save_file(conv_checkpoint(), str(path))
    ins = inspector.inspect(path)
    ins.to_csv(tmp_path / "t.csv")
    cols = list(pd.read_csv(tmp_path / "t.csv").columns)
    assert cols[:27] == TENSOR_COLUMNS
    assert cols[-len(TENSOR_ANALYSIS_COLUMNS):] == TENSOR_ANALYSIS_COLUMNS


# --- initialisation baseline --------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7, 5), (8, 3, 3, 3), (4, 6, 5), (2, 3, 2, 2, 2), (6, 1)])
def test_fans_follow_pytorch(shape):
    import torch

    assert fans(shape, 0) == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    # ConvTranspose stores (in, out, k...) and PyTorch initialises it with the same formula
    if len(shape) >= 3:
        assert fans(shape, 1) == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


def test_keras_fans():
    assert fans((3, 3, 16, 32), 3) == (16 * 9, 32 * 9)
    assert fans((16, 32), 1) == (16, 32)
    assert fans((5, 4, 8), 2) == (4 * 5, 8 * 5)
    assert fans((5,), 0) is None and fans((5, 4), None) is None


def test_keras_layout_fans_follow_keras_for_transposed_and_depthwise_kernels():
    """Keras computes fans on the stored shape whatever the output axis: a transposed conv kernel
    (kh, kw, out, in) and a depthwise kernel (kh, kw, in, multiplier) have their output unit on
    the second-to-last axis, yet their fans are prod(kernel) * shape[-2] and prod(kernel) * shape[-1]."""
    assert fans((3, 3, 16, 32), 2, "keras") == (16 * 9, 32 * 9)
    assert fans((3, 3, 8, 1), 2, "keras") == (8 * 9, 1 * 9)
    assert fans((3, 3, 16, 32), 2) == (3 * 16 * 32, 3 * 16 * 32)  # a PyTorch layout reads the same shape otherwise


def test_std_ratios_match_numpy():
    rng = np.random.default_rng(7)
    w = rng.uniform(-0.3, 0.3, size=(20, 10, 3, 3))
    row = frame([record("c.weight", w)]).loc["c.weight"]
    fan_in, fan_out = 90, 180
    std = np.std(w)
    assert row["std_vs_kaiming_uniform"] == pytest.approx(std / (1 / math.sqrt(fan_in) / math.sqrt(3)), rel=1e-12)
    assert row["std_vs_kaiming_normal"] == pytest.approx(std / math.sqrt(2 / fan_in), rel=1e-12)
    assert row["std_vs_xavier"] == pytest.approx(std / math.sqrt(2 / (fan_in + fan_out)), rel=1e-12)


def test_torchvision_alexnet_at_initialisation_matches_kaiming_uniform():
    t = inspector.inspect("alexnet", weights="none").tensors
    w = t[t["kind"] == "weight"]
    assert len(w) == 8  # 5 conv + 3 linear
    assert w["std_vs_kaiming_uniform"].between(0.98, 1.02).all(), w[["name", "std_vs_kaiming_uniform"]]
    assert w["std_vs_kaiming_normal"].between(0.98 / math.sqrt(6), 1.02 / math.sqrt(6)).all()
    assert (w["dead_relu_candidates"] == 0).all()


def test_squeezenet_init_and_its_cached_weights():
    """squeezenet1_1 initialises its convs with kaiming_uniform_ (a=0: He's std) and the classifier with N(0, 0.01);
    a cached "pretrained" file holding that initialisation times 1.5 reads as 1.5 times the ratios."""
    import os
    from pathlib import Path

    import torch
    import torchvision.models as tvm

    init = inspector.inspect("squeezenet1_1", weights="none").tensors
    w0 = init[init["kind"] == "weight"].set_index("name")
    assert len(w0) == 26
    assert w0.drop(index="classifier.1.weight")["std_vs_kaiming_normal"].between(0.95, 1.05).all()
    assert w0.loc["classifier.1.weight", "fan_in"] == 512
    assert w0.loc["classifier.1.weight", "std_vs_kaiming_normal"] == pytest.approx(0.01 / math.sqrt(2 / 512), rel=0.05)
    url = tvm.SqueezeNet1_1_Weights.DEFAULT.url
    path = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / os.path.basename(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save({k: 1.5 * v for k, v in tvm.squeezenet1_1().state_dict().items()}, path)
    cached = inspector.inspect("squeezenet1_1")
    assert cached.summary["trained"] is True
    w1 = cached.tensors[cached.tensors["kind"] == "weight"].set_index("name")
    for col in ("std_vs_kaiming_uniform", "std_vs_kaiming_normal", "std_vs_xavier"):
        assert np.allclose(w1[col] / w0[col], 1.5, rtol=1e-6)
