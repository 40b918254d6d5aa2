"""The training scripts behind the fixture and the docs' numbers give the same bits on a rerun,
whatever thread settings the environment asks for, and record what the bits depend on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(out: Path, threads: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    subprocess.run([sys.executable, str(ROOT / "docs" / "analyses_run.py"), str(out), "1"], check=True, env=env,
                   capture_output=True, timeout=600)
    return json.loads((out / "run.json").read_text())


def test_docs_run_is_bit_identical_across_thread_settings(tmp_path):
    one, two = _run(tmp_path / "a", "1"), _run(tmp_path / "b", "2")
    assert one["sha256"] == two["sha256"] and set(one["sha256"]) == {"epoch0.safetensors", "epoch1.safetensors"}
    made = one["made_with"]
    assert made["threads"] == 1 and made["deterministic_algorithms"] is True
    assert made["cpu_capability"] and made["torch"]


def test_fixture_records_what_its_bits_depend_on():
    info = json.loads((ROOT / "fixtures" / "digits_cnn.json").read_text())
    assert info["made_with"]["deterministic_algorithms"] is True and info["made_with"]["threads"] == 1
    assert {"torch", "cpu_capability"} <= set(info["made_with"])
