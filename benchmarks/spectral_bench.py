#!/usr/bin/env python
"""Spectral benchmark: ``winspect --spectral`` against WeightWatcher 0.7.7, and a 16384 x 16384 matrix.

Builds in a temporary directory (deleted at the end):

* a ResNet-18 (torchvision, random init with a fixed seed) saved as safetensors;
* a safetensors file holding one 16384 x 16384 float32 matrix (1 GiB, written in slabs,
  Gaussian entries plus a rank-4 signal).

and measures, each as a child process (wall time, CPU time, peak RSS from ``os.wait4``), the best
of ``--runs`` runs:

* ``winspect resnet18.safetensors --spectral --csv out.csv -q`` (the whole command: start-up,
  reading, statistics and every spectral column, the MP fit and the sign spectrum included);
* WeightWatcher: ``import weightwatcher``, build the same ResNet-18 from the same file, and
  ``WeightWatcher(model).analyze()`` with its defaults (no MP fit, no plots); its analyze() time
  alone is reported too;
* ``winspect big.safetensors --spectral --csv out.csv -q``: peak RSS, time, ``spectral_method``.

Run from the repository root: ``python benchmarks/spectral_bench.py [--runs 3] [--skip-big]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import run_child, winspect_cmd  # noqa: E402

BIG = 16384

WW_CHILD = """
import json, logging, sys, time
t0 = time.perf_counter()
import torch, torchvision, weightwatcher as ww
from safetensors.torch import load_file
logging.disable(logging.WARNING)
m = torchvision.models.resnet18()
m.load_state_dict(load_file(sys.argv[1]))
t1 = time.perf_counter()
details = ww.WeightWatcher(model=m).analyze()
t2 = time.perf_counter()
details.to_csv(sys.argv[2])
open(sys.argv[3], "w").write(json.dumps({"analyze_s": t2 - t1, "total_s": t2 - t0, "layers": len(details)}))
"""


MAKE_RESNET = """
import sys, torch, torchvision
from safetensors.torch import save_file
torch.manual_seed(0)
save_file({k: v.contiguous() for k, v in torchvision.models.resnet18().state_dict().items()}, sys.argv[1])
"""


def make_resnet(path: Path) -> None:
    """In a child process: this one stays small, since a child's peak RSS (``ru_maxrss``) counts the
    pages it shares with this process between fork and exec."""
    subprocess.run([sys.executable, "-c", MAKE_RESNET, str(path)], check=True)


def make_big(path: Path, n: int = BIG, slab: int = 1024) -> None:
    """One n x n float32 matrix, written slab by slab (never whole in memory)."""
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal((n, 4)), rng.standard_normal((4, n))
    header = json.dumps({"big.weight": {"dtype": "F32", "shape": [n, n], "data_offsets": [0, n * n * 4]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        for r in range(0, n, slab):
            block = rng.standard_normal((min(slab, n - r), n)) + 0.05 * u[r : r + slab] @ v
            f.write(block.astype(np.float32).tobytes())


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["seconds"])


def time_ww(model: Path, tmp: Path, runs: int) -> dict:
    out = []
    for _ in range(runs):
        res_file = tmp / "ww.json"
        r = run_child([sys.executable, "-c", WW_CHILD, str(model), str(tmp / "ww.csv"), str(res_file)])
        r.update(json.loads(res_file.read_text()))
        out.append(r)
    return best(out)


def time_winspect(source: Path, tmp: Path, runs: int) -> dict:
    out = [run_child(winspect_cmd(source, "--spectral", "--csv", str(tmp / "out.csv"), "-q")) for _ in range(runs)]
    r = best(out)
    with open(tmp / "out.csv", newline="") as f:
        methods = [row["spectral_method"] for row in csv.DictReader(f) if row["spectral_method"]]
    r["methods"], r["analysed"] = sorted(set(methods)), len(methods)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-big", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="winspect-spectral-"))
    try:
        print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; numpy {np.__version__}")
        model = tmp / "resnet18.safetensors"
        make_resnet(model)
        ours = time_winspect(model, tmp, args.runs)
        theirs = time_ww(model, tmp, args.runs)
        print(f"ResNet-18 winspect --spectral: {ours['seconds']:.2f} s, CPU {ours['cpu_s']:.2f} s, peak RSS "
              f"{ours['peak_rss_mb']:.0f} MB, {ours['analysed']} weights")
        print(f"ResNet-18 WeightWatcher analyze(): whole {theirs['seconds']:.2f} s (analyze() {theirs['analyze_s']:.2f} s), "
              f"CPU {theirs['cpu_s']:.2f} s, peak RSS {theirs['peak_rss_mb']:.0f} MB")
        print(f"speed-up: {theirs['seconds'] / ours['seconds']:.1f}x whole command, "
              f"{theirs['analyze_s'] / ours['seconds']:.1f}x against analyze() alone")
        if not args.skip_big:
            big = tmp / "big.safetensors"
            make_big(big)
            r = time_winspect(big, tmp, 1)
            print(f"16384x16384 float32: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"spectral_method {r['methods']}")
            print(f"load after: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
