"""Hostile pickles are never executed: read as data, their dangerous globals named as findings, by every command."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import pytest
from click.testing import CliRunner

from inspector import inspect
from inspector.audit import audit
from inspector.cli import main
from inspector.safety import pickle_scan
from inspector.safety.pickle_scan import UnsafePickle, classify, scan_file
from tests.helpers import HOSTILE_IDS, SYSTEM, hostile_files, make_torch_zip, run_cli


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    marker = d / "MARKER"
    return hostile_files(d, marker), marker


@pytest.mark.parametrize("case", HOSTILE_IDS)
def test_scan_names_the_offending_global(hostile, case):
    files, marker = hostile
    path, glob = files[case]
    result = scan_file(path)
    assert glob in result.of_class("dangerous")
    assert not marker.exists()


WITH_TENSORS = ["zip-system", "zip-exec", "legacy-system", "legacy-exec"]  # the rest hold no tensor


@pytest.mark.parametrize("case", WITH_TENSORS)
def test_api_inspect_reads_the_tensors_and_names_the_globals(hostile, case):
    files, marker = hostile
    path, glob = files[case]
    result = inspect(path)
    assert not marker.exists()
    assert list(result.tensors["name"]) == ["w"] and result.tensors.iloc[0]["zero_count"] == 2
    unsafe = [f for f in result.summary["findings"] if f.type == "unsafe"]
    assert [(f.subject, f.data["class"]) for f in unsafe] == [(glob, "dangerous")]
    assert any("x (" in n for n in result.summary["notes"])  # the placeholder is skipped, by name


@pytest.mark.parametrize("case", ["pickle-protocol4", "pickle-protocol2"])
def test_hostile_pickle_without_tensors_is_an_error_that_names_the_globals(hostile, case):
    files, marker = hostile
    path, glob = files[case]
    with pytest.raises(UnsafePickle) as info:
        inspect(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: no state dict of tensors found") and f"dangerous globals {glob}" in msg
    assert "Nothing was executed" in msg and "\n" not in msg
    assert not marker.exists()


@pytest.mark.parametrize("case", HOSTILE_IDS)
def test_cli_inspect_warns_and_audit_fails_without_executing(hostile, case, tmp_path):
    files, marker = hostile
    path, glob = files[case]
    runner = CliRunner()
    res = runner.invoke(main, [str(path), "--json", str(tmp_path / "o.json"), "-q"])
    assert not marker.exists()
    if case in WITH_TENSORS:
        assert res.exit_code == 0
        assert f"WARNING: {path}: the pickle names dangerous globals {glob}" in res.stderr
        found = json.loads((tmp_path / "o.json").read_text())["summary"]["findings"]
        assert {"type": "unsafe", "subject": glob, "class": "dangerous"}.items() <= found[0].items()
    else:
        assert res.exit_code == 1 and res.stderr.startswith(f"error: {path}: no state dict")
    res = runner.invoke(main, ["audit", str(path), "--json", str(tmp_path / "a.json")])
    assert res.exit_code == 3 and not marker.exists()
    assert f"unsafe {glob}" in res.stdout
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["failed_on"] == ["unsafe"]
    assert {"type": "unsafe", "subject": glob, "severity": "error", "class": "dangerous"}.items() <= data["findings"][0].items()


@pytest.mark.parametrize("case", HOSTILE_IDS)
def test_api_audit_reports_unsafe_finding(hostile, case):
    files, marker = hostile
    path, glob = files[case]
    result = audit(path)
    assert bool(result.refused) == (case not in WITH_TENSORS) and not marker.exists()
    assert [f.subject for f in result.findings if f.data.get("class") == "dangerous"] == [glob]
    assert result.failed_on(("unsafe",)) == ["unsafe"] and result.failed_on(("nan",)) == []


def test_directory_and_shards_are_scanned_too(hostile, tmp_path):
    files, marker = hostile
    (tmp_path / "pytorch_model.bin").write_bytes(files["zip-system"][0].read_bytes())
    assert audit(tmp_path).failed_on(("unsafe",)) == ["unsafe"]
    index = tmp_path / "pytorch_model.bin.index.json"
    (tmp_path / "shard-1.bin").write_bytes(files["legacy-exec"][0].read_bytes())
    index.write_text(json.dumps({"weight_map": {"w": "shard-1.bin"}}))
    result = inspect(index)
    assert [f.subject for f in result.summary["findings"] if f.type == "unsafe"] == ["builtins.exec"]
    assert not marker.exists()


def test_audit_of_hostile_pickle_without_unsafe_gate_passes_on_its_tensors(hostile, tmp_path):
    files, marker = hostile
    path, glob = files["zip-system"]
    res = CliRunner().invoke(main, ["audit", str(path), "--fail-on", "nan", "--json", str(tmp_path / "a.json")])
    assert res.exit_code == 0 and "ok" in res.stdout
    assert json.loads((tmp_path / "a.json").read_text())["failed_on"] == []
    assert not marker.exists()


def test_unsafe_load_is_gone(hostile):
    files, marker = hostile
    path, _ = files["zip-system"]
    for args in ([str(path), "--unsafe-load"], ["audit", str(path), "--unsafe-load"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2 and "--unsafe-load has no purpose any more" in res.stderr
    assert not marker.exists()


def test_subprocess_cli_warns_loudly(hostile):
    files, marker = hostile
    path, glob = files["legacy-system"]
    proc = run_cli("-q", str(path))
    assert proc.returncode == 0 and proc.stderr.startswith(f"WARNING: {path}: the pickle names dangerous globals {glob}")
    assert "Traceback" not in proc.stderr and not marker.exists()


# --- the scanner itself ------------------------------------------------------------------

def test_torch_weights_only_allowlist_is_safe():
    from torch._weights_only_unpickler import _get_allowed_globals

    assert [g for g in _get_allowed_globals() if classify(g) != "safe"] == []


@pytest.mark.parametrize("name,cls", [
    ("posix.system", "dangerous"), ("os.system", "dangerous"), ("nt.system", "dangerous"),
    ("subprocess.Popen", "dangerous"), ("builtins.eval", "dangerous"), ("builtins.getattr", "dangerous"),
    ("__builtin__.exec", "dangerous"), ("runpy._run_code", "dangerous"), ("socket.socket", "dangerous"),
    ("importlib.import_module", "dangerous"), ("torch.serialization.os.system", "dangerous"),
    ("torch.load", "dangerous"), ("numpy.load", "dangerous"), ("builtins.print", "dangerous"),
    (pickle_scan.COMPUTED, "dangerous"),
    ("builtins.set", "safe"), ("collections.OrderedDict", "safe"), ("torch._utils._rebuild_tensor_v2", "safe"),
    ("torch.FloatStorage", "safe"), ("torch.bfloat16", "safe"), ("numpy.core.multiarray._reconstruct", "safe"),
    ("numpy._core.multiarray._reconstruct", "safe"), ("numpy.dtypes.Float32DType", "safe"),
    ("mylib.Net", "unknown"), ("torch.nn.modules.linear.Linear", "unknown"), ("argparse.Namespace", "unknown"),
])
def test_classify(name, cls):
    assert classify(name) == cls


def _scan_bytes(data: bytes, tmp_path) -> pickle_scan.ScanResult:
    (tmp_path / "p.pkl").write_bytes(data)
    return scan_file(tmp_path / "p.pkl")


def test_stack_global_resolves_memoized_strings(tmp_path):
    # 'os' and 'system' memoized, popped, fetched back with BINGET, then STACK_GLOBAL
    data = b"\x80\x04\x8c\x02os\x94\x8c\x06system\x940" + b"0h\x00h\x01\x93)R."
    assert _scan_bytes(data, tmp_path).globals == ["os.system"]


def test_stack_global_with_computed_name_is_dangerous(tmp_path):
    data = b"\x80\x04\x8c\x02os\x94)\x93)R."  # module 'os', name = an empty tuple
    result = _scan_bytes(data, tmp_path)
    assert result.of_class("dangerous") == [pickle_scan.COMPUTED]


def test_inst_and_unknown_classes(tmp_path):
    data = b"(ios\nsystem\n(S'x'\ntR" + b"0cmylib\nNet\n)R."
    result = _scan_bytes(data, tmp_path)
    assert result.of_class("dangerous") == ["os.system"] and result.of_class("unknown") == ["mylib.Net"]
    assert result.describe() == "dangerous globals os.system; unknown globals mylib.Net"


def test_unreadable_file_message_lists_dangerous_before_unknown(tmp_path):
    # {mylib.Net(): posix.system("x")} with no tensor: an unknown class first in the file, a dangerous call second
    (tmp_path / "p.pt").write_bytes(b"\x80\x02}cmylib\nNet\n)Rcposix\nsystem\nX\x01\x00\x00\x00x\x85Rs.")
    with pytest.raises(UnsafePickle) as info:
        inspect(tmp_path / "p.pt")
    assert str(info.value) == (
        f"{tmp_path / 'p.pt'}: no state dict of tensors found in the checkpoint (top level: [<placeholder mylib.Net>]); "
        "the scan found: "
        "dangerous globals posix.system; unknown globals mylib.Net. Nothing was executed"
    )


def test_truncated_pickle_is_corrupt_not_unsafe(tmp_path):
    from inspector import CorruptCheckpoint

    data = pickle.dumps({"a": [1, 2, 3] * 100}, protocol=2)
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpoint, match="not a readable PyTorch checkpoint"):
        inspect(tmp_path / "t.pt")


def test_unknown_classes_are_inert_placeholders_named_in_a_note(tmp_path):
    import argparse

    import torch

    torch.save({"w": torch.ones(2), "args": argparse.Namespace(lr=0.1)}, tmp_path / "np.pt")
    result = inspect(tmp_path / "np.pt")
    assert list(result.tensors["name"]) == ["w"] and result.summary["findings"] == []
    assert any("(never imported): argparse.Namespace" in n for n in result.summary["notes"])
    assert audit(tmp_path / "np.pt").failed_on(("unsafe",)) == []


def test_legacy_scan_reads_all_five_pickles_and_stops(tmp_path):
    import torch

    torch.save({"w": torch.ones(3)}, tmp_path / "l.pt", _use_new_zipfile_serialization=False)
    result = scan_file(tmp_path / "l.pt")
    assert result.problems == [] and "torch._utils._rebuild_tensor_v2" in result.globals
    assert all(classify(g) == "safe" for g in result.globals)


def test_zip_pickle_members_are_read_with_a_bound(tmp_path, monkeypatch):
    path = make_torch_zip(tmp_path)
    monkeypatch.setattr(pickle_scan, "MAX_PKL_MEMBER", 16)
    assert scan_file(path).incomplete == [f"pickle member 'model/data.pkl' of "
                                          f"{zipfile.ZipFile(path).getinfo('model/data.pkl').file_size} bytes not scanned"]


def test_every_pkl_member_of_a_zip_is_scanned(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("m/data.pkl", pickle.dumps({"a": 1}, protocol=2))
        z.writestr("m/extra.pkl", b"\x80\x02csubprocess\nPopen\n)R.")
    (tmp_path / "z.pt").write_bytes(buf.getvalue())
    assert scan_file(tmp_path / "z.pt").of_class("dangerous") == ["subprocess.Popen"]


@pytest.mark.parametrize("command", ["diff-first", "diff-second", "track", "compare", "inspect-report"])
@pytest.mark.parametrize("case", ["zip-system", "legacy-exec"])
def test_every_other_command_reads_without_executing(hostile, tmp_path, command, case):
    files, marker = hostile
    path, glob = files[case]
    good = str(make_torch_zip(tmp_path))
    args = {
        "diff-first": ["diff", str(path), good],
        "diff-second": ["diff", good, str(path)],
        "track": ["track", good, str(path)],
        "compare": ["compare", good, str(path)],
        "inspect-report": ["inspect", str(path), "--out", str(tmp_path / "report")],
    }[command]
    res = CliRunner().invoke(main, [*args, "-q"])
    assert not marker.exists(), res.stderr
    if command.startswith("diff"):  # read, and refused only because the two share no tensor name
        assert res.exit_code == 1 and "no tensor names in common" in res.stderr, res.stderr
    else:
        assert res.exit_code == 0, res.stderr
