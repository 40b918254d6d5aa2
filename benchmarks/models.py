#!/usr/bin/env python
"""winspect on checkpoints shaped like real models, each timed against one numpy.sum pass.

Builds float32 safetensors files in a temporary directory (deleted at the end):

* ``bert``: the layout of a 6-layer, 384-wide sentence-embedding BERT (all-MiniLM-L6-v2):
  103 tensors, 22.7 M values, one 11.7 M-value word embedding, the rest at most 590 k;
* ``resnet``: the tensors of a ResNet-50 (conv weights of 10^3 to 2.4 x 10^6 values, batch-norm
  scales, shifts and running statistics, int64 counters): 320 tensors, 25.6 M values;
* ``small``: 10,000 tensors of 256 values (norm scales and shifts of 5,000 layers);
* ``huge``: 1.9 GB, one float32 embedding of 1 GiB, then bf16 matrices of eight layers.

For each, in this process after import, the best of ``--repeat`` runs of
``inspector.inspect(path)`` with one worker and with one per CPU, and of one plain
``numpy.sum`` pass over the same bytes (read from the page cache in 4 MiB chunks, as
``bench.py`` does); the ratio of the two, in wall time and in CPU time (on a shared machine
the CPU time is the steadier figure). Then the whole command ``winspect bert --csv out``
as a child process, against ``python -c "import numpy, safetensors"``; and the whole command
``winspect huge --csv out --quiet`` with one worker and one per CPU (wall, CPU, peak RSS)
against one numpy.sum pass over the file, and (``huge`` in ``--only``) the same in-process
measurement as for the others.

With ``--stages``, where the in-process time of each file goes, one worker, CPU time (best
of ``--repeat``): opening the file and making the records; reading every value once (no
statistics); the statistics alone (``analysis.parallel.analyze_stream``); with the tensor
table's reducers, per-unit signs (``table.rows.table_rows``); and the whole ``inspect``
(data frames, summary). Each stage's cost is its difference from the one before.

Run from the repository root: ``python benchmarks/models.py`` (about 2 GB of disk for a
minute or two), or ``--only bert,small`` for a part. ``--dir D`` makes the files in ``D``
once and reuses them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench  # noqa: E402  (the same synthetic files as the main benchmark)


def write_safetensors(path: Path, tensors: list[tuple[str, tuple[int, ...], str]]) -> Path:
    """A safetensors file of (name, shape, dtype code) tensors with normal-looking values."""
    bench.write_safetensors(path, [(n, code, shape, 0.02 if len(shape) > 1 else 1.0) for n, shape, code in tensors])
    return path


def bert_layout(layers: int = 6, d: int = 384, ff: int = 1536, vocab: int = 30522) -> list:
    e = "embeddings."
    t = [(e + "word_embeddings.weight", (vocab, d)), (e + "position_embeddings.weight", (512, d)),
         (e + "token_type_embeddings.weight", (2, d)), (e + "LayerNorm.weight", (d,)), (e + "LayerNorm.bias", (d,))]
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for m in ("query", "key", "value"):
            t += [(p + f"attention.self.{m}.weight", (d, d)), (p + f"attention.self.{m}.bias", (d,))]
        t += [(p + "attention.output.dense.weight", (d, d)), (p + "attention.output.dense.bias", (d,)),
              (p + "attention.output.LayerNorm.weight", (d,)), (p + "attention.output.LayerNorm.bias", (d,)),
              (p + "intermediate.dense.weight", (ff, d)), (p + "intermediate.dense.bias", (ff,)),
              (p + "output.dense.weight", (d, ff)), (p + "output.dense.bias", (d,)),
              (p + "output.LayerNorm.weight", (d,)), (p + "output.LayerNorm.bias", (d,))]
    t += [("pooler.dense.weight", (d, d)), ("pooler.dense.bias", (d,))]
    return [(n, s, "F32") for n, s in t]


def _bn(p: str, c: int) -> list:
    return [(p + "weight", (c,), "F32"), (p + "bias", (c,), "F32"), (p + "running_mean", (c,), "F32"),
            (p + "running_var", (c,), "F32"), (p + "num_batches_tracked", (), "I64")]


def resnet_layout() -> list:
    """The state dict of torchvision's resnet50, in its order."""
    t = [("conv1.weight", (64, 3, 7, 7), "F32"), *_bn("bn1.", 64)]
    cin = 64
    for li, (blocks, width) in enumerate(((3, 64), (4, 128), (6, 256), (3, 512)), 1):
        for b in range(blocks):
            p = f"layer{li}.{b}."
            t += [(p + "conv1.weight", (width, cin, 1, 1), "F32"), *_bn(p + "bn1.", width),
                  (p + "conv2.weight", (width, width, 3, 3), "F32"), *_bn(p + "bn2.", width),
                  (p + "conv3.weight", (4 * width, width, 1, 1), "F32"), *_bn(p + "bn3.", 4 * width)]
            if b == 0:
                t += [(p + "downsample.0.weight", (4 * width, cin, 1, 1), "F32"), *_bn(p + "downsample.1.", 4 * width)]
            cin = 4 * width
    return t + [("fc.weight", (1000, 2048), "F32"), ("fc.bias", (1000,), "F32")]


def small_layout(count: int = 10_000, size: int = 256) -> list:
    return [(f"layers.{i // 2}.norm.{'weight' if i % 2 == 0 else 'bias'}", (size,), "F32") for i in range(count)]


def huge_layout(layers: int = 8, d: int = 2048, ff: int = 5632) -> list:
    """1.9 GB: one float32 embedding of 1 GiB, then bf16 attention and MLP matrices and f32 norms."""
    t = [("model.embed_tokens.weight", (1 << 18, 1024), "F32")]
    for i in range(layers):
        p = f"model.layers.{i}."
        t += [(p + f"self_attn.{m}_proj.weight", (d, d), "BF16") for m in "qkvo"]
        t += [(p + f"mlp.{m}_proj.weight", (ff, d), "BF16") for m in ("gate", "up", "down")]
        t += [(p + n + ".weight", (d,), "F32") for n in ("input_layernorm", "post_attention_layernorm")]
    return t


def numpy_sum_pass(path: Path) -> float:
    """Seconds for one numpy.sum pass over the file's bytes, read in 4 MiB chunks."""
    buf = np.empty(1 << 20, dtype=np.float32)
    raw = memoryview(buf.view(np.uint8))
    t0 = time.perf_counter()
    with np.errstate(all="ignore"), open(path, "rb", buffering=0) as f:
        while n := f.readinto(raw):
            buf[: n // 4].sum()
    return time.perf_counter() - t0


def best(fn, repeat: int) -> float:
    """The least wall time of ``repeat`` calls."""
    return best_of(fn, repeat)[0]


def best_of(fn, repeat: int) -> tuple[float, float]:
    """The least wall time and the least CPU time (this process, all threads) of ``repeat`` calls: on a
    shared machine the CPU time says more about the work."""
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def measure_in_process(label: str, path: Path, repeat: int) -> dict:
    import inspector

    inspector.inspect(str(path))  # warm the page cache and the lazy imports
    out = {"bytes": path.stat().st_size}
    out["numpy_sum_s"], out["numpy_sum_cpu_s"] = best_of(lambda: numpy_sum_pass(path), repeat)
    for workers in ("1", str(os.cpu_count() or 1)):
        os.environ["WINSPECT_THREADS"] = workers
        wall, cpu = best_of(lambda: inspector.inspect(str(path)), repeat)
        out[f"threads{workers}"] = {"seconds": wall, "cpu_s": cpu, "ratio": wall / out["numpy_sum_s"],
                                    "cpu_ratio": cpu / out["numpy_sum_cpu_s"]}
    os.environ.pop("WINSPECT_THREADS", None)
    cells = "  ".join(f"{k} {v['seconds']:6.3f} s ({v['ratio']:5.1f}x; CPU {v['cpu_s']:6.3f} s, {v['cpu_ratio']:5.1f}x)"
                      for k, v in out.items() if k.startswith("threads"))
    print(f"{label:7s} {out['bytes'] / 1e6:6.1f} MB  numpy.sum {out['numpy_sum_s'] * 1e3:6.1f} ms "
          f"(CPU {out['numpy_sum_cpu_s'] * 1e3:5.1f} ms)  inspect: {cells}", flush=True)
    return out


def stage_costs(label: str, path: Path, repeat: int) -> dict:
    """CPU seconds (best of ``repeat``, one worker) of the cumulative stages of an in-process inspection
    (see the module docstring), and each stage's own cost."""
    import inspector
    from inspector.analysis.parallel import analyze_stream
    from inspector.loaders import LoadOptions, open_source
    from inspector.table.rows import table_rows

    def records():
        with open_source(str(path), LoadOptions()) as src:
            return list(src.records())

    def read_all():
        for rec in records():
            for _ in rec.chunks(1 << 20):
                pass

    def statistics():
        for _ in analyze_stream(records(), workers=1):
            pass

    def rows():
        with open_source(str(path), LoadOptions()) as src:
            table_rows(src.records(), workers=1)

    steps = {"open + records": records, "read": read_all, "statistics": statistics, "table reducers": rows,
             "tables": lambda: inspector.inspect(str(path))}
    os.environ["WINSPECT_THREADS"] = "1"
    totals = {name: best_of(fn, repeat)[1] for name, fn in steps.items()}
    os.environ.pop("WINSPECT_THREADS", None)
    names = list(totals)
    own = {n: totals[n] - (totals[names[i - 1]] if i else 0.0) for i, n in enumerate(names)}
    print(f"{label:7s} stages (CPU, one worker): " + "  ".join(f"{n} {v * 1e3:.1f} ms" for n, v in own.items())
          + f"  = {totals[names[-1]] * 1e3:.1f} ms", flush=True)
    return {"cumulative_cpu_s": totals, "own_cpu_s": own}


def child_seconds(args: list[str], repeat: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return best(lambda: subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL), repeat)


def measure_command(path: Path, tmp: Path, repeat: int) -> dict:
    cmd = [sys.executable, "-c", "from inspector.cli import main; main()", str(path), "--csv", str(tmp / "o.csv")]
    base = child_seconds([sys.executable, "-c", "import numpy, safetensors"], repeat)
    tool = child_seconds(cmd, repeat)
    target = 1.2 * base + 0.25
    print(f"command  winspect {path.name} --csv: {tool:5.2f} s; python -c 'import numpy, safetensors': {base:5.2f} s; "
          f"target 1.2 x that + 0.25 s = {target:5.2f} s", flush=True)
    return {"winspect_s": tool, "import_numpy_safetensors_s": base, "target_s": target}


def run_child(args: list[str], env_extra: dict) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of a child process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{args} failed")
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def measure_huge(path: Path, tmp: Path, repeat: int) -> dict:
    """The whole command on the 1.9 GB file, one worker and one per CPU, against numpy.sum."""
    cmd = [sys.executable, "-c", "from inspector.cli import main; main()", str(path), "--csv", str(tmp / "h.csv"),
           "--quiet"]
    out = {"bytes": path.stat().st_size}
    for workers in ("1", str(os.cpu_count() or 1)):
        runs = [run_child(cmd, {"WINSPECT_THREADS": workers}) for _ in range(repeat)]
        wall, cpu, rss = min(runs)
        out[f"threads{workers}"] = {"seconds": wall, "cpu_s": cpu, "peak_rss_mb": max(r[2] for r in runs)}
    out["numpy_sum_s"] = best(lambda: numpy_sum_pass(path), repeat)
    cells = "  ".join(f"{k} {v['seconds']:5.2f} s ({v['seconds'] / out['numpy_sum_s']:4.1f}x, CPU {v['cpu_s']:5.2f} s, "
                      f"peak RSS {v['peak_rss_mb']:4.0f} MB)" for k, v in out.items() if k.startswith("threads"))
    print(f"huge    {out['bytes'] / 1e9:6.2f} GB  numpy.sum {out['numpy_sum_s']:5.2f} s  whole command: {cells}",
          flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs of each measurement; the best is kept")
    ap.add_argument("--only", default="bert,resnet,small,command,huge", help="comma-separated subset")
    ap.add_argument("--dir", help="make the files here and keep them (default: a temporary directory)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--stages", action="store_true", help="also the CPU time of each stage, in process")
    a = ap.parse_args(argv)
    only = a.only.split(",")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {os.cpu_count()} CPUs  "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}  numpy {np.__version__}  "
          f"kernels {'numpy' if os.environ.get('WINSPECT_NO_KERNELS') else 'compiled if built'}", flush=True)
    results = {"load_avg": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="winspect-models-") as d:
        tmp = Path(a.dir or d)
        tmp.mkdir(parents=True, exist_ok=True)
        layouts = {"bert": bert_layout, "resnet": resnet_layout, "small": small_layout, "huge": huge_layout}
        files = {k: tmp / f"{k}.safetensors" for k in layouts}
        for label, layout in layouts.items():
            if (label in only or label == "bert" and "command" in only) and not files[label].exists():
                write_safetensors(files[label], layout())
        # child processes first: a child's peak RSS starts from this process's at the fork
        if "huge" in only:
            results["huge"] = measure_huge(files["huge"], tmp, max(2, a.repeat // 2))
        if "command" in only:
            results["command"] = measure_command(files["bert"], tmp, a.repeat)
        for label in ("bert", "resnet", "small", "huge"):
            if label in only:
                repeat = max(2, a.repeat // 2) if label == "huge" else a.repeat
                results[label if label != "huge" else "huge_in_process"] = measure_in_process(label, files[label], repeat)
                if a.stages:
                    results[f"{label}_stages"] = stage_costs(label, files[label], repeat)
    results["load_avg_after"] = os.getloadavg()
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
