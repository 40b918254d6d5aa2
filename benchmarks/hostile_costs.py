"""Costs of hostile-but-valid files and of the HDF5 containment, measured through the real command.

    python benchmarks/hostile_costs.py [--zero-size 1000000] [--lambdas 60000] [--name-chars 50000] [--h5-mb 200]

Each case is made in a temporary directory, run once through ``winspect`` (in a fresh interpreter),
and reported as wall seconds and peak RSS (of the command and its children). The files are deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def zero_size(d: Path, n: int) -> Path:
    header = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(n)}
    blob = json.dumps(header).encode()
    path = d / "zeros.safetensors"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)
    return path


def lambdas(d: Path, n: int) -> Path:
    layers = [{"module": "keras.layers", "class_name": "Lambda",
               "config": {"name": f"l{i}", "function": {"class_name": "__lambda__", "config": {"code": "4wEA"}}}}
              for i in range(n)]
    config = {"module": "keras", "class_name": "Sequential", "config": {"name": "s", "layers": layers}}
    h5 = d / "w.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.ones((4, 4), np.float32))
    path = d / "lambdas.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.write(h5, "model.weights.h5")
    return path


def long_name(d: Path, n: int) -> Path:
    from safetensors.numpy import save_file

    path = d / "long.safetensors"
    save_file({"x" * n + ".weight": np.ones((4, 4), np.float32)}, str(path))
    return path


def big_h5(d: Path, mb: int) -> Path:
    path = d / "big.weights.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for i in range(max(1, mb // 16)):
            f.create_dataset(f"layers/dense_{i}/vars/0", data=rng.standard_normal((2048, 2048), dtype=np.float32))
    return path


def measure(args: list[str]) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from inspector.cli import main; main()", *args],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"exit": proc.returncode, "seconds": round(wall, 2), "peak_rss_mb": round(max(peak, before) / 1024),
            "stderr": proc.stderr.strip()[-200:]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zero-size", type=int, default=1_000_000)
    ap.add_argument("--lambdas", type=int, default=60_000)
    ap.add_argument("--name-chars", type=int, default=50_000)
    ap.add_argument("--h5-mb", type=int, default=200)
    a = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        results[f"{a.name_chars:,}-character tensor name (terminal report)"] = measure([str(long_name(d, a.name_chars))])
        results[f"{a.lambdas:,} Lambda layers (.keras audit)"] = measure(
            ["audit", str(lambdas(d, a.lambdas)), "--fail-on", "none", "-q"])
        h5 = big_h5(d, a.h5_mb)
        results[f"{h5.stat().st_size >> 20} MB Keras .weights.h5 (inspect, survey included)"] = measure(
            ["-q", str(h5), "--csv", str(d / "b.csv")])
        results[f"{a.zero_size:,} zero-size safetensors tensors (inspect --csv)"] = measure(
            ["-q", str(zero_size(d, a.zero_size)), "--csv", str(d / "z.csv")])
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
