#!/usr/bin/env python
"""``winspect scan`` on a zoo of small checkpoints: pool scaling, per-model overhead, Dask, client memory.

Makes ``--models`` small safetensors files (three tensors each, a few thousand values) in a temporary
directory, then runs, each in a fresh child process:

* ``single``: ``inspect`` of every model one after the other in one process (the work itself);
* ``local-1`` / ``local-2``: ``scan`` on a local pool of 1 and 2 processes; throughput ratio, and the
  per-model overhead: local-1's scan time minus single's, per model, and (not moved by the load changing
  between runs) local-1's scan time minus the sum of its tasks' own ``seconds``, per model;
* ``dask-2``: ``scan`` on a ``LocalCluster`` of 2 worker processes on 127.0.0.1 (started and warmed
  before the clock starts), with the default grouping of small models into tasks, its rows compared
  with local-2's; ``dask-2-1``: the same with one task per model (``models_per_task=1``); ``dask-null``:
  as many tasks that do nothing, handed out and taken back as the scan does (``client.map``,
  ``as_completed``): Dask's own cost per task on that cluster; for these, ``cpu_s_during``: the CPU
  seconds of the run alone (``cpu_s`` counts the cluster's start too);
* ``split-1`` / ``split-2``: the bound on the pool's scaling here: the same tasks (inspection and tensor
  file) split between 1 and 2 forked processes, with no client, scheduler, journal or table writer;
* for each of those, ``cpu_s``: the CPU seconds of the client and of the processes below it (the table
  writer, the fork server, the pool or Dask processes), sampled with ``psutil`` every 0.1 s in a second
  run of the configuration (the times come from a run without the sampler); in the local modes the
  table writer is a child of the fork server, counted with the workers;
* ``mem-M``: the client's peak RSS (its own ``ru_maxrss``; pool processes are not in it) scanning the
  first M models on 2 local workers, for each M of ``--memory`` (default 100 and N), each twice.

``--runs R`` runs every configuration R times in turn on the same zoo, and gives each figure's
[min, median, max] over the runs (``summary``). Every run writes into a directory of its own and nothing
is deleted before the end: on ext4, for a few minutes after thousands of files were deleted, making a
new file costs much more (the inode allocator skips inodes deleted recently, reading each one's inode
table block; perf showed 15-21 % of a scan's CPU there), and the configurations that ran just after a
deletion were slower than the others.

    python benchmarks/bench_scan.py --models 1000 --runs 9
    python benchmarks/bench_scan.py --models 3000 --memory 100,1000,3000 --memory-only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, threading, time
from pathlib import Path
mode, zoo, out, n, cpu = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
from inspector import inspect
from inspector.scan import scan, discover
seen = {}  # pid -> (role, CPU seconds at the last look), of every process below this one


def role(cmd, direct):
    # pool processes are children of the fork server, with its command line; Dask's nannies and workers,
    # the split modes' forked processes (this one's command line) and any other process count as workers
    if cmd == ME:
        return "workers"
    if "scan.writer" in cmd:
        return "table writer"
    if "resource_tracker" in cmd:
        return "resource tracker"
    return "fork server" if "forkserver import main" in cmd and direct else "workers"


ME = " ".join(__import__("psutil").Process().cmdline()) if cpu else ""  # (the split modes' forks have it too)


def watch(stop):
    import psutil
    me = psutil.Process()
    while not stop.is_set():
        for p in me.children(recursive=True):
            try:
                t = p.cpu_times()
                kind = seen[p.pid][0] if p.pid in seen else role(" ".join(p.cmdline()), p.ppid() == me.pid)
                seen[p.pid] = (kind, t.user + t.system)
            except psutil.Error:
                pass
        stop.wait(0.1)


stop = threading.Event()
if cpu:
    threading.Thread(target=watch, args=(stop,), daemon=True).start()
own = time.process_time()
paths = [str(zoo / f"g{g:04d}") for g in range(-(-n // 100))]  # the first n models, 100 a folder
if mode == "single":
    models = discover(paths)
    t = time.perf_counter()
    for m in models:
        inspect(m.path)
    res = {"seconds": time.perf_counter() - t, "models": len(models)}
elif mode.startswith("split"):  # the bound: the same tasks split between forked processes, no scheduler
    import os, tempfile
    from inspector.scan.task import PLACE_MARK, delivered, inspect_model
    models, k = discover(paths), int(mode.split("-")[1])
    place = (tempfile.mkdtemp(dir=out.parent), "token")
    open(os.path.join(place[0], PLACE_MARK), "w").write(place[1])
    for m in models[:5]:  # imports and first calls done before the fork, as a fork server's are
        delivered(m, inspect_model(m), place)
    t = time.perf_counter()
    pids = []
    for i in range(k):
        pid = os.fork()
        if pid == 0:
            for m in models[i::k]:
                delivered(m, inspect_model(m), place)
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    res = {"seconds": time.perf_counter() - t, "models": len(models)}
elif mode.startswith("dask"):
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as c:
        c.run(lambda: __import__("inspector.scan.task"))
        during = (sum(c.run(time.process_time).values()), time.process_time())
        t = time.perf_counter()
        if mode == "dask-null":
            from distributed import as_completed
            for fut, _ in as_completed(c.map(lambda i: ({"path": str(i)}, True), range(n), pure=False),
                                       with_results=True):
                fut.release()
            res = {"seconds": time.perf_counter() - t, "models": n}
        else:
            per_task = int(mode.split("-")[2]) if mode.count("-") == 2 else None  # dask-2-1: one model a task
            r = scan(paths, out, scheduler=cluster.scheduler_address, models_per_task=per_task)
            res = {"seconds": time.perf_counter() - t, "models": r.total}
        # the CPU seconds of the run alone (not the cluster's start): the workers', the client's and its scheduler's
        res["cpu_s_during"] = {"workers": round(sum(c.run(time.process_time).values()) - during[0], 2),
                               "client and scheduler": round(time.process_time() - during[1], 2)}
else:
    t = time.perf_counter()
    r = scan(paths, out, workers=int(mode.split("-")[1]))
    res = {"seconds": time.perf_counter() - t, "models": r.total}
res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
stop.set()
if cpu:  # CPU seconds by process, sampled every 0.1 s (a process's last 0.1 s may be missed)
    res["cpu_s"] = {"client": round(time.process_time() - own, 2)}
    for r, t in seen.values():
        res["cpu_s"][r] = round(res["cpu_s"].get(r, 0.0) + t, 2)
print(json.dumps(res))
"""


def make_zoo(root: Path, n: int) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"g{i // 100:04d}"
        d.mkdir(parents=True, exist_ok=True)
        save_file({"fc1.weight": rng.standard_normal((32, 64), dtype=np.float32),
                   "fc1.bias": rng.standard_normal(32, dtype=np.float32),
                   "fc2.weight": rng.standard_normal((10, 32), dtype=np.float32)}, str(d / f"m{i:05d}.safetensors"))


def child(mode: str, zoo: Path, out: Path, n: int, cpu: bool = False) -> dict:
    """One configuration in a fresh process; with ``cpu``, the CPU time of each of its processes too
    (``psutil``, not for the memory runs: it would be in the client's memory)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(zoo), str(out), str(n), "1" if cpu else "0"],
                          env=env, cwd=ROOT,
                          capture_output=True, text=True, check=True)  # cwd: "-c" imports from it first
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timed_and_sampled(mode: str, tmp: Path, n: int, name: str) -> dict:
    """One configuration run twice, into ``tmp/name`` and ``tmp/name-sampled``: timed (its seconds, and the
    rest of its figures) and then sampled for ``cpu_s``, so that the sampler's own CPU (a thread of the
    client reading every process below it ten times a second) is not in the time: with two workers it
    takes its share of the cores they use, with one it sits on the idle core, and it lowered the measured
    scaling."""
    res = child(mode, tmp / "zoo", tmp / name, n)
    res["cpu_s"] = child(mode, tmp / "zoo", tmp / f"{name}-sampled", n, cpu=True)["cpu_s"]
    return res


FIGURES = ("speedup_2_vs_1", "overhead_ms_per_model", "overhead_ms_per_model_in_run", "dask_vs_local_throughput",
           "dask_1_vs_local_throughput", "split_2_vs_1")
MODES = ("single", "local-1", "local-2", "dask-2", "dask-2-1", "dask-null", "split-1", "split-2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--memory", help="model counts for the client memory runs (default: 100 and --models)")
    ap.add_argument("--memory-only", action="store_true", help="only the client memory runs")
    ap.add_argument("--runs", type=int, default=1, help="rounds of every configuration on the same zoo")
    args = ap.parse_args()
    sizes = [int(m) for m in (args.memory or f"100,{args.models}").split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="winspect-bench-scan-"))
    try:
        make_zoo(tmp / "zoo", max([args.models, *sizes]))
        # the memory runs first: a child started by this process after it imported pandas (``report``)
        # would report that high-water mark as its own (Linux keeps it over exec)
        out = {"nproc": os.cpu_count(), "models": args.models, "client_peak_rss_mb": memory(tmp, sizes), "runs": []}
        for r in range(0 if args.memory_only else args.runs):
            res = {"load_avg_before": os.getloadavg()}
            for mode in MODES:
                res[mode] = timed_and_sampled(mode, tmp, args.models, f"{mode}-{r}")
                print(mode, res[mode], "load", os.getloadavg(), flush=True)
            res["load_avg_after"] = os.getloadavg()
            out["runs"].append(res)
        for r, res in enumerate(out["runs"]):
            report(res, tmp, args.models, r)
        out["summary"] = summary(out["runs"])
        print(json.dumps(out, indent=1))
    finally:  # nothing is deleted before (see the module's docstring)
        shutil.rmtree(tmp, ignore_errors=True)


def summary(runs: list[dict]) -> dict:
    """[min, median, max] over the runs of each figure and of each configuration's seconds."""
    import statistics

    def spread(values):
        return [round(min(values), 3), round(statistics.median(values), 3), round(max(values), 3)] if values else []

    out = {k: spread([r[k] for r in runs]) for k in FIGURES}
    out.update({f"{m}_seconds": spread([r[m]["seconds"] for r in runs]) for m in MODES})
    out["rows_identical"] = all(r["dask_rows_identical"] and r["dask_1_rows_identical"] for r in runs)
    return out


def memory(tmp: Path, sizes: list[int]) -> dict[str, list[float]]:
    """Model count -> the client's peak RSS in MB scanning that many models, twice, runs interleaved."""
    peaks: dict[str, list[float]] = {str(n): [] for n in sizes}
    for i in range(2):
        for n in sizes:
            r = child("local-2", tmp / "zoo", tmp / f"mem-{n}-{i}", n)
            peaks[str(n)].append(round(r["peak_rss_mb"], 1))
            print(f"mem-{n}", r, "load", os.getloadavg(), flush=True)
    return peaks


def report(res: dict, tmp: Path, n: int, run: int) -> None:
    """Run ``run``'s figures (FIGURES, and whether the Dask rows are the local pool's) into ``res``."""
    import pandas as pd

    a = pd.read_parquet(tmp / f"local-2-{run}" / "models.parquet").drop(columns="seconds")
    b = pd.read_parquet(tmp / f"dask-2-{run}" / "models.parquet").drop(columns="seconds")
    res["dask_rows_identical"] = bool(a.equals(b))
    res["speedup_2_vs_1"] = res["local-1"]["seconds"] / res["local-2"]["seconds"]
    res["overhead_ms_per_model"] = 1000 * (res["local-1"]["seconds"] - res["single"]["seconds"]) / n
    rows1 = pd.read_parquet(tmp / f"local-1-{run}" / "models.parquet")
    # within one run, so not moved by load changing between runs: wall time minus the tasks' own time
    res["overhead_ms_per_model_in_run"] = 1000 * (res["local-1"]["seconds"] - rows1["seconds"].sum()) / n
    res["dask_vs_local_throughput"] = res["local-2"]["seconds"] / res["dask-2"]["seconds"]
    res["split_2_vs_1"] = res["split-1"]["seconds"] / res["split-2"]["seconds"]
    c = pd.read_parquet(tmp / f"dask-2-1-{run}" / "models.parquet").drop(columns="seconds")
    res["dask_1_rows_identical"] = bool(a.equals(c))
    res["dask_1_vs_local_throughput"] = res["local-2"]["seconds"] / res["dask-2-1"]["seconds"]


if __name__ == "__main__":
    main()
