"""Kinds, output axes and init baselines for architectures beyond conv and linear layers:
recurrent layers, Linear layers named like embeddings, Keras transposed and depthwise
convolutions, Keras 2 anonymous activations."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

import inspector
from inspector.analysis.init_baseline import fans
from inspector.kinds import classify, natural_key, step_from_name


def _save(tmp_path, sd, name="m.pt"):
    path = tmp_path / name
    torch.save(sd, path)
    return path


def _recurrent_model():
    torch.manual_seed(0)
    m = torch.nn.Module()
    m.lstm = torch.nn.LSTM(8, 16, num_layers=2, bidirectional=True)
    m.gru = torch.nn.GRUCell(16, 12)
    m.rnn = torch.nn.RNN(12, 5)
    m.proj = torch.nn.LSTM(12, 20, proj_size=6)
    m.head = torch.nn.Linear(5, 3)
    return m


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_recurrent_parameters_are_weights_and_biases_with_gate_rows(tmp_path, fmt):
    sd = _recurrent_model().state_dict()
    if fmt == "pt":
        path = _save(tmp_path, sd)
    else:
        from safetensors.torch import save_file

        path = tmp_path / "m.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    t = inspector.inspect(path).tensors.set_index("name")
    for name, value in sd.items():
        leaf = name.split(".")[-1]
        assert t.loc[name, "kind"] == ("weight" if leaf.startswith("weight") else "bias"), name
        if leaf.startswith("weight"):
            assert t.loc[name, "out_axis"] == 0, name
            assert t.loc[name, "units"] == value.shape[0], name  # one unit per gate row
    assert t.loc["lstm.weight_ih_l1_reverse", "module_type"] == "LSTM"
    assert t.loc["gru.weight_ih", "module_type"] == "GRUCell"
    assert t.loc["rnn.weight_hh_l0", "module_type"] == "RNN"
    assert t.loc["proj.weight_hr_l0", "module_type"] == "LSTM"
    # the headline covers the recurrent weights, not the Linear head alone
    weights = [k for k in sd if k.split(".")[-1].startswith("weight")]
    s = inspector.inspect(path).summary
    assert s["weight_numel"] == sum(sd[k].numel() for k in weights)


def test_recurrent_init_baseline_is_pytorchs_rnn_rule(tmp_path):
    torch.manual_seed(1)
    m = torch.nn.Module()
    m.lstm = torch.nn.LSTM(64, 128)
    m.cell = torch.nn.GRUCell(32, 96)
    m.proj = torch.nn.LSTM(40, 80, proj_size=24)
    path = _save(tmp_path, m.state_dict())
    t = inspector.inspect(path).tensors.set_index("name")
    for name in ("lstm.weight_ih_l0", "lstm.weight_hh_l0", "cell.weight_ih", "cell.weight_hh",
                 "proj.weight_ih_l0", "proj.weight_hh_l0", "proj.weight_hr_l0"):
        hidden = {"lstm": 128, "cell": 96, "proj": 80}[name.split(".")[0]]
        values = m.state_dict()[name].numpy().astype(np.float64)
        assert t.loc[name, "std_vs_kaiming_uniform"] == pytest.approx(values.std() * math.sqrt(3 * hidden))
        assert abs(t.loc[name, "std_vs_kaiming_uniform"] - 1) < 0.05, name


def test_torchvision_style_module_info_keeps_recurrent_types(tmp_path):
    from inspector.loaders.torchvision_zoo import module_info

    info = module_info(_recurrent_model())
    assert info["lstm.weight_hh_l0_reverse"] == {"kind": "weight", "out_axis": 0, "module_type": "LSTM"}
    assert info["gru.bias_hh"]["kind"] == "bias"


def test_scalar_weight_and_bias_pair_share_one_kind():
    c = classify([("similarity_weight", (1,)), ("similarity_bias", (1,)), ("fc.weight", (3, 2)), ("fc.bias", (3,))])
    assert c["similarity_weight"].kind == c["similarity_bias"].kind == "other"
    assert c["fc.bias"].kind == "bias"


def test_linear_named_embedding_keeps_its_output_axis(tmp_path):
    torch.manual_seed(0)
    m = torch.nn.Module()
    m.bond_embedding = torch.nn.Linear(31, 64)
    m.embed_tokens = torch.nn.Embedding(100, 8)
    m.pos_embed = torch.nn.Parameter(torch.zeros(1, 10, 8))
    t = inspector.inspect(_save(tmp_path, m.state_dict())).tensors.set_index("name")
    assert t.loc["bond_embedding.weight", "out_axis"] == 0
    assert t.loc["bond_embedding.weight", "units"] == 64
    assert t.loc["bond_embedding.weight", "fan_in"] == 31
    assert pd.isna(t.loc["embed_tokens.weight", "out_axis"])
    assert pd.isna(t.loc["pos_embed", "out_axis"])


# --- Keras --------------------------------------------------------------------------------------


def test_keras_fans_follow_each_layer_types_rule(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "m.weights.h5"
    with h5py.File(path, "w") as f:
        f["layers/conv2d_transpose/vars/0"] = rng.normal(size=(3, 3, 16, 8))
        f["layers/depthwise_conv2d/vars/0"] = rng.normal(size=(3, 3, 32, 1))
        f["layers/lstm/cell/vars/0"] = rng.normal(size=(6, 4 * 5))
        f["layers/lstm/cell/vars/1"] = rng.normal(size=(5, 4 * 5))
        f["layers/lstm/cell/vars/2"] = rng.normal(size=(4 * 5,))
    t = inspector.inspect(path).tensors.set_index("name")
    # as keras.initializers computes them: rf = prod(shape[:-2]), fan_in = shape[-2] rf, fan_out = shape[-1] rf
    assert (t.loc["conv2d_transpose/kernel", "fan_in"], t.loc["conv2d_transpose/kernel", "fan_out"]) == (144, 72)
    assert (t.loc["depthwise_conv2d/kernel", "fan_in"], t.loc["depthwise_conv2d/kernel", "fan_out"]) == (288, 9)
    # Keras LSTM: kernel and recurrent kernel are weights, the gates stacked on the last axis
    for name in ("lstm/cell/kernel", "lstm/cell/recurrent_kernel"):
        assert t.loc[name, "kind"] == "weight" and t.loc[name, "out_axis"] == 1 and t.loc[name, "units"] == 20
    assert (t.loc["lstm/cell/kernel", "fan_in"], t.loc["lstm/cell/kernel", "fan_out"]) == (6, 20)
    assert t.loc["lstm/cell/bias", "kind"] == "bias"
    assert fans((3, 3, 16, 8), 2, "keras") == (144, 72)
    assert fans((16, 8, 3, 3), 1, None) == (8 * 9, 16 * 9)  # PyTorch ConvTranspose: the stored shape's rule


def test_keras2_anonymous_activation_is_a_lambda_finding(tmp_path):
    config = {"class_name": "Sequential", "config": {"name": "seq", "layers": [
        {"class_name": "Dense", "config": {"name": "dense", "units": 2, "activation": "<lambda>"}},
        {"class_name": "Dense", "config": {"name": "out", "units": 2, "activation": "relu"}},
    ]}}
    path = tmp_path / "anon.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = np.array([b"dense", b"out"])
        for layer in ("dense", "out"):
            lg = g.create_group(layer)
            lg.attrs["weight_names"] = np.array([f"{layer}/kernel:0".encode()])
            lg.create_dataset(f"{layer}/kernel:0", data=np.ones((2, 2)))
    findings = inspector.inspect(path).summary["findings"]
    lam = [f for f in findings if f.type == "lambda"]
    assert [f.subject for f in lam] == ["dense"]
    assert "activation" in lam[0].detail and "<lambda>" in lam[0].detail


# --- order and names ----------------------------------------------------------------------------


def test_natural_key_orders_numbers_as_numbers():
    names = ["layers.10.w", "layers.2.w", "layers.1.w", "bn1", "conv1", "layers.100.w", "a"]
    assert sorted(names, key=natural_key) == ["a", "bn1", "conv1", "layers.1.w", "layers.2.w", "layers.10.w",
                                              "layers.100.w"]


@pytest.mark.parametrize("path,pattern,step", [
    ("run/epoch20.pt", None, 20), ("run/epoch2.pt", None, 2), ("ckpt/model-3-step=1500.ckpt", None, 1500),
    ("checkpoint-500/", None, 500), ("final.pt", None, None), ("run3/best.pt", None, None),
    ("run/e5_s700.pt", r"e(\d+)_", 5), ("run/e5_s700.pt", r"s\d+", 700), ("run/e5.pt", r"s(\d+)", None), ("x/v2.safetensors", None, 2),
])
def test_step_from_name(path, pattern, step):
    assert step_from_name(path, pattern) == step


def _layers_of(path):
    ins = inspector.inspect(path)
    return list(dict.fromkeys(ins.layers["layer"])), ins.summary["order"]


def test_safetensors_tables_are_in_natural_order_and_say_so(tmp_path):
    from safetensors.numpy import save_file

    arrays = {f"{i}.weight": np.full((2, 2), -1.0, np.float32) for i in range(120)}
    save_file(arrays, str(tmp_path / "m.safetensors"))
    layers, order = _layers_of(tmp_path / "m.safetensors")
    assert layers == [str(i) for i in range(120)] and order == "natural"
    ins = inspector.inspect(tmp_path / "m.safetensors")
    assert "natural order" in ins.to_report(tmp_path / "r").read_text()
    assert "natural order" in (tmp_path / "r" / "report.md").read_text()


def test_state_dicts_keep_module_order(tmp_path):
    from pathlib import Path

    fix = Path(__file__).resolve().parent.parent / "fixtures"
    layers, order = _layers_of(fix / "digits_cnn.pth")
    assert order == "module" and layers.index("conv1") < layers.index("bn1") < layers.index("conv2")
    layers, order = _layers_of(fix / "digits_cnn.safetensors")
    assert order == "natural" and layers == sorted(layers, key=natural_key)


def test_keras_order_is_module_order_with_a_config(tmp_path):
    from pathlib import Path

    fix = Path(__file__).resolve().parent.parent / "fixtures"
    assert _layers_of(fix / "digits_keras.keras")[1] == "module"
    assert _layers_of(fix / "digits_keras_legacy.h5")[1] == "module"
    layers, order = _layers_of(fix / "digits_keras.weights.h5")  # keys conv2d, conv2d_1, ..., no config
    assert order == "keys" and layers.index("stem_conv") < layers.index("conv2d")


def test_terminal_layer_table_names_its_order():
    from pathlib import Path

    from click.testing import CliRunner

    from inspector.cli import main

    fix = Path(__file__).resolve().parent.parent / "fixtures"
    out = CliRunner().invoke(main, [str(fix / "digits_cnn.safetensors")]).output
    assert "layers (natural order of the names)" in out
    out = CliRunner().invoke(main, [str(fix / "digits_cnn.pth")]).output
    assert "layers (module order)" in out


def test_safetensors_written_in_its_own_order_keeps_it(tmp_path):
    import struct

    names = ["conv1.weight", "bn1.weight", "conv2.weight", "fc.weight"]  # not sorted: the writer's order
    header, offset = {}, 0
    for n in names:
        header[n] = {"dtype": "F32", "shape": [2], "data_offsets": [offset, offset + 8]}
        offset += 8
    raw = json.dumps(header).encode()
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + np.ones(8, np.float32).tobytes())
    layers, order = _layers_of(path)
    assert order == "file" and layers == ["conv1", "bn1", "conv2", "fc"]
