"""Helpers shared by the tests (test modules import this, never each other).

- A plain numpy reference for every statistic: :func:`oracle`, :func:`assert_stats_match`.
- Checkpoints built in temporary directories: good ones of every registered format (the fuzz and
  bad-input tests mutate them) and hostile pickles that would create a marker file if they were
  ever unpickled.

SAMPLES maps each registered loader's name to its samples, (name, maker): a maker writes a small
valid checkpoint into a directory and returns the path to inspect (and to mutate). FORMATS, the
list the generic tests run over, follows the registry; a loader without samples fails
``test_every_registered_format_has_samples``, so a new format joins every generic test by adding
its entry here.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import math

import numpy as np


ROOT = Path(__file__).resolve().parents[1]


def state_dict():
    import torch

    g = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=g),
        "conv.bias": torch.randn(4, generator=g),
        "bn.weight": torch.ones(4),
        "bn.running_mean": torch.zeros(4),
        "fc.weight": torch.randn(3, 16, generator=g),
        "fc.bias": torch.randn(3, generator=g),
    }


def make_safetensors(d: Path) -> Path:
    from safetensors.torch import save_file

    save_file(state_dict(), d / "model.safetensors")
    return d / "model.safetensors"


def make_torch_zip(d: Path) -> Path:
    import torch

    torch.save(state_dict(), d / "model.pth")
    return d / "model.pth"


def make_torch_legacy(d: Path) -> Path:
    import torch

    torch.save(state_dict(), d / "legacy.pth", _use_new_zipfile_serialization=False)
    return d / "legacy.pth"


def legacy_tar(path: Path, values: np.ndarray, extra_pickle: bytes = b"") -> Path:
    """A pre-0.4 tar checkpoint: one FloatStorage, one 2-D tensor over it (a transposed view), and the
    object pickle ``{"w.weight": <tensor 0>}`` (with ``extra_pickle`` spliced in as another entry)."""
    n = values.size
    storages = io.BytesIO()
    storages.write(pickle.dumps(1, protocol=2))
    storages.write(b"\x80\x02(X\x01\x00\x00\x00kX\x03\x00\x00\x00cpuctorch\nFloatStorage\nt.")
    storages.write(struct.pack("<q", n) + values.astype("<f4").tobytes())
    storages.write(pickle.dumps([], protocol=2))
    tensors = io.BytesIO()
    tensors.write(pickle.dumps(1, protocol=2))
    tensors.write(b"\x80\x02(K\x00X\x01\x00\x00\x00kctorch\nFloatTensor\nt.")
    rows, cols = 2, n // 2
    tensors.write(struct.pack("<ii", 2, 0) + struct.pack("<qq", cols, rows) + struct.pack("<qq", 1, cols))
    tensors.write(struct.pack("<q", 0))
    obj = b"\x80\x02}(X\x08\x00\x00\x00w.weightX\x01\x00\x00\x000Q" + extra_pickle + b"u."
    members = {"sys_info": pickle.dumps({"protocol_version": 1001, "little_endian": True,
                                         "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2),
               "pickle": obj, "storages": storages.getvalue(), "tensors": tensors.getvalue()}
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def make_torch_tar(d: Path) -> Path:
    """A legacy tar checkpoint without the tar's trailing padding, so that every truncation cuts data."""
    path = legacy_tar(d / "old.tar", np.linspace(-1, 1, 12, dtype=np.float32))
    with tarfile.open(path) as tar:
        end = max(m.offset_data + m.size for m in tar.getmembers())
    path.write_bytes(path.read_bytes()[:end])
    return path


def make_safetensors_index(d: Path) -> Path:
    from safetensors.torch import save_file

    sd = state_dict()
    names = sorted(sd)
    shards = {"model-00001-of-00002.safetensors": names[:3], "model-00002-of-00002.safetensors": names[3:]}
    weight_map = {}
    for file, keys in shards.items():
        save_file({k: sd[k] for k in keys}, d / file)
        weight_map.update({k: file for k in keys})
    index = d / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index


def varint(n: int) -> bytes:
    """A protobuf varint (for hand-made or mutated ONNX bytes)."""
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def committed(name: str):
    """A maker that copies a committed fixture (the Keras ones are made by fixtures/make_keras_fixtures.py)."""

    def make(d: Path) -> Path:
        shutil.copy(ROOT / "fixtures" / name, d / name)
        return d / name

    return make


def committed_shards(folder: str, index: str):
    """A maker that copies a committed sharded fixture's files into the directory, index included."""

    def make(d: Path) -> Path:
        for f in (ROOT / "fixtures" / folder).iterdir():
            shutil.copy(f, d / f.name)
        return d / index

    return make


def committed_files(*names: str):
    """A maker that copies several committed files (a model and its external data); the first is inspected."""

    def make(d: Path) -> Path:
        for name in names:
            shutil.copy(ROOT / "fixtures" / name, d / name)
        return d / names[0]

    return make


SAMPLES = {
    "safetensors": [("safetensors", make_safetensors)],
    "pytorch": [("pytorch-zip", make_torch_zip), ("pytorch-legacy", make_torch_legacy), ("pytorch-tar", make_torch_tar),
                ("torchscript", committed("digits_cnn_script.pt")),
                ("pytorch-full-model", committed("digits_cnn_full.pt"))],
    "safetensors-sharded": [("safetensors-sharded", make_safetensors_index)],
    "keras-h5": [("keras-h5-legacy", committed("digits_keras_legacy.h5")),
                 ("keras-weights-h5", committed("digits_keras.weights.h5"))],
    "keras-zip": [("keras-zip", committed("digits_keras.keras"))],
    "keras-weights-sharded": [("keras-weights-sharded", committed_shards("digits_keras_sharded", "model.weights.json"))],
    "onnx": [("onnx", committed("digits_cnn.onnx")), ("onnx-int8", committed("digits_cnn_int8.onnx")),
             ("onnx-external", committed_files("digits_cnn_external.onnx", "digits_cnn_external.onnx.data"))],
    "numpy": [("numpy", committed("digits_cnn_fc1.npy"))],
    "numpy-npz": [("numpy-npz", committed("digits_cnn.npz")),
                  ("numpy-npz-compressed", committed("digits_cnn_compressed.npz"))],
    "gguf": [("gguf", committed("tiny_llama.gguf"))],
}


def registry_formats() -> list[tuple[str, object]]:
    """(name, maker) of every registered file format's samples, in the registry's sniffing order."""
    from inspector.loaders import LOADERS

    return [sample for lo in LOADERS for sample in SAMPLES.get(lo.name, [])]


FORMATS = registry_formats()
FORMAT_IDS = [name for name, _ in FORMATS]


# --- hostile pickles ---------------------------------------------------------------------

SYSTEM = f"{os.system.__module__}.system"  # posix.system on Linux


class TouchBySystem:
    """Unpickling this runs ``touch marker`` through os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class TouchByExec:
    """Unpickling this runs Python source through builtins.exec."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


def hostile_files(d: Path, marker: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, the global its refusal must name). Unpickling any of them creates ``marker``."""
    import torch

    sd = {"w": torch.zeros(2)}
    out = {}
    torch.save({**sd, "x": TouchBySystem(marker)}, d / "zip_system.pt")
    out["zip-system"] = (d / "zip_system.pt", SYSTEM)
    torch.save({**sd, "x": TouchByExec(marker)}, d / "zip_exec.pth")
    out["zip-exec"] = (d / "zip_exec.pth", "builtins.exec")
    torch.save({**sd, "x": TouchBySystem(marker)}, d / "legacy_system.pt", _use_new_zipfile_serialization=False)
    out["legacy-system"] = (d / "legacy_system.pt", SYSTEM)
    torch.save({**sd, "x": TouchByExec(marker)}, d / "legacy_exec.bin", _use_new_zipfile_serialization=False)
    out["legacy-exec"] = (d / "legacy_exec.bin", "builtins.exec")
    (d / "plain_p4.pkl").write_bytes(pickle.dumps({"x": TouchBySystem(marker)}, protocol=4))  # STACK_GLOBAL
    out["pickle-protocol4"] = (d / "plain_p4.pkl", SYSTEM)
    (d / "plain_p2.ckpt").write_bytes(pickle.dumps([TouchByExec(marker)], protocol=2))
    out["pickle-protocol2"] = (d / "plain_p2.ckpt", "builtins.exec")
    return out


HOSTILE_IDS = ["zip-system", "zip-exec", "legacy-system", "legacy-exec", "pickle-protocol4", "pickle-protocol2"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real command in a fresh interpreter (a crash there cannot take the test run down)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WINSPECT_OFFLINE": "1"}
    env.pop("WINSPECT_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-c", "from inspector.cli import main; main()", *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )


def assert_clean_error(proc: subprocess.CompletedProcess, name: str) -> str:
    """Exit 1 with exactly one ``error:`` line naming ``name`` on stderr, and no traceback."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]


def reference_counts(sd: dict) -> dict[str, tuple[int, int]]:
    """name -> (numel, negatives) computed with numpy straight from the tensors."""
    return {k: (v.numel(), int(np.sum(v.numpy() < 0))) for k, v in sd.items()}


def inspected_counts(inspection) -> dict[str, tuple[int, int]]:
    t = inspection.tensors
    return {r.name: (int(r.numel), int(r.neg_count)) for r in t.itertuples()}


# Formats whose checkpoint is one self-contained file: renamed to any suffix, it must still be read
# (a lone .npy array is named after its file, so it is not among them).
SELF_CONTAINED = ["safetensors", "pytorch-zip", "pytorch-legacy", "pytorch-tar", "torchscript", "pytorch-full-model",
                  "keras-h5-legacy", "keras-weights-h5", "keras-zip", "onnx", "onnx-int8", "numpy-npz", "gguf"]


# --- a plain numpy reference for every statistic -------------------------------------------

PCTS = (1, 5, 25, 50, 75, 95, 99)


def oracle(values: np.ndarray) -> dict:
    """The statistics of the tensor table, computed the plain way on a float64 copy of the whole tensor."""
    x = np.asarray(values).astype(np.float64).reshape(-1)
    numel = x.size
    nan = int(np.isnan(x).sum())
    inf = int(np.isinf(x).sum())
    f = x[np.isfinite(x)]
    out = {
        "numel": numel,
        "neg_count": int((f < 0).sum()),
        "zero_count": int((f == 0).sum()),
        "pos_count": int((f > 0).sum()),
        "nan_count": nan,
        "inf_count": inf,
    }
    for s in ("neg", "zero", "pos"):
        out[f"{s}_frac"] = out[f"{s}_count"] / numel if numel else math.nan
    if f.size:
        out.update(mean=f.mean(), std=f.std(), min=f.min(), max=f.max(), abs_mean=np.abs(f).mean(),
                   l2_norm=np.linalg.norm(f))
        for q, v in zip(PCTS, np.percentile(f, PCTS)):
            out[f"p{q:02d}"] = v
    else:
        out.update(mean=math.nan, std=math.nan, min=math.nan, max=math.nan, abs_mean=math.nan,
                   l2_norm=0.0 if numel == 0 else math.nan)
        for q in PCTS:
            out[f"p{q:02d}"] = math.nan
    return out


def assert_stats_match(row, values, rtol: float = 1e-9) -> None:
    """Every statistic of a tensor-table row equals the numpy reference; percentiles exactly, to the bit."""
    ref = oracle(values)
    finite = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = finite[np.isfinite(finite)]
    atol = 1e-12 * (float(np.abs(finite).max()) if finite.size else 0.0)
    for key in ("numel", "neg_count", "zero_count", "pos_count", "nan_count", "inf_count"):
        assert int(row[key]) == ref[key], key
    for key in ("neg_frac", "zero_frac", "pos_frac", "mean", "std", "min", "max", "abs_mean", "l2_norm"):
        _close(row[key], ref[key], rtol, atol, key)
    for q in PCTS:
        key = f"p{q:02d}"
        assert row[key] == ref[key] or (math.isnan(ref[key]) and math.isnan(row[key])), (key, row[key], ref[key])


def _close(got, want, rtol, atol, key) -> None:
    got, want = float(got), float(want)
    if math.isnan(want):
        assert math.isnan(got), (key, got, want)
        return
    assert abs(got - want) <= rtol * abs(want) + atol, (key, got, want)


def model_frame(rows: list[dict]):
    """Model rows as the DataFrame ``pd.read_parquet(models.parquet)`` gives: MODEL_COLUMNS in order,
    Int64, string and float64 columns (the pandas route the table writer once took, kept as the reference)."""
    import pandas as pd

    from inspector.scan.task import MODEL_COLUMNS, MODEL_INT_COLUMNS, MODEL_TEXT_COLUMNS

    df = pd.DataFrame(rows, columns=MODEL_COLUMNS)
    for c in MODEL_INT_COLUMNS:
        df[c] = pd.to_numeric(df[c]).astype("Int64")
    for c in MODEL_TEXT_COLUMNS:
        df[c] = df[c].astype("string")
    for c in set(MODEL_COLUMNS) - set(MODEL_INT_COLUMNS) - set(MODEL_TEXT_COLUMNS):
        df[c] = pd.to_numeric(df[c]).astype("float64")
    return df
