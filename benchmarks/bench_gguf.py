#!/usr/bin/env python
"""GGUF benchmark: winspect's dequantization against gguf-py's numpy dequantization, same file, one run.

Writes, in a temporary directory (deleted at the end), a LLaMA-shaped GGUF file in the Q4_K_M
mix (Q4_K for most matrices, Q6_K for the output, the value projections and every other
down projection, F32 norms) made of random valid blocks (random bytes, bounded float16
scales), ``--layers`` blocks of width ``--dim``, and measures, each the fastest of
``--repeat`` passes with the file in the page cache:

* gguf-py: ``GGUFReader`` and ``gguf.quants.dequantize`` of every tensor (its numpy code);
* winspect's dequantization alone: every chunk of every record of the opened file, with the
  compiled kernels (and with its numpy functions, ``WINSPECT_NO_KERNELS=1`` in a child);
* ``winspect FILE --csv out.csv --quiet``: the whole command, every statistic;
* each compiled kernel alone on 2**20 values of random blocks (MB/s of blocks, one thread).

Throughput is file bytes per second. Run from the repository root: ``python benchmarks/bench_gguf.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inspector.loaders.dequant import TYPES  # noqa: E402

MB = 10**6
Q4_K, Q6_K, F32 = 12, 14, 0
SCALES = {Q4_K: (0, 2), Q6_K: (208,)}


def layout(dim: int, layers: int, vocab: int) -> list[tuple[str, tuple[int, ...], int]]:
    """(name, numpy shape, type) of a LLaMA-shaped model in llama.cpp's Q4_K_M mix."""
    ffn = dim * 8 // 3 // 256 * 256
    out = [("token_embd.weight", (vocab, dim), Q4_K)]
    for i in range(layers):
        p = f"blk.{i}."
        out += [(p + "attn_norm.weight", (dim,), F32), (p + "attn_q.weight", (dim, dim), Q4_K),
                (p + "attn_k.weight", (dim, dim), Q4_K), (p + "attn_v.weight", (dim, dim), Q6_K),
                (p + "attn_output.weight", (dim, dim), Q4_K), (p + "ffn_norm.weight", (dim,), F32),
                (p + "ffn_gate.weight", (ffn, dim), Q4_K), (p + "ffn_up.weight", (ffn, dim), Q4_K),
                (p + "ffn_down.weight", (dim, ffn), Q6_K if i % 2 == 0 else Q4_K)]
    return out + [("output_norm.weight", (dim,), F32), ("output.weight", (vocab, dim), Q6_K)]


def random_data(shape: tuple[int, ...], type_id: int, rng) -> np.ndarray:
    """Random valid blocks (bounded float16 scales) of a quantized type, or float32 values."""
    numel = int(np.prod(shape))
    if type_id == F32:
        return (1 + 0.1 * rng.standard_normal(numel)).astype(np.float32)
    t = TYPES[type_id]
    blocks = rng.integers(0, 256, size=(numel // t.block, t.size), dtype=np.uint8)
    for at in SCALES[type_id]:
        d = (np.abs(rng.standard_normal(blocks.shape[0])) * 1e-3).astype(np.float16)
        blocks[:, at : at + 2] = d.view(np.uint8).reshape(-1, 2)
    return blocks


def write_file(path: Path, dim: int, layers: int, vocab: int) -> int:
    import gguf

    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tensors = layout(dim, layers, vocab)
    for name, shape, type_id in tensors:
        t = TYPES[type_id]
        nbytes = int(np.prod(shape)) // t.block * t.size
        stored = shape if type_id == F32 else (*shape[:-1], shape[-1] // t.block * t.size)  # gguf-py: byte shape
        writer.add_tensor_info(name, stored, np.dtype(np.float32) if type_id == F32 else np.dtype(np.uint8), nbytes,
                               raw_dtype=gguf.GGMLQuantizationType(type_id))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, shape, type_id in tensors:
        writer.write_tensor_data(random_data(shape, type_id, rng))
    writer.close()
    return path.stat().st_size


def gguf_py_pass(path: Path) -> float:
    import gguf

    start = time.perf_counter()
    reader = gguf.GGUFReader(str(path))
    for t in reader.tensors:
        gguf.quants.dequantize(t.data, t.tensor_type)
    return time.perf_counter() - start


def winspect_pass(path: Path) -> float:
    from inspector.loaders import open_source

    start = time.perf_counter()
    with open_source(str(path)) as src:
        for rec in src.records():
            for _ in rec.chunks(1 << 20):
                pass
    return time.perf_counter() - start


CHILD = "import sys; sys.path.insert(0, sys.argv[1]); from benchmarks.bench_gguf import winspect_pass; " \
        "from pathlib import Path; print(winspect_pass(Path(sys.argv[2])))"


def numpy_path_pass(path: Path) -> float:
    env = {**os.environ, "WINSPECT_NO_KERNELS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(path)], env=env, capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip())


def kernel_speeds(repeat: int = 15) -> dict[str, float]:
    """MB/s of blocks each compiled kernel decodes on 2**20 values of random blocks, one thread, best of ``repeat``."""
    from inspector.loaders import dequant

    if dequant.native is None:
        return {}
    rng, out = np.random.default_rng(0), {}
    for type_id in sorted(dequant.DECODED):
        t = TYPES[type_id]
        raw = rng.integers(0, 256, size=(1 << 20) // t.block * t.size, dtype=np.uint8)
        dst = np.empty(1 << 20, dtype=np.float32)
        best = min(_timed(dequant.native.dequantize, type_id, raw, dst) for _ in range(repeat))
        out[t.name] = round(raw.nbytes / MB / best, 0)
    return out


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def command_pass(path: Path, tmp: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from inspector.cli import main; main()", str(path), "--csv",
                    str(tmp / "out.csv"), "--quiet"], env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)
    from inspector.loaders import dequant

    with tempfile.TemporaryDirectory(prefix="winspect-gguf-bench-") as d:
        tmp = Path(d)
        path = tmp / "model-Q4_K_M.gguf"
        size = write_file(path, args.dim, args.layers, args.vocab)
        times = {"gguf_py": [], "winspect_dequant": [], "winspect_numpy_dequant": [], "winspect_command": []}
        for _ in range(args.repeat):
            times["gguf_py"].append(gguf_py_pass(path))
            times["winspect_dequant"].append(winspect_pass(path))
            times["winspect_numpy_dequant"].append(numpy_path_pass(path))
            times["winspect_command"].append(command_pass(path, tmp))
    best = {k: min(v) for k, v in times.items()}
    result = {
        "file_mb": round(size / MB, 1), "compiled_kernels": dequant.native is not None,
        **{f"{k}_s": round(v, 3) for k, v in best.items()},
        **{f"{k}_mb_s": round(size / MB / v, 1) for k, v in best.items()},
        "speedup_dequant": round(best["gguf_py"] / best["winspect_dequant"], 1),
        "speedup_numpy_dequant": round(best["gguf_py"] / best["winspect_numpy_dequant"], 1),
        "speedup_command": round(best["gguf_py"] / best["winspect_command"], 1),
        "kernel_mb_s": kernel_speeds(),
        "machine": f"{os.cpu_count()} CPUs {platform.processor() or platform.machine()}, numpy {np.__version__}",
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
