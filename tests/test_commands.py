"""Command behaviour: diff without common names, track steps, --weights with files, folders with
several checkpoints, closed pipes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

import inspector
from inspector.analysis.diff import NoCommonNames
from inspector.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def _pair(tmp_path):
    rng = np.random.default_rng(0)
    a = {f"enc.{i}.weight": rng.normal(size=(4, 3)).astype(np.float32) for i in range(6)}
    b = {f"features.{i}.weight": (v + 1).astype(np.float32) for i, v in enumerate(a.values())}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    return a, b


def test_diff_without_common_names_is_an_error_naming_both_sides(tmp_path):
    _pair(tmp_path)
    r = run("diff", tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert r.exit_code == 1
    line = r.output.strip()
    assert line.startswith("error: A and B have no tensor names in common") and "\n" not in line
    assert "enc.0.weight" in line and "features.0.weight" in line and "--match position" in line
    assert "(6 in all)" in line
    with pytest.raises(NoCommonNames):
        inspector.diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors")


def test_diff_by_position_pairs_tensors_in_order(tmp_path):
    a, b = _pair(tmp_path)
    d = inspector.diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors", match="position")
    assert list(d.tensors["name"]) == list(a)
    for (name, va), vb in zip(a.items(), b.values()):
        row = d.tensors.set_index("name").loc[name]
        diff = vb.astype(np.float64) - va.astype(np.float64)
        assert row["l2_change"] == pytest.approx(np.sqrt((diff**2).sum()))
    assert d.summary["match"] == "position"
    r = run("diff", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--match", "position")
    assert r.exit_code == 0 and "6 tensors compared" in r.output


def test_diff_where_every_shape_differs_is_an_error(tmp_path):
    save_file({"w": np.ones((2, 3), np.float32)}, str(tmp_path / "a.safetensors"))
    save_file({"w": np.ones((3, 2), np.float32)}, str(tmp_path / "b.safetensors"))
    r = run("diff", tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert r.exit_code == 1 and "no pair of tensors has the same shape" in r.output


def _run_files(tmp_path, names):
    import torch

    paths = []
    for i, n in enumerate(names):
        torch.manual_seed(0)
        w = torch.randn(4, 3) * (1 + i)
        p = tmp_path / n
        p.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"fc.weight": w}, p)
        paths.append(p)
    return paths


def test_track_steps_come_from_the_names(tmp_path):
    paths = _run_files(tmp_path, ["epoch20.pt", "epoch1.pt", "epoch10.pt", "epoch2.pt"])
    t = inspector.track([str(p) for p in paths])
    assert list(t.steps["step"]) == [1, 2, 10, 20]
    assert [Path(c).name for c in t.checkpoints] == ["epoch1.pt", "epoch2.pt", "epoch10.pt", "epoch20.pt"]
    assert t.summary["step_source"] == "name"
    assert sorted(set(t.tensors["step"])) == [1, 2, 10, 20]
    out = t.save(tmp_path / "out")
    assert all(p.is_file() for p in out)


def test_track_step_regex_and_positions(tmp_path):
    paths = _run_files(tmp_path, ["e2_s900.pt", "e1_s1000.pt", "e3_s100.pt"])
    t = inspector.track([str(p) for p in paths], step_regex=r"_s(\d+)")
    assert list(t.steps["step"]) == [100, 900, 1000] and t.summary["step_source"] == "regex"
    t = inspector.track([str(p) for p in paths])  # the last number by default
    assert list(t.steps["step"]) == [100, 900, 1000]
    more = _run_files(tmp_path / "b", ["best.pt", "last.pt"])
    t = inspector.track([str(p) for p in more])
    assert list(t.steps["step"]) == [0, 1] and t.summary["step_source"] == "position"
    assert any("positions" in n for n in t.summary["notes"])
    r = run("track", str(more[0]), "--step-regex", "(")
    assert r.exit_code == 2 and "--step-regex" in r.output


def test_track_of_one_checkpoint_says_checkpoint(tmp_path):
    paths = _run_files(tmp_path, ["epoch3.pt"])
    r = run("track", paths[0])
    assert r.exit_code == 0 and "1 checkpoint," in r.output and "1 checkpoints" not in r.output


def test_a_folder_names_the_file_it_read_or_refuses_listing_candidates(tmp_path):
    w = {"fc.weight": np.ones((2, 2), np.float32)}
    d = tmp_path / "hf"
    d.mkdir()
    save_file(w, str(d / "model.safetensors"))
    save_file(w, str(d / "model-ema.safetensors"))
    notes = inspector.inspect(d).summary["notes"]
    assert "read model.safetensors from the folder; also in the folder, not read: model-ema.safetensors" in notes
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for n in ("epoch10.safetensors", "epoch2.safetensors"):
        save_file(w, str(run_dir / n))
    r = run(run_dir)
    assert r.exit_code == 1
    assert "holds several checkpoints" in r.output and "epoch2.safetensors, epoch10.safetensors" in r.output
    one = tmp_path / "one"
    one.mkdir()
    import torch

    torch.save({"fc.weight": torch.ones(2, 2)}, one / "final.pt")
    s = inspector.inspect(one).summary
    assert "read final.pt, the only checkpoint in the folder" in s["notes"] and s["numel"] == 4


def test_weights_with_a_file_is_a_usage_error_and_names_ignore_case(tmp_path, monkeypatch):
    save_file({"fc.weight": np.ones((2, 2), np.float32)}, str(tmp_path / "a.safetensors"))
    r = run(tmp_path / "a.safetensors", "--weights", "IMAGENET1K_V1")
    assert r.exit_code == 2 and "--weights" in r.output and "torchvision" in r.output
    r = run("diff", tmp_path / "a.safetensors", tmp_path / "a.safetensors", "--weights", "none")
    assert r.exit_code == 2
    assert run(tmp_path / "a.safetensors").exit_code == 0
    from inspector.loaders.torchvision_zoo import _weights_member

    assert str(_weights_member("resnet18", "imagenet1k_v1")) == "ResNet18_Weights.IMAGENET1K_V1"
    assert str(_weights_member("resnet18", "default")) == "ResNet18_Weights.IMAGENET1K_V1"


def test_a_closed_pipe_ends_quietly_with_the_closed_pipe_status(tmp_path):
    arrays = {f"block{i}.fc.weight": np.ones((2, 2), np.float32) for i in range(4000)}  # ~1.5 MB of CSV
    save_file(arrays, str(tmp_path / "big.safetensors"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", "from inspector.cli import main; main()",
                             str(tmp_path / "big.safetensors"), "--csv", "-"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader goes away, as `| head -1` does
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert first.startswith(b"name,") and err == b""
