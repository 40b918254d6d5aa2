"""Hidden findings and per-item costs: complex tensors with NaN/Inf, Keras ``__lambda__`` and fake Keras
classes anywhere in a config, 60,000 Lambda layers, a huge number of zero-size tensors."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from inspector import inspect
from inspector.loaders.keras_config import config_findings
from tests.helpers import ROOT, run_cli

NAN, INF = float("nan"), float("inf")


def complex_values(dtype) -> np.ndarray:
    z = np.exp(1j * np.arange(40, dtype=np.float64)).astype(dtype) * np.linspace(0.5, 2, 40)
    z[3] = complex(1.0, NAN)  # NaN in the imaginary part only
    z[7] = complex(NAN, 0.0)
    z[11] = complex(INF, 0.0)  # Inf in the real part only
    z[13] = complex(-INF, NAN)  # both: counted as NaN
    z[17] = complex(-0.0, 0.0)
    return z.astype(dtype)


def reference(z: np.ndarray) -> dict:
    nan = np.isnan(z.real) | np.isnan(z.imag)
    inf = ~nan & (np.isinf(z.real) | np.isinf(z.imag))
    mag = np.abs(z[~nan & ~inf]).astype(np.float64)
    return {"nan_count": int(nan.sum()), "inf_count": int(inf.sum()), "mean": mag.mean(), "std": mag.std(),
            "min": mag.min(), "max": mag.max(), "zero_count": int((mag == 0).sum())}


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("chunk_elems", [1 << 16, 7])
def test_complex_tensors_in_a_torch_checkpoint(tmp_path, dtype, chunk_elems):
    import torch

    z = complex_values(dtype)
    path = tmp_path / "rope.pt"
    torch.save({"freqs_cis": torch.from_numpy(z.reshape(8, 5)), "w.weight": torch.ones(2, 2)}, path)
    result = inspect(path, chunk_elems=chunk_elems)
    row = result.tensors.set_index("name").loc["freqs_cis"]
    assert row["dtype"] == np.dtype(dtype).name
    ref = reference(z)
    for key in ("nan_count", "inf_count", "zero_count"):
        assert row[key] == ref[key], key
    for key in ("mean", "std", "min", "max"):
        assert row[key] == pytest.approx(ref[key], rel=1e-6), key
    assert any("magnitude |z|" in n and "freqs_cis" in n for n in result.meta["notes"])


def test_audit_fails_on_nan_in_a_complex_buffer(tmp_path):
    import torch

    z = torch.polar(torch.ones(16), torch.arange(16.0))
    z[5] = complex(0.0, NAN)
    path = tmp_path / "llama.pth"
    torch.save({"freqs_cis": z, "tok_embeddings.weight": torch.ones(4, 2)}, path)
    proc = run_cli("audit", str(path), "--fail-on", "nan")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "freqs_cis" in proc.stdout and "1 NaN" in proc.stdout


def test_complex_dataset_in_a_keras_file(tmp_path):
    z = complex_values(np.complex64)
    path = tmp_path / "c.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=z)
    row = inspect(path).tensors.iloc[0]
    assert row["dtype"] == "complex64" and row["nan_count"] == reference(z)["nan_count"]


# --- Keras __lambda__ and fake Keras classes --------------------------------------------------------

MAKE_KERAS = """
import os, sys
os.environ["KERAS_BACKEND"] = "torch"
import keras
inner = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation=lambda x: x * 2)], name="inner")
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), inner], name="outer")
model.compile(loss=lambda a, b: (a - b) ** 2, optimizer="adam")
model.save(sys.argv[1])
"""


def test_keras_lambdas_in_activations_and_compiled_loss_are_reported(tmp_path):
    """Made by Keras itself: a lambda activation in a nested model and a lambda as the compiled loss."""
    path = tmp_path / "lambdas.keras"
    script = tmp_path / "make_keras.py"  # Keras reads a lambda's source, so not from ``-c``
    script.write_text(MAKE_KERAS)
    made = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": "torch"})
    assert made.returncode == 0, made.stderr[-2000:]
    proc = run_cli("audit", str(path), "--fail-on", "lambda,custom_object", "--json", str(tmp_path / "a.json"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    found = json.loads((tmp_path / "a.json").read_text())["findings"]
    lambdas = [f for f in found if f["type"] == "lambda"]
    assert any("inner" in f["subject"] and "activation" in f["detail"] for f in lambdas), lambdas
    assert any("loss" in f["detail"] for f in lambdas), lambdas


def test_lambda_anywhere_and_fake_keras_classes_in_a_config():
    config = {
        "module": "keras", "class_name": "Functional",
        "config": {"name": "m", "layers": [
            {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d", "activation": {
                "class_name": "__lambda__", "config": {"value": ["4wEAAAAAAAAAAAAAAAIAAAADAAAA8wwAAAB8AA==", None, None]}}}},
            {"module": "keras.layers", "class_name": "EvilDense", "config": {"name": "e"}, "registered_name": None},
            {"module": "keras.layers", "class_name": "Conv2D", "config": {"name": "c", "kernel_initializer": {
                "module": "keras.initializers", "class_name": "GlorotUniform", "config": {}}}},
        ]},
        "compile_config": {"loss": {"value": ["4wIAAAAAAAAAAAAAAAIAAAADAAAA8wwAAACXAHwAfAF6CgAAUwAp", None, None]}},
    }
    found = config_findings(config)
    kinds = sorted((f.type, f.subject) for f in found)
    assert kinds == [("custom_object", "e"), ("lambda", "(model)"), ("lambda", "d")], found
    assert any("EvilDense" in f.detail and "keras.layers" in f.detail for f in found)


def test_keras_names_cover_the_installed_keras(monkeypatch):
    """No false custom_object finding for a name the installed Keras exports (skipped without Keras)."""
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "torch"))
    pytest.importorskip("keras")
    sys.path.insert(0, str(ROOT / "fixtures"))
    try:
        from make_keras_names import exported_names
    finally:
        sys.path.pop(0)
    from inspector.loaders.keras_names import KERAS_NAMES

    missing = exported_names() - KERAS_NAMES
    assert not missing, f"rerun fixtures/make_keras_names.py: {sorted(missing)[:10]}"


# --- linear per-item costs ---------------------------------------------------------------------------

SIXTY_THOUSAND_LAMBDAS = """
import sys
from inspector.loaders.keras_config import config_findings
layers = [{"class_name": "Lambda", "config": {"name": f"l{i}", "function": {"class_name": "__lambda__"}}}
          for i in range(60_000)]
found = config_findings({"class_name": "Sequential", "config": {"name": "s", "layers": layers}})
print(len(found))
"""


def test_sixty_thousand_lambda_layers_are_reported_in_linear_time():
    proc = subprocess.run([sys.executable, "-c", SIXTY_THOUSAND_LAMBDAS], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["60000"]


def zero_size_safetensors(path: Path, n: int) -> Path:
    header = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(n)}
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)
    return path


def test_many_zero_size_tensors(tmp_path):
    """20,000 zero-size tensors at offset 0 (benchmarks/hostile_costs.py measures 1,000,000)."""
    path = zero_size_safetensors(tmp_path / "zeros.safetensors", 20_000)
    proc = run_cli("-q", str(path), "--csv", str(tmp_path / "t.csv"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert len(lines) == 20_001 and all(",0,0,0,0," in line for line in lines[1:3])
