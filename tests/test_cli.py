"""The winspect command through click's CliRunner: outputs, exit codes and messages."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from inspector.cli import main
from inspector.table.schema import LAYER_COLUMNS, TENSOR_COLUMNS

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "digits_cnn.safetensors"
REQUIRED = ("name, layer, kind, dtype, shape, numel, neg_count, zero_count, pos_count, neg_frac, zero_frac, "
            "pos_frac, mean, std, min, max, abs_mean, l2_norm, nan_count, inf_count, p01, p05, p25, p50, p75, "
            "p95, p99").split(", ")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_csv_has_the_required_columns_in_order(tmp_path):
    out = tmp_path / "t.csv"
    res = run(FIXTURE, "--csv", out, "--quiet")
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert list(df.columns[: len(REQUIRED)]) == REQUIRED == TENSOR_COLUMNS
    assert len(df) == 18 and df["numel"].sum() == 3756


def test_short_form_equals_inspect_subcommand(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert run(FIXTURE, "--csv", a, "-q").exit_code == 0
    assert run("inspect", FIXTURE, "--csv", b, "-q").exit_code == 0
    assert a.read_text() == b.read_text()


def test_json_and_layers_csv(tmp_path):
    js, lay = tmp_path / "r.json", tmp_path / "l.csv"
    res = run(FIXTURE, "--json", js, "--layers-csv", lay, "-q")
    assert res.exit_code == 0, res.output
    data = json.loads(js.read_text())
    assert set(data) == {"source", "summary", "tensors"}
    assert len(data["tensors"]) == 18 and list(data["tensors"][0])[: len(REQUIRED)] == REQUIRED
    assert 0 < data["summary"]["weight_neg_frac"] < 1
    layers = pd.read_csv(lay)
    assert list(layers.columns) == LAYER_COLUMNS
    assert layers["numel"].sum() == data["summary"]["numel"]


def test_terminal_report(tmp_path):
    res = run(FIXTURE)
    assert res.exit_code == 0
    assert "of the 3,592 weight parameters are negative" in res.output
    assert "fc1" in res.output and "by kind" in res.output


def test_untrained_is_said_plainly():
    res = run("alexnet", "--weights", "none")
    assert res.exit_code == 0 and "UNTRAINED" in res.output


@pytest.mark.parametrize("args, message", [
    (["no/such/file.safetensors"], "error: no/such/file.safetensors: no such file or directory"),
    (["resnet181"], "did you mean resnet18"),
    (["resnet18"], "hub/checkpoints/resnet18-f37072fd.pth"),
])
def test_bad_input_exits_1_with_one_error_line(args, message):
    res = run(*args)
    assert res.exit_code == 1
    assert message in res.output
    assert "Traceback" not in res.output
    assert res.output.count("error:") == 1


def test_unsupported_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello, these are not weights")
    res = run(p)
    assert res.exit_code == 1 and "not a format winspect reads" in res.output


def test_empty_file(tmp_path):
    p = tmp_path / "empty.safetensors"
    p.write_bytes(b"")
    res = run(p)
    assert res.exit_code == 1 and "empty" in res.output


def test_usage_error_exits_2():
    assert run("inspect").exit_code == 2
    assert run(FIXTURE, "--no-such-option").exit_code == 2


def test_output_over_input_is_refused(tmp_path):
    copy = tmp_path / "m.safetensors"
    copy.write_bytes(FIXTURE.read_bytes())
    res = run(copy, "--csv", copy)
    assert res.exit_code == 1 and "refusing to overwrite" in res.output
    assert copy.read_bytes() == FIXTURE.read_bytes()


def test_debug_shows_the_traceback():
    res = run("no/such/file.pt", "--debug")
    assert res.exit_code == 1 and res.exception is not None


def test_dash_writes_to_standard_output_without_the_report(tmp_path):
    out = tmp_path / "t.csv"
    assert run(FIXTURE, "--csv", out, "-q").exit_code == 0
    res = run(FIXTURE, "--csv", "-")
    assert res.exit_code == 0, res.output
    assert res.stdout == out.read_text()  # the CSV and nothing else: no report lines
    assert not (Path.cwd() / "-").exists()
    res = run(FIXTURE, "--json", "-", "--layers-csv", tmp_path / "l.csv")
    assert res.exit_code == 0 and json.loads(res.stdout)["summary"]["tensors"] == 18
    assert (tmp_path / "l.csv").exists()


def test_dash_for_the_other_commands():
    res = run("diff", FIXTURE, FIXTURE, "--csv", "-")
    assert res.exit_code == 0 and res.stdout.startswith("name,")
    assert pd.read_csv(io.StringIO(res.stdout))["max_abs_change"].eq(0).all()
    res = run("audit", FIXTURE, "--json", "-", "--fail-on", "all")
    body = json.loads(res.stdout)
    assert res.exit_code == (3 if body["failed_on"] else 0) and body["source"].endswith("digits_cnn.safetensors")


def test_two_outputs_on_standard_output_are_a_usage_error():
    for args in ((FIXTURE, "--csv", "-", "--json", "-"), ("diff", FIXTURE, FIXTURE, "--csv", "-", "--json", "-")):
        res = run(*args)
        assert res.exit_code == 2 and "only one output can be '-'" in res.output


def test_output_over_a_keras_shard_is_refused(tmp_path):
    src = Path(__file__).resolve().parent.parent / "fixtures" / "digits_keras_sharded"
    for f in src.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    shard = tmp_path / "model_00001.weights.h5"
    before = shard.read_bytes()
    for source in (tmp_path / "model.weights.json", tmp_path):
        res = run(source, "--csv", shard)
        assert res.exit_code == 1 and "refusing to overwrite" in res.output
    assert shard.read_bytes() == before
