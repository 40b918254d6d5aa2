#!/usr/bin/env python
"""How long ``winspect experiment`` takes: CPU time, wall time and the machine's load.

Runs the command as a child process (``--out`` in a temporary directory unless given) and
reports its user and system CPU seconds (``os.wait4`` rusage), wall seconds, the share of one
CPU it got, and the load average before and after — on a shared machine the wall time says as
much about the other work as about winspect; the CPU time of this single-threaded run is what an
idle core would take.

    python benchmarks/experiments.py            # the full default run
    python benchmarks/experiments.py --quick    # the reduced budget
    python benchmarks/experiments.py signs --seeds 2 --out /tmp/x

Run from the repository root; needs the torch extra.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time


def measure(args: list[str]) -> dict:
    cmd = [sys.executable, "-c", "from inspector.cli import main; main()", "experiment", "-q", *args]
    load_before = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    cpu = usage.ru_utime + usage.ru_stime
    return {"command": " ".join(["winspect", "experiment", *args]), "exit": os.waitstatus_to_exitcode(status),
            "cpu_s": round(cpu, 1), "user_s": round(usage.ru_utime, 1), "system_s": round(usage.ru_stime, 1),
            "wall_s": round(wall, 1), "cpu_share": round(cpu / wall, 2) if wall else None,
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    args = sys.argv[1:]
    with tempfile.TemporaryDirectory(prefix="winspect-bench-experiments-") as tmp:
        if "--out" not in args:
            args += ["--out", tmp]
        print(json.dumps(measure(args), indent=1))


if __name__ == "__main__":
    main()
