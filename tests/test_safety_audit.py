"""``winspect audit``: findings, exit 3 on a listed one, 0 on none, 1 on bad input, 2 on usage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from inspector import loaders
from inspector.finding import DEFAULT_FAIL_ON, FINDING_TYPES, finding
from inspector.audit import audit, parse_fail_on
from inspector.cli import main
from inspector.loaders import Loader, OpenedSource
from inspector.records import TensorRecord, array_reader


def save(path: Path, arrays: dict) -> Path:
    from safetensors.numpy import save_file

    save_file(arrays, str(path))
    return path


@pytest.fixture
def flawed(tmp_path):
    """Two NaN, one Inf, an all-zero weight (whose units are also dead-ReLU candidates), and clean tensors."""
    w = np.tile(np.array([-1, 0.5, 1, -0.25], np.float32), (3, 1))
    bad = w.copy()
    bad[0, 0] = bad[1, 1] = np.nan
    bad[2, 2] = np.inf
    arrays = {"fc.weight": w, "bad.weight": bad, "dead.weight": np.zeros((2, 2), np.float32)}
    return save(tmp_path / "flawed.safetensors", arrays), arrays


def run(*args):
    return CliRunner().invoke(main, ["audit", *args])


def test_findings_match_numpy(flawed):
    path, arrays = flawed
    found = {(f.type, f.subject): f.detail for f in audit(path).findings}
    assert found == {
        ("nan", "bad.weight"): f"{int(np.isnan(arrays['bad.weight']).sum())} NaN values",
        ("inf", "bad.weight"): f"{int(np.isinf(arrays['bad.weight']).sum())} infinite values",
        ("zero", "dead.weight"): "every value is zero",
        ("dead_relu", "dead.weight"): f"{int((arrays['dead.weight'].max(axis=1) <= 0).sum())} of 2 units have no "
        "positive weight and no positive bias: a ReLU after them never opens on non-negative inputs",
    }


def test_default_gate_fails_on_nan_and_writes_json(flawed, tmp_path):
    path, _ = flawed
    res = run(str(path), "--json", str(tmp_path / "out.json"))
    assert res.exit_code == 3
    assert "FAIL: found nan, inf (--fail-on nan, inf, unsafe, scan_incomplete)" in res.stdout
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["source"] == str(path) and data["failed_on"] == ["nan", "inf"]
    assert [f["type"] for f in data["findings"]] == ["nan", "inf", "zero", "dead_relu"]
    assert not list(tmp_path.glob(".out.json.*"))  # no temporary file left behind


@pytest.mark.parametrize("fail_on,code,failed", [
    ("zero", 3, ["zero"]), ("tied,unsafe", 0, []), ("none", 0, []),
    ("all", 3, ["nan", "inf", "zero", "dead_relu"]), ("dead_relu", 3, ["dead_relu"]),
    ("NaN, zero", 3, ["nan", "zero"]),
])
def test_fail_on_selects_the_gate(flawed, tmp_path, fail_on, code, failed):
    path, _ = flawed
    res = run(str(path), "--fail-on", fail_on, "--json", str(tmp_path / "o.json"), "-q")
    assert res.exit_code == code and res.stdout == ""
    assert json.loads((tmp_path / "o.json").read_text())["failed_on"] == failed


def test_clean_file_passes(tmp_path):
    path = save(tmp_path / "ok.safetensors", {"fc.weight": np.ones((2, 2), np.float32)})
    res = run(str(path))
    assert res.exit_code == 0 and "ok: none of nan, inf, unsafe, scan_incomplete found" in res.stdout


def test_tied_tensors(tmp_path):
    import torch

    w = torch.randn(3, 3)
    torch.save({"embed.weight": w, "head.weight": w}, tmp_path / "tied.pt")
    res = run(str(tmp_path / "tied.pt"), "--fail-on", "tied")
    assert res.exit_code == 3 and "shares storage with embed.weight" in res.stdout


def test_bad_input_is_exit_1_and_writes_nothing(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"\x01")
    res = run(str(tmp_path / "x.safetensors"), "--json", str(tmp_path / "o.json"))
    assert res.exit_code == 1 and res.stderr.startswith(f"error: {tmp_path / 'x.safetensors'}: truncated")
    assert not (tmp_path / "o.json").exists()


def test_unknown_finding_is_a_usage_error(flawed):
    res = run(str(flawed[0]), "--fail-on", "nan,typo")
    assert res.exit_code == 2 and "unknown finding typo" in res.output
    assert parse_fail_on("") == DEFAULT_FAIL_ON and parse_fail_on("all") == tuple(FINDING_TYPES)


def test_json_over_the_input_is_refused(flawed):
    path, _ = flawed
    before = path.read_bytes()
    res = run(str(path), "--json", str(path))
    assert res.exit_code == 1 and "is an input of this command; refusing to overwrite it" in res.stderr
    assert path.read_bytes() == before


class _FindingsLoader(Loader):
    """A stand-in for a loader that reports structural findings (as Keras does for Lambda layers)."""

    name = "findings-test"
    suffixes = (".findings-test",)

    @classmethod
    def open(cls, source, options):
        src = OpenedSource(source, cls.name)
        src.meta["findings"].append(finding("lambda", "model/lambda", "Lambda layer"))
        src.records = lambda: iter([TensorRecord("d.kernel", "weight", np.float32, (2, 2),
                                                 array_reader(np.ones((2, 2), np.float32)))])
        return src


def test_loader_findings_reach_the_gate(tmp_path, monkeypatch):
    monkeypatch.setattr(loaders, "LOADERS", [*loaders.LOADERS, _FindingsLoader])
    path = tmp_path / "m.findings-test"
    path.write_bytes(b"anything")
    assert run(str(path)).exit_code == 0
    res = run(str(path), "--fail-on", "lambda,nan")
    assert res.exit_code == 3 and "lambda model/lambda: Lambda layer" in res.stdout


def test_keras_lambda_layer_gates_audit(tmp_path):
    from tests.test_keras import write_legacy

    config = {"class_name": "Sequential", "config": {"name": "m", "layers": [
        {"class_name": "Dense", "config": {"name": "dense"}},
        {"class_name": "Lambda", "config": {"name": "lam", "function": ["4wEAAA==", None, None],
                                             "function_type": "lambda"}},
    ]}}
    path = tmp_path / "lam.h5"
    write_legacy(path, config, {"dense": {"dense/kernel:0": np.ones((2, 2))}, "lam": {}})
    assert run(str(path), "-q").exit_code == 0  # lambda is not in the default gate
    res = run(str(path), "--fail-on", "lambda", "--json", str(tmp_path / "a.json"))
    assert res.exit_code == 3 and "lambda lam:" in res.stdout
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["failed_on"] == ["lambda"] and data["findings"][0]["subject"] == "lam"


def test_long_finding_lists_are_grouped_in_the_terminal_not_in_json(tmp_path):
    from inspector.report.findings import MAX_SHOWN

    arrays = {f"l{i}.bias": np.zeros(2, np.float32) for i in range(MAX_SHOWN + 7)}
    path = save(tmp_path / "zeros.safetensors", arrays)
    res = run(str(path), "--fail-on", "zero", "--json", str(tmp_path / "a.json"))
    assert res.exit_code == 3 and f"zero {MAX_SHOWN + 7} bias tensors: every value is zero (usual at initialisation)" in res.stdout
    assert res.stdout.count("every value is zero") == 1
    assert len(json.loads((tmp_path / "a.json").read_text())["findings"]) == MAX_SHOWN + 7
