#!/usr/bin/env python
"""winspect benchmark: throughput, peak memory and start-up on synthetic checkpoints.

Builds, in a temporary directory (deleted at the end):

* a sharded safetensors checkpoint of ``--size-gb`` GB mixing bf16 and f32 tensors,
  with one single f32 tensor of 1 GiB (``--size-gb``/8 for smaller sizes);
* a ``--small-mb`` MB float32 safetensors model;
* a ``--pt-gb`` GB PyTorch zip checkpoint (bf16 and f32), when torch is installed.

and measures, in the same run:

* the reference: one plain ``numpy.sum`` pass over the same bytes, read from the page
  cache in 4 MiB ``readinto`` chunks (each chunk summed as float32); the fastest of one
  pass before the tool and two after;
* ``winspect SOURCE --csv out.csv --quiet`` as a child process: wall time, GB/s, the
  ratio to the reference, and its peak RSS from the OS (``os.wait4`` rusage);
* the straightforward implementation (one numpy call per statistic on a float32 copy
  of each tensor) and winspect's analyzer, in this process, on the same subset of
  ``--straight-gb`` GB of tensors: the speed-up;
* ``winspect small.safetensors --csv out.csv``: wall time of the whole command, and
  whether torch or matplotlib got imported.

Run from the repository root: ``python benchmarks/bench.py --size-gb 1`` for a quick run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import ml_dtypes
import numpy as np

try:
    import psutil
except ImportError:  # the summed RSS of the process tree is then not reported
    psutil = None

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GB = 10**9
GiB = 1 << 30
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
DTYPES = {"F32": np.dtype(np.float32), "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64)}
_POOL = np.tile(np.random.default_rng(0).standard_normal(1 << 22).astype(np.float32), 2)


# --- synthetic checkpoints -------------------------------------------------------------
def fill(f, code: str, numel: int, scale: float, seed: int) -> None:
    """Write ``numel`` normal-looking values (integers: 1000 each) in blocks, never holding the tensor."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < numel:
        k = min(1 << 22, numel - done)
        if code == "I64":
            f.write(np.full(k, 1000, dtype=np.int64).tobytes())
            done += k
            continue
        off = int(rng.integers(0, 1 << 22))
        block = _POOL[off : off + k] * np.float32(scale)
        f.write(block.astype(DTYPES[code]).tobytes())
        done += k


def write_safetensors(path: Path, tensors: list[tuple[str, str, tuple[int, ...], float]]) -> int:
    """A safetensors file of (name, dtype code, shape, scale) tensors; returns its size."""
    header, offset = {}, 0
    for name, code, shape, _ in tensors:
        nbytes = math.prod(shape) * DTYPES[code].itemsize
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for i, (name, code, shape, scale) in enumerate(tensors):
            fill(f, code, math.prod(shape), scale, seed=i + len(name))
    return path.stat().st_size


def sharded_layout(size: int) -> list[list[tuple[str, str, tuple[int, ...], float]]]:
    """Shards of about 1 GB: one f32 embedding of 1 GiB (size/8 when smaller), then layers."""
    d, ff = 2048, 5632
    big_rows = min(GiB, size // 8) // (4 * 4096)
    shards = [[("model.embed_tokens.weight", "F32", (big_rows, 4096), 0.02)]]
    left = size - big_rows * 4096 * 4
    layer_bytes = 4 * d * d * 2 + 2 * d * ff * 2 + ff * d * 4 + 2 * d * 4
    cur, cur_bytes = [], 0
    for i in range(max(1, left // layer_bytes)):
        p = f"model.layers.{i}."
        layer = [(p + f"self_attn.{m}_proj.weight", "BF16", (d, d), 0.02) for m in "qkvo"]
        layer += [(p + f"mlp.{m}_proj.weight", "BF16", (ff, d), 0.02) for m in ("gate", "up")]
        layer += [(p + "mlp.down_proj.weight", "F32", (d, ff), 0.01)]
        layer += [(p + n + ".weight", "F32", (d,), 1.0) for n in ("input_layernorm", "post_attention_layernorm")]
        cur += layer
        cur_bytes += layer_bytes
        if cur_bytes >= GB:
            shards.append(cur)
            cur, cur_bytes = [], 0
    if cur:
        shards.append(cur)
    return shards


def make_sharded(folder: Path, size: int) -> Path:
    folder.mkdir()
    shards = sharded_layout(size)
    weight_map = {}
    for i, tensors in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(folder / name, tensors)
        weight_map.update({t[0]: name for t in tensors})
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def make_small(path: Path, size: int) -> Path:
    """A float32 model of about ``size`` bytes: embedding, 4 transformer blocks, norms."""
    d, ff = 512, 2048
    block = 4 * d * d + 2 * d * ff
    vocab = max(1000, (size // 4 - 4 * block) // d)
    tensors = [("embed.weight", "F32", (vocab, d), 0.02)]
    for i in range(4):
        p = f"blocks.{i}."
        tensors += [(p + f"attn.{m}.weight", "F32", (d, d), 0.02) for m in ("q", "k", "v", "o")]
        tensors += [(p + "mlp.up.weight", "F32", (ff, d), 0.02), (p + "mlp.down.weight", "F32", (d, ff), 0.02)]
        tensors += [(p + "ln.weight", "F32", (d,), 1.0), (p + "ln.bias", "F32", (d,), 0.01)]
    write_safetensors(path, tensors)
    return path


PT_SCRIPT = """
import sys, torch
total, path = int(sys.argv[1]), sys.argv[2]
sd, done, i = {}, 0, 0
while done < total:
    dt = torch.bfloat16 if i % 2 else torch.float32
    t = (torch.randn(4096, 4096) * 0.02).to(dt)
    sd[f"layers.{i}.weight"] = t
    sd[f"layers.{i}.bias"] = torch.zeros(4096, dtype=dt)
    done += t.numel() * t.element_size()
    i += 1
torch.save(sd, path)
"""


def make_pt(path: Path, size: int) -> Path | None:
    try:
        subprocess.run([sys.executable, "-c", PT_SCRIPT, str(size), str(path)], check=True)
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"  (no PyTorch checkpoint: {e})")
        return None
    return path


# --- measurements ----------------------------------------------------------------------
def data_files(source: Path) -> list[Path]:
    return sorted(source.glob("*.safetensors")) if source.is_dir() else [source]


def numpy_sum_pass(files: list[Path]) -> tuple[float, int]:
    """Seconds for one numpy.sum pass over the files' bytes from the page cache, and the bytes."""
    buf = np.empty(1 << 20, dtype=np.float32)
    raw = memoryview(buf.view(np.uint8))
    total = 0
    t0 = time.perf_counter()
    with np.errstate(all="ignore"):  # bf16 pairs read as float32 may be NaN or Inf
        for path in files:
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(raw):
                    buf[: n // 4].sum()
                    total += n
    return time.perf_counter() - t0, total


def tree_rss_sampler(pid: int, peak: list) -> threading.Thread:
    """Samples the summed RSS of a process and its descendants every 50 ms into peak[0] (bytes)."""

    def sample():
        try:
            proc = psutil.Process(pid)
            while proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                total = 0
                for p in [proc, *proc.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak[0] = max(peak[0], total)
                time.sleep(0.05)
        except psutil.Error:
            pass

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    return th


def run_child(args: list[str], env_extra: dict | None = None) -> dict:
    """Run a command: wall and CPU seconds (its workers included), exit status, peak RSS (MB) of the
    largest of its processes (from the OS), and the peak of their summed RSS (sampled)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
    peak = [0]
    sampler = tree_rss_sampler(proc.pid, peak) if psutil else None
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if sampler:
        sampler.join(1)
    return {"seconds": wall, "status": os.waitstatus_to_exitcode(status), "peak_rss_mb": usage.ru_maxrss / 1024,
            "cpu_s": usage.ru_utime + usage.ru_stime, "tree_rss_mb": peak[0] / 2**20 if psutil else None}


def winspect_cmd(source: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", "from inspector.cli import main; main()", str(source), *extra]


def straightforward(arr: np.ndarray) -> dict:
    """One numpy call per statistic on a float32 copy of the tensor."""
    x = arr.astype(np.float32)
    return {
        "mean": np.mean(x), "std": np.std(x), "min": np.min(x), "max": np.max(x),
        "abs_mean": np.abs(x).mean(), "l2": np.linalg.norm(x), "neg": (x < 0).sum(), "zero": (x == 0).sum(),
        "nan": np.isnan(x).sum(), "inf": np.isinf(x).sum(), "pct": np.percentile(x, PERCENTILES),
        "hist": np.histogram(x, bins=64),
    }


def subset_records(source: Path, budget: int):
    """Records of every k-th tensor (the 1 GiB one excluded) adding up to about ``budget`` bytes."""
    from inspector.loaders import open_source

    with open_source(str(source)) as src:
        recs = [r for r in src.records() if r.nbytes < GiB // 2]
    total = sum(r.nbytes for r in recs)
    step = max(1, round(total / budget))
    return recs[::step]


def compare_straightforward(source: Path, budget: int) -> dict:
    from inspector.api import analyze_records

    recs = subset_records(source, budget)
    nbytes = sum(r.nbytes for r in recs)
    t0 = time.perf_counter()
    analyze_records(recs)
    fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    for r in recs:
        arr = np.concatenate([c.copy() for c in r.chunks(1 << 24)]).reshape(r.shape)
        straightforward(arr)
    slow = time.perf_counter() - t0
    mix = {str(d): sum(r.nbytes for r in recs if r.dtype == d) / nbytes for d in {r.dtype for r in recs}}
    return {"bytes": nbytes, "tensors": len(recs), "dtype_mix": mix, "winspect_s": fast, "straightforward_s": slow,
            "winspect_gbps": nbytes / fast / GB, "straightforward_gbps": nbytes / slow / GB, "speedup": slow / fast}


def measure_checkpoint(label: str, source: Path, files: list[Path], tmp: Path, threads: str | None) -> dict:
    ref1, nbytes = numpy_sum_pass(files)
    env = {"WINSPECT_THREADS": threads} if threads else None
    tool = run_child(winspect_cmd(source, "--csv", str(tmp / f"{label}.csv"), "--quiet"), env)
    ref = min(ref1, *(numpy_sum_pass(files)[0] for _ in range(2)))
    out = {"bytes": nbytes, "workers": threads or "default", "numpy_sum_s": ref, "numpy_sum_gbps": nbytes / ref / GB,
           **tool, "gbps": nbytes / tool["seconds"] / GB, "ratio_to_numpy_sum": tool["seconds"] / ref,
           "cpu_ratio_to_numpy_sum": tool["cpu_s"] / ref}
    tree = f" (all processes {tool['tree_rss_mb']:.0f} MB)" if tool["tree_rss_mb"] else ""
    print(f"{label:10s} {nbytes / GB:6.2f} GB  winspect {tool['seconds']:6.2f} s ({tool['cpu_s']:.2f} s CPU) "
          f"{out['gbps']:5.2f} GB/s  numpy.sum {ref:5.2f} s {out['numpy_sum_gbps']:5.2f} GB/s  "
          f"ratio {out['ratio_to_numpy_sum']:4.1f}x (CPU {out['cpu_ratio_to_numpy_sum']:4.1f}x)  "
          f"peak RSS {tool['peak_rss_mb']:4.0f} MB{tree}  exit {tool['status']}")
    return out


def measure_small(path: Path, tmp: Path) -> dict:
    csv = tmp / "small.csv"
    runs = [run_child(winspect_cmd(path, "--csv", str(csv))) for _ in range(3)]
    check = (
        "import sys; from inspector.cli import main\n"
        f"main([{str(path)!r}, '--csv', {str(csv)!r}, '--quiet'], standalone_mode=False)\n"
        "print(','.join(m for m in ('torch', 'matplotlib') if m in sys.modules) or 'none')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    imported = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True).stdout.strip()
    bare = run_child([sys.executable, "-c", "pass"])
    best = min(r["seconds"] for r in runs)
    out = {"bytes": path.stat().st_size, "seconds": best, "python_startup_s": bare["seconds"],
           "peak_rss_mb": runs[0]["peak_rss_mb"], "heavy_imports": imported}
    print(f"small      {out['bytes'] / 1e6:6.1f} MB  winspect --csv {best:5.2f} s (best of 3; bare python "
          f"{bare['seconds']:.2f} s)  imported: {imported}")
    return out


def machine() -> dict:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    from inspector.analysis import kernels

    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "nproc": os.cpu_count(), "cpu": model,
            "python": platform.python_version(), "numpy": np.__version__, "load_avg": os.getloadavg(),
            "kernels": "compiled" if kernels.COMPILED else "numpy (not built, or WINSPECT_NO_KERNELS)"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gb", type=float, default=8.0, help="sharded safetensors checkpoint size (GB)")
    ap.add_argument("--small-mb", type=float, default=90.0, help="small float32 model size (MB)")
    ap.add_argument("--pt-gb", type=float, default=1.5, help="PyTorch zip checkpoint size (GB); 0 to skip")
    ap.add_argument("--straight-gb", type=float, default=0.5, help="bytes of tensors for the straightforward run")
    ap.add_argument("--threads", default="default,1",
                    help="comma-separated WINSPECT_THREADS values to run the big checkpoints with "
                         "('default': one worker per CPU)")
    ap.add_argument("--dir", help="where to make the temporary directory (default: the system's)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    a = ap.parse_args(argv)
    need = int((a.size_gb + a.pt_gb + a.small_mb / 1000) * GB * 1.1) + GB
    free = shutil.disk_usage(a.dir or tempfile.gettempdir()).free
    if free < need:
        print(f"error: needs {need / GB:.1f} GB free for the checkpoints, {free / GB:.1f} GB free", file=sys.stderr)
        return 1
    info = machine()
    print(f"{info['date']}  {info['nproc']} CPUs  {info['cpu']}  numpy {info['numpy']}  load {info['load_avg']}  "
          f"kernels {info['kernels']}")
    results = {"machine": info}
    with tempfile.TemporaryDirectory(prefix="winspect-bench-", dir=a.dir) as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        sharded = make_sharded(tmp / "sharded", int(a.size_gb * GB))
        small = make_small(tmp / "small.safetensors", int(a.small_mb * 1e6))
        pt = make_pt(tmp / "model.pt", int(a.pt_gb * GB)) if a.pt_gb > 0 else None
        print(f"made the checkpoints in {time.perf_counter() - t0:.0f} s")
        if pt:
            results["import_torch"] = imp = run_child([sys.executable, "-c", "import torch"])
            print(f"import torch alone: {imp['seconds']:.2f} s, peak RSS {imp['peak_rss_mb']:.0f} MB "
                  "(part of every PyTorch checkpoint run)")
        results["small"] = measure_small(small, tmp)
        for th in a.threads.split(","):
            th = None if th == "default" else th
            key = "" if th is None else f"_workers{th}"
            results["sharded" + key] = measure_checkpoint("sharded", sharded, data_files(sharded), tmp, th)
            if pt:
                results["pytorch_zip" + key] = measure_checkpoint("pytorch", pt, [pt], tmp, th)
        s = compare_straightforward(sharded, int(a.straight_gb * GB))
        results["straightforward"] = s
        print(f"subset     {s['bytes'] / GB:6.2f} GB ({s['tensors']} tensors)  winspect {s['winspect_gbps']:5.2f} GB/s  "
              f"straightforward {s['straightforward_gbps']:5.3f} GB/s  speed-up {s['speedup']:5.1f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
