"""Keras loaders: every form against an h5py/numpy oracle, names, kinds, axes, safety."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import ml_dtypes
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import inspector
from inspector.cli import main
from inspector.errors import CorruptCheckpoint, UnsafeCheckpoint, UnsupportedSource
from inspector.loaders import choose_loader, keras_zip, open_source
from inspector.loaders.keras_config import kind_of, out_axis_of, var_names
from inspector.loaders.keras_h5 import KerasH5Loader, KerasZipLoader, slabs

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"

# name, kind, out_axis, class, Keras 3 weights-file path of the digits twin
DIGITS = [
    ("stem_conv/kernel", "weight", 3, "Conv2D", "layers/conv2d/vars/0"),
    ("stem_conv/bias", "bias", None, "Conv2D", "layers/conv2d/vars/1"),
    ("batch_normalization/gamma", "norm", None, "BatchNormalization", "layers/batch_normalization/vars/0"),
    ("batch_normalization/beta", "norm", None, "BatchNormalization", "layers/batch_normalization/vars/1"),
    ("batch_normalization/moving_mean", "buffer", None, "BatchNormalization", "layers/batch_normalization/vars/2"),
    ("batch_normalization/moving_variance", "buffer", None, "BatchNormalization", "layers/batch_normalization/vars/3"),
    ("conv2d/kernel", "weight", 3, "Conv2D", "layers/conv2d_1/vars/0"),
    ("conv2d/bias", "bias", None, "Conv2D", "layers/conv2d_1/vars/1"),
    ("batch_normalization_1/gamma", "norm", None, "BatchNormalization", "layers/batch_normalization_1/vars/0"),
    ("batch_normalization_1/beta", "norm", None, "BatchNormalization", "layers/batch_normalization_1/vars/1"),
    ("batch_normalization_1/moving_mean", "buffer", None, "BatchNormalization", "layers/batch_normalization_1/vars/2"),
    ("batch_normalization_1/moving_variance", "buffer", None, "BatchNormalization",
     "layers/batch_normalization_1/vars/3"),
    ("head/dense/kernel", "weight", 1, "Dense", "layers/sequential/layers/dense/vars/0"),
    ("head/dense/bias", "bias", None, "Dense", "layers/sequential/layers/dense/vars/1"),
    ("head/dense_1/kernel", "weight", 1, "Dense", "layers/sequential/layers/dense_1/vars/0"),
    ("head/dense_1/bias", "bias", None, "Dense", "layers/sequential/layers/dense_1/vars/1"),
]


def keras2_path(name: str) -> str:
    """Keras 2 layout: model_weights/<layer>/<variable name>:0 (a nested model's variables keep their own layer)."""
    top = name.split("/")[0]
    rel = name if name.count("/") == 1 else name.split("/", 1)[1]
    return f"{top}/{rel}:0"


FORMS = {  # fixture -> (format, path of each tensor's dataset in the file)
    "digits_keras_legacy.h5": ("keras-h5-legacy", lambda n, k3: "model_weights/" + keras2_path(n)),
    "digits_keras_legacy_chunked.h5": ("keras-h5-legacy", lambda n, k3: "model_weights/" + keras2_path(n)),
    "digits_keras_legacy_weights.h5": ("keras-h5-legacy-weights", lambda n, k3: keras2_path(n)),
    "digits_keras_k3legacy.h5": ("keras-h5-legacy", lambda n, k3: f"model_weights/{n.split('/')[0]}/{n}"),
    "digits_keras.weights.h5": ("keras-weights-h5", lambda n, k3: k3),
    "digits_keras.keras": ("keras-zip", lambda n, k3: k3),
    "digits_keras_sharded/model.weights.json": ("keras-weights-sharded", lambda n, k3: k3),
}


def oracle(values: np.ndarray) -> dict:
    x = np.asarray(values).astype(np.float64).ravel()
    return {
        "numel": x.size, "neg_count": int((x < 0).sum()), "zero_count": int((x == 0).sum()),
        "pos_count": int((x > 0).sum()), "mean": x.mean(), "std": x.std(), "min": x.min(), "max": x.max(),
        "abs_mean": np.abs(x).mean(), "l2_norm": np.sqrt((x * x).sum()),
        "p01": np.percentile(x, 1), "p50": np.percentile(x, 50), "p99": np.percentile(x, 99),
    }


def assert_row_matches(row, values: np.ndarray) -> None:
    for key, want in oracle(values).items():
        assert row[key] == pytest.approx(want, rel=1e-9, abs=1e-12), (row["name"], key)


def shards(index: Path) -> list[Path]:
    return sorted(index.parent.glob("model_*.weights.h5"))


def read_dataset(path: Path, inner: str) -> np.ndarray:
    if path.name.endswith(".weights.json"):  # the one shard that holds it
        found = []
        for shard in shards(path):
            with h5py.File(shard, "r") as f:
                if inner in f and isinstance(f[inner], h5py.Dataset):
                    found.append(f[inner][()])
        assert len(found) == 1, inner
        return found[0]
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as z, z.open("model.weights.h5") as m, h5py.File(m, "r") as f:
            return f[inner][()]
    with h5py.File(path, "r") as f:
        return f[inner][()]


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# --- every form against the oracle -------------------------------------------------------------


@pytest.mark.parametrize("fixture", sorted(FORMS))
def test_every_tensor_equals_the_oracle(fixture):
    path = FIX / fixture
    fmt, where = FORMS[fixture]
    result = inspector.inspect(path)
    t = result.tensors.set_index("name", drop=False)
    assert result.summary["format"] == fmt
    assert sorted(t.index) == sorted(n for n, *_ in DIGITS)  # no optimizer rows, nothing missing
    for name, kind, axis, cls, k3 in DIGITS:
        row = t.loc[name]
        assert row["kind"] == kind, name
        assert (None if pd.isna(row["out_axis"]) else int(row["out_axis"])) == axis, name
        no_config = fixture == "digits_keras_legacy_weights.h5"  # weights only: classes unknown
        assert row["module_type"] == (None if no_config else cls), name
        assert row["layer"] == name.rsplit("/", 1)[0]
        assert_row_matches(row, read_dataset(path, where(name, k3)))
    assert result.summary["numel"] == 3754
    assert any("optimizer" in n and "not read (26 tensors)" in n for n in result.summary["notes"])


def test_every_fixture_holds_optimizer_state():
    """So the exclusion tested above is real: each file has Adam slots next to the weights."""
    for fixture in FORMS:
        key = "optimizer_weights" if "legacy" in fixture else "optimizer"
        if fixture.endswith(".keras"):
            with zipfile.ZipFile(FIX / fixture) as z, z.open("model.weights.h5") as m, h5py.File(m, "r") as f:
                assert len(f[key]["vars"]) > 16
        elif fixture.endswith(".weights.json"):  # Adam's slots spread over the shards
            counts = []
            for shard in shards(FIX / fixture):
                with h5py.File(shard, "r") as f:
                    counts.append(len(f[key]["vars"]) if key in f else 0)
            assert sum(counts) > 16 and sum(c > 0 for c in counts) > 1
        else:
            with h5py.File(FIX / fixture, "r") as f:
                assert key in f


def test_versions_and_backend_in_the_summary(tmp_path):
    legacy = inspector.inspect(FIX / "digits_keras_legacy.h5").summary
    assert (legacy["keras_version"], legacy["backend"]) == ("2.15.0", "tensorflow")
    k3 = inspector.inspect(FIX / "digits_keras_k3legacy.h5").summary
    assert k3["backend"] == "torch" and k3["keras_version"].startswith("3.")
    zipped = inspector.inspect(FIX / "digits_keras.keras").summary
    assert zipped["keras_version"].startswith("3.")
    out = run_cli(FIX / "digits_keras_legacy.h5")
    assert out.exit_code == 0 and "keras 2.15.0, backend tensorflow" in out.output


def test_layer_names_chunks_are_joined():
    with h5py.File(FIX / "digits_keras_legacy_chunked.h5", "r") as f:
        g = f["model_weights"]
        assert "layer_names" not in g.attrs and {"layer_names0", "layer_names1"} <= set(g.attrs)
        assert "weight_names" not in g["head"].attrs and "weight_names1" in g["head"].attrs
    a = inspector.inspect(FIX / "digits_keras_legacy_chunked.h5").tensors
    b = inspector.inspect(FIX / "digits_keras_legacy.h5").tensors
    assert list(a["name"]) == list(b["name"])
    assert np.array_equal(a["l2_norm"].to_numpy(), b["l2_norm"].to_numpy())


def test_small_chunks_give_the_same_statistics():
    whole = inspector.inspect(FIX / "digits_keras.keras").tensors
    small = inspector.inspect(FIX / "digits_keras.keras", chunk_elems=7).tensors
    for col in ("neg_count", "zero_count", "pos_count", "min", "max"):
        assert list(whole[col]) == list(small[col])
    assert np.allclose(whole["std"], small["std"], rtol=1e-12) and np.allclose(whole["mean"], small["mean"], atol=1e-15)


def test_records_read_datasets_in_bounded_slabs(tmp_path):
    values = np.random.default_rng(4).normal(size=(30, 7, 5)).astype(np.float32)
    path = tmp_path / "big.weights.h5"
    write_keras3_weights(path, {"layers/conv1d/vars/0": values})
    with open_source(str(path)) as src:
        (rec,) = list(src.records())
        sizes, parts = [], []
        for chunk in rec.chunks(64):
            sizes.append(chunk.size)
            parts.append(chunk.copy())
    assert max(sizes) <= 64 and sum(sizes) == values.size
    assert np.array_equal(np.concatenate(parts), values.reshape(-1))
    assert (rec.name, rec.out_axis, rec.module_type) == ("conv1d/kernel", 2, "Conv1D")


@pytest.mark.parametrize("shape", [(), (0, 3), (5,), (4, 6), (3, 4, 5), (2, 1, 7, 3), (1, 100)])
@pytest.mark.parametrize("max_elems", [1, 2, 5, 7, 12, 1000])
def test_slabs_cover_the_array_in_c_order_within_the_bound(shape, max_elems):
    a = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    parts = [np.asarray(a[sel]).reshape(-1) for sel in slabs(shape, max_elems)]
    assert all(p.size <= max(max_elems, 1) for p in parts)
    got = np.concatenate(parts) if parts else np.array([], dtype=np.int64)
    assert np.array_equal(got, a.reshape(-1))


# --- names without help from the file ----------------------------------------------------------


def strip_vars_names(path: Path) -> None:
    """Remove the ``name`` attributes newer Keras 3 writes on ``vars`` groups (older files lack them)."""
    with h5py.File(path, "r+") as f:
        f.visititems(lambda n, o: o.attrs.__delitem__("name") if n.endswith("vars") and "name" in o.attrs else None)


def test_weights_h5_without_layer_names_keeps_the_class_keys(tmp_path):
    path = tmp_path / "old.weights.h5"
    shutil.copy(FIX / "digits_keras.weights.h5", path)
    strip_vars_names(path)
    t = inspector.inspect(path).tensors.set_index("name")
    assert "conv2d/kernel" in t.index and "conv2d_1/kernel" in t.index and "sequential/dense_1/bias" in t.index
    assert "stem_conv/kernel" not in t.index
    for name, inner in (("conv2d/kernel", "layers/conv2d/vars/0"), ("conv2d_1/kernel", "layers/conv2d_1/vars/0")):
        assert_row_matches(t.loc[name].to_dict() | {"name": name}, read_dataset(path, inner))
        assert t.loc[name, "module_type"] == "Conv2D" and t.loc[name, "out_axis"] == 3


def rezip(src: Path, dst: Path, weights: Path | None = None, compression=zipfile.ZIP_STORED, config=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "model.weights.h5" and weights is not None:
                data = weights.read_bytes()
            if info.filename == "config.json" and config is not None:
                data = json.dumps(config).encode()
            zout.writestr(info.filename, data)


def test_keras_zip_names_come_from_the_config(tmp_path):
    """With no names in the weights file, config.json gives stem_conv, head/dense, ... back."""
    weights = tmp_path / "w.weights.h5"
    with zipfile.ZipFile(FIX / "digits_keras.keras") as z:
        weights.write_bytes(z.read("model.weights.h5"))
    strip_vars_names(weights)
    path = tmp_path / "old.keras"
    rezip(FIX / "digits_keras.keras", path, weights)
    t = inspector.inspect(path).tensors
    assert sorted(t["name"]) == sorted(n for n, *_ in DIGITS)
    assert list(t["name"]) == [n for n, *_ in DIGITS]  # network order from the config


def test_compressed_keras_zip_is_read_in_memory(tmp_path, monkeypatch):
    path = tmp_path / "deflated.keras"
    rezip(FIX / "digits_keras.keras", path, compression=zipfile.ZIP_DEFLATED)
    result = inspector.inspect(path)
    assert any("decompressed into memory" in n for n in result.summary["notes"])
    assert list(result.tensors["l2_norm"]) == list(inspector.inspect(FIX / "digits_keras.keras").tensors["l2_norm"])
    monkeypatch.setattr(keras_zip, "MAX_INMEMORY_WEIGHTS", 1000)
    with pytest.raises(UnsupportedSource, match="unzip the archive"):
        inspector.inspect(path)


def test_zip_bombs_are_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(keras_zip, "MAX_MEMBERS", 2)
    with pytest.raises(UnsupportedSource, match="members"):
        inspector.inspect(FIX / "digits_keras.keras")
    monkeypatch.setattr(keras_zip, "MAX_MEMBERS", 10_000)
    monkeypatch.setattr(keras_zip, "MAX_JSON_BYTES", 100)
    with pytest.raises(CorruptCheckpoint, match="config.json"):
        inspector.inspect(FIX / "digits_keras.keras")


def test_torch_and_keras_zips_keep_their_own_loaders(tmp_path):
    import torch

    pt = tmp_path / "m.pt"
    torch.save({"w": torch.ones(2)}, pt)
    assert choose_loader(str(pt)).name == "pytorch"
    assert not KerasZipLoader.sniff(pt, pt.read_bytes()[:64])
    assert choose_loader(str(FIX / "digits_keras.keras")) is KerasZipLoader
    renamed = tmp_path / "model.zip"
    shutil.copy(FIX / "digits_keras.keras", renamed)
    assert choose_loader(str(renamed)) is KerasZipLoader


def test_hdf5_after_a_user_block_is_sniffed(tmp_path):
    path = tmp_path / "ub.bin"
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_group("layers/dense/vars").create_dataset("0", data=np.ones((2, 3), np.float32))
    assert choose_loader(str(path)) is KerasH5Loader
    assert list(inspector.inspect(path).tensors["name"]) == ["dense/kernel"]


# --- hand-built files: other layer classes, bf16, nested names, findings ------------------------


def write_keras3_weights(path: Path, arrays: dict[str, np.ndarray], bf16: tuple[str, ...] = ()) -> None:
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            ds = f.create_dataset(key, data=value)
            if key in bf16:
                ds.attrs["dtype"] = "bfloat16"


def test_keras3_layer_classes_names_kinds_and_axes(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "layers/depthwise_conv2d/vars/0": rng.normal(size=(3, 3, 4, 2)),
        "layers/separable_conv2d/vars/0": rng.normal(size=(3, 3, 4, 1)),
        "layers/separable_conv2d/vars/1": rng.normal(size=(1, 1, 4, 6)),
        "layers/separable_conv2d/vars/2": rng.normal(size=(6,)),
        "layers/conv2d_transpose/vars/0": rng.normal(size=(2, 2, 5, 6)),
        "layers/embedding/vars/0": rng.normal(size=(11, 4)),
        "layers/lstm/cell/vars/0": rng.normal(size=(4, 12)),
        "layers/lstm/cell/vars/1": rng.normal(size=(3, 12)),
        "layers/lstm/cell/vars/2": rng.normal(size=(12,)),
        "layers/layer_normalization/vars/0": rng.normal(size=(6,)),
        "layers/layer_normalization/vars/1": rng.normal(size=(6,)),
        "layers/my_layer/vars/0": rng.normal(size=(3,)),
        "layers/my_layer/vars/1": rng.normal(size=(3, 2)),
    }
    path = tmp_path / "m.weights.h5"
    write_keras3_weights(path, arrays)
    t = inspector.inspect(path).tensors.set_index("name")
    expect = {  # name: (kind, out_axis, module_type, dataset)
        "depthwise_conv2d/kernel": ("weight", 2, "DepthwiseConv2D", "layers/depthwise_conv2d/vars/0"),
        "separable_conv2d/depthwise_kernel": ("weight", 2, "SeparableConv2D", "layers/separable_conv2d/vars/0"),
        "separable_conv2d/pointwise_kernel": ("weight", 3, "SeparableConv2D", "layers/separable_conv2d/vars/1"),
        "separable_conv2d/bias": ("bias", None, "SeparableConv2D", "layers/separable_conv2d/vars/2"),
        "conv2d_transpose/kernel": ("weight", 2, "Conv2DTranspose", "layers/conv2d_transpose/vars/0"),
        "embedding/embeddings": ("weight", 0, "Embedding", "layers/embedding/vars/0"),
        "lstm/cell/kernel": ("weight", 1, "LSTMCell", "layers/lstm/cell/vars/0"),
        "lstm/cell/recurrent_kernel": ("weight", 1, "LSTMCell", "layers/lstm/cell/vars/1"),
        "lstm/cell/bias": ("bias", None, "LSTMCell", "layers/lstm/cell/vars/2"),
        "layer_normalization/gamma": ("norm", None, "LayerNormalization", "layers/layer_normalization/vars/0"),
        "layer_normalization/beta": ("norm", None, "LayerNormalization", "layers/layer_normalization/vars/1"),
        "my_layer/vars/0": ("other", None, None, "layers/my_layer/vars/0"),
        "my_layer/vars/1": ("weight", 1, None, "layers/my_layer/vars/1"),
    }
    assert sorted(t.index) == sorted(expect)
    for name, (kind, axis, cls, inner) in expect.items():
        row = t.loc[name]
        assert row["kind"] == kind, name
        assert (None if pd.isna(row["out_axis"]) else int(row["out_axis"])) == axis, name
        assert (row["module_type"] if isinstance(row["module_type"], str) else None) == cls, name
        assert_row_matches(row.to_dict() | {"name": name}, arrays[inner])
    assert t.loc["my_layer/vars/1", "layer"] == "my_layer"


def test_bfloat16_datasets_are_viewed_as_bfloat16(tmp_path):
    values = np.linspace(-3, 2, 24, dtype=np.float32).reshape(4, 6).astype(ml_dtypes.bfloat16)
    path = tmp_path / "bf.weights.h5"
    write_keras3_weights(path, {"layers/dense/vars/0": values, "layers/dense/vars/1": values[0]},
                         bf16=("layers/dense/vars/0", "layers/dense/vars/1"))
    with h5py.File(path, "r") as f:
        assert f["layers/dense/vars/0"].dtype.kind == "V"  # stored as raw 2-byte values
    t = inspector.inspect(path, chunk_elems=5).tensors.set_index("name")
    assert t.loc["dense/kernel", "dtype"] == "bfloat16"
    assert_row_matches(t.loc["dense/kernel"].to_dict() | {"name": "dense/kernel"}, values.astype(np.float32))


def test_var_names_resolve_optional_variables():
    assert var_names("BatchNormalization", {"center": False}, 3) == ["gamma", "moving_mean", "moving_variance"]
    assert var_names("BatchNormalization", None, 3) is None  # gamma or beta missing: ambiguous
    assert var_names("Dense", None, 1) == ["kernel"]
    assert var_names("Dense", {"use_bias": True}, 1) is None  # config and file disagree
    assert var_names("Unknown", None, 2) is None
    assert kind_of("moving_variance", 1) == "buffer" and kind_of("recurrent_kernel", 2) == "weight"
    assert out_axis_of("weight", "Conv3DTranspose", "kernel", 5) == 3
    assert out_axis_of("bias", "Dense", "bias", 1) is None


NESTED_CONFIG = {
    "module": "keras.src.models.functional", "class_name": "Functional", "registered_name": "Functional",
    "config": {"name": "outer", "layers": [
        {"module": "keras.layers", "class_name": "InputLayer", "config": {"name": "x"}},
        {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d1", "use_bias": False}},
        {"module": "keras.src.models.functional", "class_name": "Functional", "config": {"name": "block", "layers": [
            {"module": "keras.layers", "class_name": "InputLayer", "config": {"name": "bx"}},
            {"module": "keras.layers", "class_name": "Dense", "config": {"name": "inner_dense", "use_bias": True}},
            {"module": "keras.layers", "class_name": "Lambda", "config": {
                "name": "double", "function": {"class_name": "__lambda__", "config": {"code": "4wEAAA=="}}}},
            {"module": "my_pkg.layers", "class_name": "Scale", "registered_name": "my_pkg>Scale",
             "config": {"name": "scale_layer"}},
        ]}},
    ]},
}


def write_nested_keras(path: Path, config: dict, rng) -> dict[str, np.ndarray]:
    arrays = {
        "layers/dense/vars/0": rng.normal(size=(4, 3)).astype(np.float32),
        "layers/functional/layers/dense/vars/0": rng.normal(size=(3, 2)).astype(np.float32),
        "layers/functional/layers/dense/vars/1": rng.normal(size=(2,)).astype(np.float32),
        "layers/functional/layers/scale/vars/0": rng.normal(size=(2,)).astype(np.float32),
        "optimizer/vars/0": np.zeros((4, 3), np.float32),
    }
    weights = path.with_suffix(".h5")
    write_keras3_weights(weights, arrays)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.4.1", "date_saved": "2024-01-01"}))
        z.writestr("config.json", json.dumps(config))
        z.write(weights, "model.weights.h5")
    weights.unlink()
    return arrays


def test_nested_keras_zip_names_and_findings(tmp_path):
    path = tmp_path / "nested.keras"
    arrays = write_nested_keras(path, NESTED_CONFIG, np.random.default_rng(1))
    result = inspector.inspect(path)
    t = result.tensors.set_index("name")
    assert list(t.index) == ["d1/kernel", "block/inner_dense/kernel", "block/inner_dense/bias", "block/scale_layer/vars/0"]
    assert t.loc["block/inner_dense/bias", "layer"] == "block/inner_dense"
    assert t.loc["block/scale_layer/vars/0", "module_type"] == "Scale"
    for name, inner in (("d1/kernel", "layers/dense/vars/0"), ("block/inner_dense/bias", "layers/functional/layers/dense/vars/1")):
        assert_row_matches(t.loc[name].to_dict() | {"name": name}, arrays[inner])
    findings = {(f.type, f.subject) for f in result.summary["findings"]}
    assert findings == {("lambda", "block/double"), ("custom_object", "block/scale_layer")}
    assert result.summary["keras_version"] == "3.4.1"


def test_findings_reach_the_terminal_and_json(tmp_path):
    path = tmp_path / "nested.keras"
    write_nested_keras(path, NESTED_CONFIG, np.random.default_rng(2))
    out = tmp_path / "r.json"
    res = run_cli(path, "--json", out)
    assert res.exit_code == 0, res.output
    assert "finding lambda: block/double" in res.output and "my_pkg>Scale" in res.output
    findings = json.loads(out.read_text())["summary"]["findings"]
    # the random weights also give a dead-ReLU candidate (block/inner_dense unit 1): a weight finding
    assert {f["type"] for f in findings} - {"dead_relu"} == {"lambda", "custom_object"}


def test_keras_2_13_archives_key_layers_by_name(tmp_path):
    """The .keras format of Keras 2.13-2.15 keeps layers under ``_layer_checkpoint_dependencies/<name>``."""
    rng = np.random.default_rng(3)
    deps = "_layer_checkpoint_dependencies"
    arrays = {
        f"{deps}/d1/vars/0": rng.normal(size=(4, 3)),
        f"{deps}/block/{deps}/inner_dense/vars/0": rng.normal(size=(3, 2)),
        f"{deps}/block/{deps}/inner_dense/vars/1": rng.normal(size=(2,)),
    }
    weights = tmp_path / "w.h5"
    write_keras3_weights(weights, arrays)
    path = tmp_path / "k213.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(NESTED_CONFIG))
        z.write(weights, "model.weights.h5")
    t = inspector.inspect(path).tensors.set_index("name")
    assert list(t.index) == ["d1/kernel", "block/inner_dense/kernel", "block/inner_dense/bias"]
    assert t.loc["block/inner_dense/kernel", "module_type"] == "Dense"
    assert_row_matches(t.loc["block/inner_dense/bias"].to_dict() | {"name": "x"},
                       arrays[f"{deps}/block/{deps}/inner_dense/vars/1"])


def write_legacy(path: Path, config: dict | None, layers: dict[str, dict[str, np.ndarray]]) -> None:
    with h5py.File(path, "w") as f:
        if config is not None:
            f.attrs["model_config"] = json.dumps(config)
        g = f.create_group("model_weights") if config is not None else f
        g.attrs["layer_names"] = np.array([n.encode() for n in layers])
        for layer, weights in layers.items():
            lg = g.create_group(layer)
            lg.attrs["weight_names"] = np.array([w.encode() for w in weights])
            for w, v in weights.items():
                lg.create_dataset(w, data=v)


def test_legacy_lambda_and_custom_objects_in_nested_models(tmp_path):
    config = {"class_name": "Functional", "config": {"name": "model", "layers": [
        {"class_name": "Dense", "config": {"name": "dense"}},
        {"class_name": "Sequential", "config": {"name": "block", "layers": [
            {"class_name": "Lambda", "config": {"name": "lam", "function": ["4wEAAA==", None, None],
                                                 "function_type": "lambda"}},
            {"class_name": "Custom>Gate", "config": {"name": "gate"}},
        ]}},
    ]}}
    path = tmp_path / "lam.h5"
    write_legacy(path, config, {"dense": {"dense/kernel:0": np.ones((2, 2))}, "block": {}, "lam": {}})
    with h5py.File(path, "r+") as f:
        f.attrs["training_config"] = json.dumps({"loss": {"class_name": "my_losses>Focal", "config": {}}})
    result = inspector.inspect(path)
    assert {(f.type, f.subject) for f in result.summary["findings"]} == {
        ("lambda", "block/lam"), ("custom_object", "block/gate"), ("custom_object", "(model)")}
    assert list(result.tensors["name"]) == ["dense/kernel"]


def test_legacy_top_level_model_weights_and_nested_weight_names(tmp_path):
    path = tmp_path / "top.h5"
    write_legacy(path, {"class_name": "Model", "config": {"name": "m", "layers": []}},
                 {"block": {"block/inner_dense/kernel:0": np.ones((3, 2)), "inner_dense/bias:0": np.ones(2)}})
    with h5py.File(path, "r+") as f:
        top = f["model_weights"].create_group("top_level_model_weights")
        top.attrs["weight_names"] = np.array([b"temperature:0"])
        top.create_dataset("temperature:0", data=np.array(1.5))
    t = inspector.inspect(path).tensors.set_index("name")
    assert list(t.index) == ["block/inner_dense/kernel", "block/inner_dense/bias", "temperature"]
    assert t.loc["temperature", "layer"] == "" and t.loc["temperature", "mean"] == 1.5


# --- safety --------------------------------------------------------------------------------------


def test_inspecting_never_imports_tensorflow_keras_or_torch():
    files = [str(FIX / f) for f in sorted(FORMS)]
    code = (
        "import sys, inspector\n"
        "for f in sys.argv[1:]: inspector.inspect(f)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'torch', 'tf_keras'))\n"
        "print('IMPORTED', bad)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("IMPORTED []")


def test_external_links_are_refused(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("secret", data=np.ones(3))
    path = tmp_path / "link.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_group("layers/dense/vars")["0"] = h5py.ExternalLink(str(other), "secret")
    with pytest.raises(UnsafeCheckpoint, match="another file"):
        inspector.inspect(path)


def test_hdf5_that_is_not_keras_is_unsupported(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.ones(3))
    res = run_cli(path)
    assert res.exit_code == 1 and res.output.startswith("error: ") and "not a Keras checkpoint" in res.output


def corrupt_variants(src: Path):
    data = src.read_bytes()
    rng = np.random.default_rng(7)
    yield "empty-after-magic", data[:8]
    for frac in (0.05, 0.3, 0.6, 0.95):
        yield f"truncated-{frac}", data[: int(len(data) * frac)]
    for i in range(4):
        b = bytearray(data)
        for p in rng.integers(0, len(b), size=64):
            b[p] = int(rng.integers(0, 256))
        yield f"flipped-{i}", bytes(b)


@pytest.mark.parametrize("fixture", ["digits_keras_legacy.h5", "digits_keras.weights.h5", "digits_keras.keras"])
def test_corrupt_files_give_one_error_line(tmp_path, fixture):
    src = FIX / fixture
    for label, data in corrupt_variants(src):
        path = tmp_path / f"{label}{''.join(src.suffixes)}"
        path.write_bytes(data)
        res = run_cli(path, "--quiet")
        if res.exit_code == 0:  # a flip that only changed values is a readable file
            assert "flipped" in label
            continue
        assert res.exit_code == 1, (label, res.output)
        assert res.output.startswith("error: ") and "Traceback" not in res.output, (label, res.output)
        assert "unexpected" not in res.output, (label, res.output)


FUZZ = r"""
import random, sys
from pathlib import Path
import inspector
from inspector.errors import InspectorError
rng = random.Random(int(sys.argv[1]))
tmp = Path(sys.argv[2])
bad = []
for src in map(Path, sys.argv[3:]):
    data = src.read_bytes()
    for i in range(25):
        b = bytearray(data[: rng.randrange(8, len(data))] if i % 2 else data)
        for _ in range(rng.choice([0, 1, 8, 64]) if i % 2 else rng.choice([1, 8, 64])):
            b[rng.randrange(len(b))] = rng.randrange(256)
        path = tmp / f"{i}{''.join(src.suffixes)}"
        path.write_bytes(bytes(b))
        try:
            inspector.inspect(path)
        except InspectorError:
            pass
        except Exception as e:
            bad.append(f"{src.name} #{i}: {type(e).__name__}: {e}")
print("BAD", bad)
"""


def test_fuzzed_files_never_crash_or_escape_as_other_errors(tmp_path):
    """Truncations and byte flips in a child process: no interpreter crash, only InspectorError."""
    files = [str(FIX / f) for f in ("digits_keras_legacy.h5", "digits_keras.weights.h5", "digits_keras.keras")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", FUZZ, "11", str(tmp_path), *files],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.strip().splitlines()[-1] == "BAD []", out.stdout[-3000:]


# --- Keras 3 sharded weights --------------------------------------------------------------------


SHARDED = FIX / "digits_keras_sharded"


def test_sharded_weights_equal_the_single_file(tmp_path):
    """The index, its directory and the unsharded weights file give the same table."""
    whole = inspector.inspect(FIX / "digits_keras.weights.h5").tensors
    for source in (SHARDED / "model.weights.json", SHARDED):
        result = inspector.inspect(source)
        assert result.summary["format"] == "keras-weights-sharded"
        assert "3 shards from model.weights.json" in result.summary["notes"]
        pd.testing.assert_frame_equal(result.tensors, whole)
    res = run_cli(SHARDED, "--quiet", "--csv", tmp_path / "t.csv")
    assert res.exit_code == 0, res.output
    assert pd.read_csv(tmp_path / "t.csv")["name"].tolist() == whole["name"].tolist()


def test_a_directory_with_one_weights_file(tmp_path):
    """A KerasHub-style preset directory: model.weights.h5 beside JSON files that are not read."""
    shutil.copy(FIX / "digits_keras.weights.h5", tmp_path / "model.weights.h5")
    (tmp_path / "config.json").write_text('{"class_name": "SomeBackbone"}')
    (tmp_path / "tokenizer.json").write_text("{}")
    whole = inspector.inspect(FIX / "digits_keras.weights.h5").tensors
    pd.testing.assert_frame_equal(inspector.inspect(tmp_path).tensors, whole)
    shutil.copy(FIX / "digits_keras.weights.h5", tmp_path / "other.weights.h5")  # two: which one?
    res = run_cli(tmp_path, "--quiet")
    assert res.exit_code == 1 and "holds several checkpoints" in res.output
    assert "model.weights.h5, other.weights.h5" in res.output


def write_shards(folder: Path, shards: dict[str, dict[str, np.ndarray]], names: dict[str, str] | None = None,
                 weight_map: dict | None = None) -> Path:
    """Shard files of datasets (path -> array), ``vars`` name attributes, and an index."""
    folder.mkdir(exist_ok=True)
    listed: dict[str, list[str]] = {}
    for fname, arrays in shards.items():
        with h5py.File(folder / fname, "w") as f:
            for key, value in arrays.items():
                f.create_dataset(key, data=value)
                listed.setdefault("/" + key.rsplit("/", 1)[0], []).append(fname)
            for group, name in (names or {}).items():
                if group in f:
                    f[group].attrs["name"] = name
    index = folder / "model.weights.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map if weight_map is not None else listed}))
    return index


def test_a_layer_split_between_shards_is_read_as_one(tmp_path):
    rng = np.random.default_rng(1)
    kernel, bias, other = rng.normal(size=(5, 3)), rng.normal(size=3), rng.normal(size=(3, 2))
    index = write_shards(tmp_path, {
        "model_00000.weights.h5": {"layers/dense/vars/0": kernel},
        "model_00001.weights.h5": {"layers/dense/vars/1": bias, "layers/dense_1/vars/0": other},
    }, names={"layers/dense/vars": "fc"})
    t = inspector.inspect(index).tensors.set_index("name")
    assert list(t.index) == ["fc/kernel", "fc/bias", "dense_1/kernel"]
    assert list(t["kind"]) == ["weight", "bias", "weight"]
    for name, values in (("fc/kernel", kernel), ("fc/bias", bias), ("dense_1/kernel", other)):
        assert_row_matches(t.loc[name].to_dict() | {"name": name}, values)


@pytest.mark.parametrize("case,message", [
    ("duplicate", "more than one shard"),
    ("missing", "shard model_00009.weights.h5 is missing"),
    ("traversal", "not a file next to the index"),
    ("absolute", "not a file next to the index"),
    ("no-map", "not a Keras shard index"),
    ("not-json", "not valid JSON"),
    ("not-hdf5", "failed"),
    ("external-link", "links to another file"),
])
def test_bad_sharded_checkpoints_give_one_error_line(tmp_path, case, message):
    one = {"layers/dense/vars/0": np.ones((2, 2))}
    shards = {"model_00000.weights.h5": one, "model_00001.weights.h5": {"layers/dense/vars/1": np.ones(2)}}
    weight_map = None
    if case == "duplicate":
        shards["model_00001.weights.h5"] = one
    elif case == "missing":
        weight_map = {"/layers/dense/vars": ["model_00000.weights.h5", "model_00009.weights.h5"]}
    elif case == "traversal":
        weight_map = {"/layers/dense/vars": ["../model_00000.weights.h5"]}
    elif case == "absolute":
        weight_map = {"/layers/dense/vars": [str(tmp_path / "model_00000.weights.h5")]}
    elif case == "no-map":
        weight_map = {}
    index = write_shards(tmp_path, shards, weight_map=weight_map)
    if case == "not-json":
        index.write_text('{"weight_map": ')
    elif case == "not-hdf5":
        (tmp_path / "model_00001.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    elif case == "external-link":
        with h5py.File(tmp_path / "model_00001.weights.h5", "a") as f:
            f["layers/dense/vars"]["2"] = h5py.ExternalLink(str(tmp_path / "model_00000.weights.h5"),
                                                            "layers/dense/vars/0")
    res = run_cli(index, "--quiet")
    assert res.exit_code == 1, res.output
    assert res.output.startswith("error: ") and res.output.count("\n") == 1 and message in res.output, res.output
