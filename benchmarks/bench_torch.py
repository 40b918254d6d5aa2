"""PyTorch checkpoints read by winspect's own reader, against the torch.load path it replaced.

    python benchmarks/bench_torch.py [--small-mb 5] [--pt-gb 1.5] [--baseline-ref d3e58b9]

Makes, in a temporary directory that is deleted afterwards:

* a ``--small-mb`` MB zip ``.pth`` (a small CNN-like state dict): the command ``winspect FILE --csv
  out.csv`` timed (best of 3), its peak RSS, and whether torch or matplotlib got imported;
* a ``--pt-gb`` GB zip ``.pth`` (bf16 and f32 4096x4096 tensors): the same command with this
  checkout, and with the checkout at ``--baseline-ref`` (the last version that read PyTorch files
  with ``torch.load``), extracted with ``git archive`` next to the checkpoint; best of ``--runs``.

Making the checkpoints needs torch (the dev extra); the runs measured here do not. Each time is the
whole command, interpreter start-up included; the peak RSS is the largest process's, from the OS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import GB, ROOT, machine, make_pt, run_child  # noqa: E402

SMALL_SCRIPT = """
import sys, torch
total, path = int(sys.argv[1]), sys.argv[2]
g = torch.Generator().manual_seed(0)
sd, done, i = {}, 0, 0
while done < total:
    w = torch.randn(64, 64, 3, 3, generator=g) * 0.05
    sd[f"features.{i}.weight"], sd[f"features.{i}.bias"] = w, torch.zeros(64)
    sd[f"bn.{i}.running_mean"], sd[f"bn.{i}.num_batches_tracked"] = torch.zeros(64), torch.tensor(3)
    done += w.numel() * 4 + 512
    i += 1
torch.save(sd, path)
"""

IMPORTS = ("import sys; from inspector.cli import main\n"
           "main([sys.argv[1], '--csv', sys.argv[2], '--quiet'], standalone_mode=False)\n"
           "print(','.join(m for m in ('torch', 'matplotlib') if m in sys.modules) or 'none')")


def command(root: Path, source: Path, csv: Path) -> list[str]:
    code = f"import sys; sys.path.insert(0, {str(root)!r}); from inspector.cli import main; main()"
    return [sys.executable, "-c", code, str(source), "--csv", str(csv), "--quiet"]


def timed(root: Path, source: Path, csv: Path, runs: int) -> dict:
    results = [run_child(command(root, source, csv), {"PYTHONPATH": str(root)}) for _ in range(runs)]
    best = min(results, key=lambda r: r["seconds"])
    return {"seconds": best["seconds"], "cpu_s": min(r["cpu_s"] for r in results),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results), "status": best["status"]}


def baseline_tree(ref: str, dest: Path) -> Path:
    """The package at ``ref`` (git archive), with its own compiled kernels built in place (the kernels of
    this checkout need not match that version's Python side)."""
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "inspector", "setup.py", "pyproject.toml"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=dest, check=True,
                   capture_output=True)
    return dest


def make_small(path: Path, size: int) -> Path:
    subprocess.run([sys.executable, "-c", SMALL_SCRIPT, str(size), str(path)], check=True)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small-mb", type=float, default=5.0)
    ap.add_argument("--pt-gb", type=float, default=1.5)
    ap.add_argument("--baseline-ref", default="d3e58b9", help="git revision read with torch.load (default: the "
                                                             "last one before winspect's own reader)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", help="where to make the temporary directory")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    info = machine()
    print(f"{info['date']}  {info['nproc']} CPUs  {info['cpu']}  load {info['load_avg']}  kernels {info['kernels']}")
    results: dict = {"machine": info}
    with tempfile.TemporaryDirectory(prefix="winspect-bench-torch-", dir=a.dir) as d:
        tmp = Path(d)
        small = make_small(tmp / "small.pth", int(a.small_mb * 1e6))
        out = timed(ROOT, small, tmp / "s.csv", a.runs)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        out["imported"] = subprocess.run([sys.executable, "-c", IMPORTS, str(small), str(tmp / "s.csv")], env=env,
                                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
        out["bytes"] = small.stat().st_size
        results["small"] = out
        print(f"small  {out['bytes'] / 1e6:5.1f} MB  {out['seconds']:.2f} s ({out['cpu_s']:.2f} s CPU)  "
              f"peak RSS {out['peak_rss_mb']:.0f} MB  "
              f"imported: {out['imported']}  exit {out['status']}")
        if a.pt_gb > 0:
            big = make_pt(tmp / "big.pth", int(a.pt_gb * GB))
            old = baseline_tree(a.baseline_ref, tmp / "baseline")
            new = timed(ROOT, big, tmp / "b.csv", a.runs)
            base = timed(old, big, tmp / "o.csv", a.runs)
            results["big"] = {"bytes": big.stat().st_size, "winspect": new, "torch_load_path": base,
                              "speedup": base["seconds"] / new["seconds"]}
            print(f"big    {big.stat().st_size / GB:5.2f} GB  own reader {new['seconds']:.2f} s ({new['cpu_s']:.2f} s "
                  f"CPU), peak RSS {new['peak_rss_mb']:.0f} MB (exit {new['status']})  torch.load path "
                  f"({a.baseline_ref}) {base['seconds']:.2f} s ({base['cpu_s']:.2f} s CPU), peak RSS "
                  f"{base['peak_rss_mb']:.0f} MB (exit {base['status']})  speed-up {results['big']['speedup']:.1f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
