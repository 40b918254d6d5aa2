"""Outputs that must not lose or clobber user files: inputs in the report directory, devices, pipes and
symlinks as targets, SIGTERM in the middle of a write, two runs writing one ``--out`` at once,
control characters and over-long names in the reports."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.helpers import ROOT, assert_clean_error, run_cli


def model(d: Path, name: str = "model.safetensors", seed: int = 0, names=("fc.weight", "fc.bias")) -> Path:
    rng = np.random.default_rng(seed)
    tensors = {n: rng.standard_normal((4, 3) if n.endswith("weight") else (4,)).astype(np.float32) for n in names}
    path = d / name
    save_file(tensors, str(path))
    return path


def test_an_input_named_like_a_plot_page_is_never_deleted(tmp_path):
    """The format is sniffed from content, so a checkpoint may be called histograms-3.png."""
    out = tmp_path / "out"
    out.mkdir()
    src = model(tmp_path)
    victim = out / "histograms-3.png"
    shutil.copy(src, victim)
    data = victim.read_bytes()
    for _ in range(2):  # the second run sees the first run's manifest
        proc = run_cli("-q", str(victim), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        assert victim.read_bytes() == data
    assert "histograms-3.png" not in json.loads((out / ".winspect-report.json").read_text())["files"]


def test_a_stale_page_changed_since_the_earlier_run_is_kept(tmp_path):
    out = tmp_path / "out"
    src = model(tmp_path)
    assert run_cli("-q", str(src), "--out", str(out)).returncode == 0
    listed = json.loads((out / ".winspect-report.json").read_text())
    (out / "histograms-7.png").write_bytes(b"the user's own picture")
    listed["files"]["histograms-7.png"] = [1, 1]  # the earlier run's page had another size and time
    (out / ".winspect-report.json").write_text(json.dumps(listed))
    assert run_cli("-q", str(src), "--out", str(out)).returncode == 0
    assert (out / "histograms-7.png").read_bytes() == b"the user's own picture"


def test_control_characters_in_names_are_escaped_in_report_md(tmp_path):
    src = model(tmp_path, names=("evil\x1b]0;pwned\x07\x00x.weight", "ok\x1b[2J.bias"))
    out = tmp_path / "out"
    proc = run_cli("-q", str(src), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_bytes()
    assert not any(b in md for b in (b"\x1b", b"\x00", b"\x07"))
    assert b"\\x1b" in md


def test_dev_full_is_an_error_and_stays_a_device(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    proc = run_cli("-q", str(model(tmp_path)), "--csv", "/dev/full")
    assert "no space left on the device" in assert_clean_error(proc, "/dev/full")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_dev_stdout_is_written_directly(tmp_path):
    proc = run_cli("-q", str(model(tmp_path)), "--csv", "/dev/stdout")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("name,layer,kind")
    assert os.path.islink("/dev/stdout") or stat.S_ISCHR(os.stat("/dev/stdout").st_mode)


def test_a_symlink_to_a_device_stays_a_symlink(tmp_path):
    link = tmp_path / "null.csv"
    link.symlink_to("/dev/null")
    assert run_cli("-q", str(model(tmp_path)), "--csv", str(link)).returncode == 0
    assert link.is_symlink() and os.readlink(link) == "/dev/null"


def test_a_fifo_is_written_directly(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    proc = run_cli("-q", str(model(tmp_path)), "--csv", str(fifo))
    reader.join(60)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert got and got[0].startswith(b"name,layer,kind")


def test_a_symlink_to_a_regular_file_replaces_the_file_not_the_link(tmp_path):
    real = tmp_path / "data" / "real.csv"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    assert run_cli("-q", str(model(tmp_path)), "--csv", str(link)).returncode == 0
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert real.read_text().startswith("name,layer,kind")
    assert not list(tmp_path.glob(".*.tmp")) and not list(real.parent.glob(".*.tmp"))


SIGTERM_MID_WRITE = """
import os, signal, sys
from inspector.cli import main
from inspector.table.frame import Frame

real = Frame.write_csv

def write_csv(self, f):
    f.write("partial,")
    os.kill(os.getpid(), signal.SIGTERM)  # what timeout(1), CI runners and kill send
    return real(self, f)

Frame.write_csv = write_csv
main()
"""


def test_sigterm_during_a_write_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("the previous table")
    proc = subprocess.run([sys.executable, "-c", SIGTERM_MID_WRITE, "-q", str(model(tmp_path)), "--csv", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip() == "error: terminated"
    assert out.read_text() == "the previous table"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "out.csv"]


def test_two_runs_writing_one_out_directory_do_not_mix(tmp_path):
    a = model(tmp_path, "a.safetensors", 1, names=("a.weight",))
    b = model(tmp_path, "b.safetensors", 2, names=("b1.weight", "b2.weight", "b2.bias"))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", "from inspector.cli import main; main()", "-q", str(src),
                               "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for src in (a, b)]
    results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    summary = json.loads((out / "summary.json").read_text())
    winner = Path(summary["source"]).name
    tensors = (out / "tensors.csv").read_text()
    assert ("b1.weight" in tensors) == (winner == "b.safetensors")
    assert winner in (out / "report.html").read_text() and winner in (out / "report.md").read_text()
    assert not list(out.glob(".*.tmp"))


def test_a_50000_character_name_is_shortened_before_layout(tmp_path):
    long = "x" * 50_000 + ".weight"
    src = model(tmp_path, names=(long,))
    proc = run_cli(str(src), "--csv", str(tmp_path / "t.csv"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "…" in proc.stdout and max(len(line) for line in proc.stdout.splitlines()) < 1000
    assert long in (tmp_path / "t.csv").read_text()  # the data keep the whole name


def test_shards_without_a_known_suffix_are_protected(tmp_path):
    """An index whose shards are called part-a / part-b: writing over either is refused."""
    d = tmp_path / "ckpt"
    d.mkdir()
    save_file({"a.weight": np.ones((2, 2), np.float32)}, str(d / "part-a"))
    save_file({"b.weight": np.ones((2, 2), np.float32)}, str(d / "part-b"))
    index = d / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a.weight": "part-a", "b.weight": "part-b"}}))
    before = (d / "part-b").read_bytes()
    proc = run_cli("-q", str(index), "--csv", str(d / "part-b"))
    assert "is an input" in assert_clean_error(proc, "part-b")
    assert (d / "part-b").read_bytes() == before
