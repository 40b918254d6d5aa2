"""HDF5 mutation fuzz: every Keras fixture, one to four bytes changed per mutant, through the whole pipeline.

    python -m tests.hdf5_fuzz --mutants 2000 --jobs 2        # the full run recorded in docs/safety.md
    python -m tests.hdf5_fuzz --mutants 20 --fixtures digits_keras_legacy.h5

Each mutant is written into a case directory of its own beside an output file from an earlier run,
then ``inspect`` reads it (every record, every chunk) and ``to_csv`` writes the output; both run in
worker processes, so that a native crash is counted, not suffered. Outcomes:

- ``ok`` / an ``InspectorError`` class: what a user sees (a report, or one ``error:`` line);
  ``contained crash`` and ``contained hang`` are errors where libhdf5 crashed or hung in winspect's
  surveying child and the user got one ``error:`` line;
- failures: ``crash`` (the worker died), ``hang`` (no answer within ``--timeout``), ``traceback`` (an
  exception that is not an InspectorError), ``lost`` (the input changed or vanished, or a stray file was
  left), ``outside`` (a file other than the mutant and its output was opened; checked with strace
  when it is installed).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ("digits_keras_legacy.h5", "digits_keras_legacy_chunked.h5", "digits_keras_legacy_weights.h5",
            "digits_keras_k3legacy.h5", "digits_keras.weights.h5", "digits_keras.keras")
FAILURES = ("crash", "hang", "traceback", "lost", "outside")
WORDS = (0, 1, 0xFF, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 0xFFFF)
EARLIER = b"an output of an earlier run\n"


def mutate(data: bytes, seed: int) -> bytes:
    """One to four changes: a byte set to a random value, a bit flipped, or a 32-bit word overwritten."""
    rng = random.Random(seed)
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 4))):
        pos = rng.randrange(len(b)) if rng.random() < 0.6 else rng.randrange(min(len(b), 8192))
        op = rng.random()
        if op < 0.6:
            b[pos] = rng.randrange(256)
        elif op < 0.8:
            b[pos] ^= 1 << rng.randrange(8)
        else:
            b[pos:pos + 4] = rng.choice(WORDS).to_bytes(4, "little")[: len(b) - pos]
    return bytes(b)


def case_seed(fixture: str, i: int) -> int:
    return sum(fixture.encode()) * 1_000_003 + i


# --- the worker: one process running cases it is sent, one per line --------------------------

def run_case(case_dir: Path, fixture: str, data: bytes) -> str:
    from inspector import InspectorError, inspect

    path = case_dir / fixture
    path.write_bytes(data)
    out = case_dir / "tensors.csv"
    out.write_bytes(EARLIER)
    try:
        inspect(path).to_csv(out)
        outcome = "ok"
    except InspectorError as e:
        msg = str(e)
        outcome = type(e).__name__
        if "\n" in msg.strip():
            outcome = "traceback"
        elif "HDF5 library crashed" in msg:
            outcome = "contained crash"
        elif "did not finish reading" in msg:
            outcome = "contained hang"
    except Exception as e:  # noqa: BLE001 - that is what is being counted
        outcome = f"traceback: {type(e).__name__}: {str(e)[:200]}"
    left = sorted(p.name for p in case_dir.iterdir())
    if not path.is_file() or path.read_bytes() != data or left != sorted([fixture, "tensors.csv"]):
        outcome = f"lost: {left}"
    elif outcome != "ok" and out.read_bytes() != EARLIER:
        outcome = "lost: the earlier output was changed by a failed run"
    return outcome


def worker(workdir: Path) -> None:
    originals = {f: (ROOT / "fixtures" / f).read_bytes() for f in FIXTURES}
    for line in sys.stdin:
        fixture, i = json.loads(line)
        case_dir = workdir / f"{fixture}.{i}"
        case_dir.mkdir()
        outcome = run_case(case_dir, fixture, mutate(originals[fixture], case_seed(fixture, i)))
        shutil.rmtree(case_dir)
        print(json.dumps([fixture, i, outcome]), flush=True)


# --- the driver ----------------------------------------------------------------------------

class Worker:
    def __init__(self, workdir: Path, trace: Path | None):
        cmd = [sys.executable, "-m", "tests.hdf5_fuzz", "--worker", str(workdir)]
        if trace:
            cmd = ["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=open,openat,openat2",
                   "-e", "signal=none", "-o", str(trace), *cmd]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "WINSPECT_HDF5_TIMEOUT": os.environ.get(
            "WINSPECT_HDF5_TIMEOUT", "10")}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                     env=env, start_new_session=True)
        self.case = None

    def send(self, case) -> None:
        self.case = case
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait()


def run(fixtures, mutants: int, jobs: int, timeout: float, workdir: Path, trace: bool) -> dict:
    import selectors

    cases = [(f, i) for i in range(mutants) for f in fixtures]
    results: dict = {f: collections.Counter() for f in fixtures}
    examples: dict = {}
    traces = []
    sel = selectors.DefaultSelector()

    def start() -> Worker:
        tr = workdir / f"strace.{len(traces)}" if trace else None
        if tr:
            traces.append(tr)
        w = Worker(workdir, tr)
        sel.register(w.proc.stdout, selectors.EVENT_READ, w)
        return w

    def record(case, outcome: str) -> None:
        kind = outcome.split(":")[0]
        results[case[0]][kind] += 1
        if kind in FAILURES:
            examples.setdefault(kind, []).append((case, outcome))

    idle = [start() for _ in range(min(jobs, len(cases)))]
    busy: dict = {}
    pending = list(reversed(cases))
    while pending or busy:
        while idle and pending:
            w = idle.pop()
            w.send(pending.pop())
            busy[w] = time.monotonic()
        for key, _ in sel.select(1.0):
            w = key.data
            line = w.proc.stdout.readline()
            del busy[w]
            if line:
                _, _, outcome = json.loads(line)
                record(w.case, outcome)
                idle.append(w)
            else:  # the worker died: a crash no containment caught
                record(w.case, f"crash: worker exit {w.proc.wait()}")
                sel.unregister(w.proc.stdout)
                idle.append(start())
        for w, since in list(busy.items()):
            if time.monotonic() - since > timeout:
                sel.unregister(w.proc.stdout)
                w.kill()
                record(w.case, f"hang: no answer in {timeout:.0f} s")
                del busy[w]
                idle.append(start())
    for w in idle:
        w.proc.stdin.close()
        w.proc.wait()
    outside = outside_reads(traces, workdir, fixtures) if trace else None
    return {"results": {f: dict(c) for f, c in results.items()}, "examples": examples, "outside": outside}


ALLOWED = ("/proc/", "/sys/", "/dev/null", "/dev/urandom", "/dev/shm/", "/etc/", "/usr/", "/lib", "/root/.pyenv/",
           "/root/.cache/matplotlib", "/root/.config/matplotlib", sys.prefix, sys.base_prefix)


def outside_reads(traces, workdir: Path, fixtures) -> list[str]:
    """Paths the workers (and their surveying children) opened that are neither libraries nor the case files."""
    pattern = re.compile(r'open(?:at2?)?\((?:[^,]+, )?"([^"]*)"')
    own = (str(workdir) + "/", str(ROOT) + "/", tempfile.gettempdir() + "/")
    found = set()
    for tr in traces:
        for path_ in Path(tr).parent.glob(Path(tr).name + "*"):
            for line in path_.read_text(errors="replace").splitlines():
                m = pattern.search(line)
                if not m:
                    continue
                p = m.group(1)
                if p in (str(workdir), str(ROOT)):
                    continue
                if p.startswith(str(workdir) + "/"):
                    name = p[len(str(workdir)) + 1:].split("/")
                    case = name[0].rsplit(".", 1)[0] in fixtures
                    if case and (len(name) == 1 or name[1] in fixtures or "tensors.csv" in name[1]):
                        continue
                if p.startswith(ALLOWED) or (p.startswith(own) and not p.startswith(str(workdir))):
                    continue
                found.add(p)
    return sorted(found)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mutants", type=int, default=2000, help="mutants per fixture")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds before a case counts as a hang")
    ap.add_argument("--fixtures", nargs="*", default=list(FIXTURES))
    ap.add_argument("--no-strace", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(Path(args.worker))
        return 0
    trace = not args.no_strace and shutil.which("strace") is not None
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="hdf5fuzz") as d:
        report = run(args.fixtures, args.mutants, args.jobs, args.timeout, Path(d), trace)
    report["seconds"] = round(time.time() - started, 1)
    report["strace"] = trace
    print(json.dumps(report, indent=1))
    bad = sum(c.get(k, 0) for c in report["results"].values() for k in FAILURES) + len(report["outside"] or [])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
