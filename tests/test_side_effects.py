"""A library call leaves the process as it found it: umask, socket timeout, torch's RNG."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

import inspector

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_reports_does_not_touch_the_umask():
    code = ("import os; old = os.umask(0o027); import inspector.report.export, inspector.report.bundle; "
            "print(oct(os.umask(old)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "0o27", out.stderr


def test_written_files_follow_the_umask(tmp_path):
    from inspector.report.export import write_json

    old = os.umask(0o077)
    try:
        path = write_json({"a": 1}, tmp_path / "a.json")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600


def test_an_untrained_model_leaves_the_callers_rng_and_timeout_alone():
    torch.manual_seed(1234)
    want = torch.rand(3)
    torch.manual_seed(1234)
    timeout = socket.getdefaulttimeout()
    result = inspector.inspect("resnet18", weights="none")
    assert torch.equal(torch.rand(3), want)
    assert socket.getdefaulttimeout() == timeout
    again = inspector.inspect("resnet18", weights="none")  # still seed 0 for the build itself
    assert result.tensors["std"].equals(again.tensors["std"])
