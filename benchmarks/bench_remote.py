#!/usr/bin/env python
"""winspect benchmark: remote sources over a loopback HTTP server (tests/http_server.py).

Builds in a temporary directory (deleted at the end):

* a ``--mb`` MB (default 90) safetensors model: an f32 embedding of about a third of it (so that
  cut streams break inside tensors), then layers of f32 and f16 matrices and norms;
* a sharded model of ``--sharded-gb`` GB (default 8): a Llama-like layout in bf16 in four shards with
  an index, whose headers are real and whose data sections are sparse (holes: nothing on disk).

and measures, each inspection a child process (``winspect SOURCE --csv out.csv -q``, its peak RSS
from the OS and an empty private TMPDIR checked afterwards):

1. the 90 MB model read locally, then over HTTP: same tensor table? bytes the server sent against
   the file size; files written;
2. ``--header-only`` on the sharded model over HTTP: bytes sent;
3. the 90 MB model over HTTP with the connection cut every ``--cut-mb`` MB (default 20): same
   table? cuts, requests; peak RSS against the local read.

Run from the repository root: ``python benchmarks/bench_remote.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.http_server import Behaviour, serve  # noqa: E402

STATS = ["name", "kind", "dtype", "shape", "numel", "neg_frac", "zero_frac", "mean", "std", "min", "max", "p01",
         "p99"]


def make_model(path: Path, mb: int) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    budget, d = mb * 1_000_000, 1024
    layer = 4 * d * d + 2 * (2 * d * d) + 4 * d  # f32 q_proj, f16 up_proj, f32 norm
    n = int(budget * 2 / 3 // layer)
    tensors = {"model.embed_tokens.weight": rng.standard_normal(((budget - n * layer) // (4 * d), d), np.float32)}
    for i in range(n):
        p = f"model.layers.{i}."
        tensors[p + "self_attn.q_proj.weight"] = rng.standard_normal((d, d), np.float32) * 0.02
        tensors[p + "mlp.up_proj.weight"] = (rng.standard_normal((2 * d, d)) * 0.02).astype(np.float16)
        tensors[p + "input_layernorm.weight"] = np.ones(d, np.float32)
    save_file(tensors, path)


def llama_entries(total_bytes: float) -> list[tuple[str, tuple[int, ...]]]:
    d, ff, vocab = 4096, 11008, 32000
    per_layer = (4 * d * d + 3 * d * ff + 2 * d) * 2
    layers = max(1, math.ceil((total_bytes - 2 * vocab * d * 2) / per_layer))
    out = [("model.embed_tokens.weight", (vocab, d))]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [(p + f"self_attn.{k}_proj.weight", (d, d)) for k in "qkvo"]
        out += [(p + "mlp.gate_proj.weight", (ff, d)), (p + "mlp.up_proj.weight", (ff, d)),
                (p + "mlp.down_proj.weight", (d, ff))]
        out += [(p + "input_layernorm.weight", (d,)), (p + "post_attention_layernorm.weight", (d,))]
    return out + [("model.norm.weight", (d,)), ("lm_head.weight", (vocab, d))]


def make_sparse_sharded(directory: Path, gb: float, shards: int = 4) -> int:
    """Shards with real headers and sparse (unwritten) data sections; returns the total size."""
    directory.mkdir()
    entries = llama_entries(gb * 1e9)
    per = math.ceil(len(entries) / shards)
    weight_map, total = {}, 0
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        header, offset = {}, 0
        for tname, shape in entries[s * per:(s + 1) * per]:
            n = math.prod(shape) * 2
            header[tname] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
            weight_map[tname] = name
            offset += n
        blob = json.dumps(header).encode()
        blob += b" " * (-len(blob) % 8)
        with open(directory / name, "wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            f.truncate(8 + len(blob) + offset)
        total += 8 + len(blob) + offset
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                        "weight_map": weight_map}))
    return total


def run_winspect(source: str, out: Path, *extra: str) -> dict:
    """winspect in a child process with an empty private TMPDIR: wall time, peak RSS, files it left there."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-tmp-"))
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-c", "from inspector.cli import main; main()", source, "--csv", str(out), "-q", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"winspect failed on {source}: {err}")
    left = [str(p) for p in tmp.rglob("*")]
    tmp.rmdir() if not left else None
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024), "tmp_files": left}


def same_table(a: Path, b: Path) -> bool:
    import pandas as pd

    x, y = (pd.read_csv(p)[STATS].sort_values("name").reset_index(drop=True) for p in (a, b))
    return x.equals(y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=90)
    ap.add_argument("--sharded-gb", type=float, default=8)
    ap.add_argument("--cut-mb", type=int, default=20)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="winspect-bench-remote-"))
    try:
        report(work, args)
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def report(work: Path, args) -> None:
    model = work / "files" / "model.safetensors"
    model.parent.mkdir()
    make_model(model, args.mb)
    size = model.stat().st_size
    sharded_size = make_sparse_sharded(work / "files" / "sharded", args.sharded_gb)
    print(f"load: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (1 and 5 min) on {os.cpu_count()} CPUs")
    local = run_winspect(str(model), work / "local.csv")
    print(f"local   {size / 1e6:.1f} MB: {local}")
    with serve(work / "files") as (base, b):
        remote = run_winspect(f"{base}/files/model.safetensors", work / "remote.csv")
        print(f"http    same table: {same_table(work / 'local.csv', work / 'remote.csv')}; sent {b.sent:,} bytes "
              f"= file + {100 * (b.sent - size) / size:.3f} % in {b.requests} requests on {b.connections} connections; "
              f"{remote}")
    with serve(work / "files") as (base, b):
        head = run_winspect(f"{base}/files/sharded/model.safetensors.index.json", work / "head.csv", "--header-only")
        print(f"header-only on {sharded_size / 1e9:.2f} GB sharded: sent {b.sent:,} bytes ({b.sent / 1024:.1f} KB) in "
              f"{b.requests} requests; {head}")
    with serve(work / "files", Behaviour(cut_every=args.cut_mb * 1_000_000)) as (base, b):
        cut = run_winspect(f"{base}/files/model.safetensors", work / "cut.csv")
        print(f"cut every {args.cut_mb} MB: same table: {same_table(work / 'local.csv', work / 'cut.csv')}; "
              f"{b.cuts} cuts, {b.requests} requests, sent {b.sent:,} bytes; {cut} "
              f"(local peak RSS {local['peak_rss_mb']} MB)")


if __name__ == "__main__":
    main()
