"""PyTorch pickle checkpoints: bare and nested state dicts, zip and legacy formats, shared storage."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch

import inspector
from inspector.finding import Finding
from inspector.errors import UnsupportedSource

from .helpers import assert_stats_match


def state_dict(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(4, 2, 3, 3, generator=g),
        "conv.bias": torch.randn(4, generator=g),
        "bn.weight": torch.rand(4, generator=g),
        "bn.bias": torch.randn(4, generator=g),
        "bn.running_mean": torch.randn(4, generator=g),
        "bn.running_var": torch.rand(4, generator=g),
        "bn.num_batches_tracked": torch.tensor(7),
        "fc.weight": torch.randn(3, 16, generator=g),
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_bare_state_dict_rows_match_tensors(tmp_path, legacy):
    sd = state_dict()
    path = tmp_path / "m.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
    result = inspector.inspect(path)
    assert list(result.tensors["name"]) == list(sd)
    assert result.summary["format"] == ("pytorch-legacy" if legacy else "pytorch-zip")
    for row in result.tensors.to_dict("records"):
        assert_stats_match(row, sd[row["name"]].numpy())


def test_kinds_from_names_and_shapes(tmp_path):
    torch.save(state_dict(), tmp_path / "m.pt")
    kinds = inspector.inspect(tmp_path / "m.pt").tensors.set_index("name")["kind"].to_dict()
    assert kinds == {
        "conv.weight": "weight", "conv.bias": "bias", "bn.weight": "norm", "bn.bias": "norm",
        "bn.running_mean": "buffer", "bn.running_var": "buffer", "bn.num_batches_tracked": "buffer",
        "fc.weight": "weight",
    }


@pytest.mark.parametrize("key", ["state_dict", "model", "model_state_dict", "module", "ema"])
def test_nested_training_checkpoint(tmp_path, key):
    sd = state_dict()
    torch.save({"epoch": 3, key: sd, "optimizer": {"state": {}, "param_groups": []}}, tmp_path / "c.ckpt")
    result = inspector.inspect(tmp_path / "c.ckpt")
    assert list(result.tensors["name"]) == list(sd)
    assert result.summary["nested_key"] == key
    assert any(key in note for note in result.summary["notes"])


def test_doubly_nested_checkpoint(tmp_path):
    torch.save({"model": {"state_dict": state_dict()}}, tmp_path / "c.pt")
    assert inspector.inspect(tmp_path / "c.pt").summary["nested_key"] == "model.state_dict"


def test_prefixes_are_stripped(tmp_path):
    sd = {f"module._orig_mod.{k}": v for k, v in state_dict().items()}
    torch.save(sd, tmp_path / "ddp.pt")
    result = inspector.inspect(tmp_path / "ddp.pt")
    assert list(result.tensors["name"]) == list(state_dict())
    assert "conv" in set(result.tensors["layer"])


def test_shared_storage_counted_once_and_flagged(tmp_path):
    emb = torch.randn(10, 4)
    sd = {"embed.weight": emb, "head.weight": emb, "head.bias": torch.zeros(10)}
    torch.save(sd, tmp_path / "tied.pt")
    result = inspector.inspect(tmp_path / "tied.pt")
    t = result.tensors.set_index("name")
    assert t.loc["head.weight", "tied_to"] == "embed.weight"
    assert t.loc["head.weight", "neg_count"] == t.loc["embed.weight", "neg_count"]
    assert result.summary["numel"] == 40 + 10
    assert result.summary["tied_tensors"] == [{"name": "head.weight", "tied_to": "embed.weight"}]
    assert Finding("tied", "head.weight", "info", "shares storage with embed.weight") in result.summary["findings"]


def test_bf16_and_f16_tensors(tmp_path):
    x = torch.randn(3000)
    x[:5] = float("nan")
    sd = {"a.weight": x.to(torch.bfloat16).reshape(30, 100), "b.weight": x.to(torch.float16).reshape(30, 100)}
    torch.save(sd, tmp_path / "half.pt")
    t = inspector.inspect(tmp_path / "half.pt", chunk_elems=512).tensors.set_index("name")
    assert t.loc["a.weight", "dtype"] == "bfloat16" and t.loc["b.weight", "dtype"] == "float16"
    assert_stats_match(t.loc["a.weight"], sd["a.weight"].view(torch.int16).numpy().view(ml_dtypes.bfloat16))
    assert_stats_match(t.loc["b.weight"], sd["b.weight"].numpy())


def test_non_contiguous_tensor(tmp_path):
    w = torch.randn(5, 7).t()
    torch.save({"w.weight": w}, tmp_path / "t.pt")
    row = inspector.inspect(tmp_path / "t.pt", chunk_elems=4).tensors.iloc[0]
    assert_stats_match(row, w.contiguous().numpy())


def test_no_state_dict_inside(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "x.pt")
    with pytest.raises(UnsupportedSource, match="no state dict"):
        inspector.inspect(tmp_path / "x.pt")


def test_fixture_formats_agree():
    import pathlib

    fixtures = pathlib.Path(__file__).resolve().parent.parent / "fixtures"
    ref = inspector.inspect(fixtures / "digits_cnn.pth").tensors.set_index("name").sort_index()
    for name in ("digits_cnn.safetensors", "digits_cnn_legacy.pth", "digits_cnn_ckpt.pt"):
        other = inspector.inspect(fixtures / name).tensors.set_index("name").sort_index()
        cols = ["kind", "numel", "neg_count", "zero_count", "pos_count", "mean", "std", "p50"]
        assert np.array_equal(other.index, ref.index), name
        assert other[cols].equals(ref[cols]), name


def test_output_axis_of_weights_and_embeddings(tmp_path):
    sd = {"embed_tokens.weight": torch.randn(50, 8), "q_proj.weight": torch.randn(8, 8), "q_proj.bias": torch.zeros(8)}
    torch.save(sd, tmp_path / "t.pt")
    axes = inspector.inspect(tmp_path / "t.pt").tensors.set_index("name")["out_axis"]
    assert axes["q_proj.weight"] == 0
    assert axes.isna()["embed_tokens.weight"] and axes.isna()["q_proj.bias"]


def test_numpy_values_beside_the_weights_are_accepted(tmp_path):
    sd = state_dict()
    torch.save({"model": sd, "best_acc": np.float64(0.97), "curve": np.arange(5.0), "epoch": np.int64(9)},
               tmp_path / "np.pt")
    result = inspector.inspect(tmp_path / "np.pt")
    assert list(result.tensors["name"]) == list(sd) and result.summary["nested_key"] == "model"


def test_hostile_object_inside_a_numpy_array_is_inert_and_named(tmp_path):
    import os

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    arr = np.empty(1, dtype=object)
    arr[0] = Evil()
    torch.save({"w.weight": torch.ones(1), "extra": arr}, tmp_path / "evil.pt")
    result = inspector.inspect(tmp_path / "evil.pt")
    assert not marker.exists()
    assert list(result.tensors["name"]) == ["w.weight"]
    assert [f.subject for f in result.summary["findings"] if f.type == "unsafe"] == [f"{os.system.__module__}.system"]
    assert any("extra (numpy object array" in n for n in result.summary["notes"])
