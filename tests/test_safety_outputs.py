"""Nothing lost: outputs are written atomically and never over an input; names cannot inject
terminal escapes or markup."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

from inspector import OutputError, inspect
from inspector.cli import check_outputs, main
from inspector.report.export import atomic_write
from inspector.report.terminal import render
from tests.helpers import make_safetensors, make_safetensors_index


def refused(args) -> str:
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1, res.output
    assert "is an input of this command; refusing to overwrite it" in res.stderr
    return res.stderr


@pytest.mark.parametrize("option", ["--csv", "--layers-csv", "--json"])
def test_output_equal_to_input_is_refused(tmp_path, option):
    src = make_safetensors(tmp_path)
    before = src.read_bytes()
    refused([str(src), option, str(src)])
    assert src.read_bytes() == before


def test_equivalent_spellings_of_the_input_are_refused(tmp_path, monkeypatch):
    src = make_safetensors(tmp_path)
    before = src.read_bytes()
    (tmp_path / "sub").mkdir()
    os.symlink(src, tmp_path / "link.csv")
    os.link(src, tmp_path / "hard.csv")
    monkeypatch.chdir(tmp_path / "sub")
    for out in ["../model.safetensors", f"{tmp_path}/sub/../model.safetensors", str(tmp_path / "link.csv"),
                str(tmp_path / "hard.csv"), "./../model.safetensors"]:
        refused(["../model.safetensors", "--csv", out, "-q"])
        refused(["audit", str(src), "--json", out, "-q"])
    assert src.read_bytes() == before


def test_files_read_through_a_directory_or_index_are_protected(tmp_path):
    index = make_safetensors_index(tmp_path)
    shard = tmp_path / "model-00001-of-00002.safetensors"
    with pytest.raises(OutputError):
        check_outputs([str(tmp_path)], [str(shard)])
    with pytest.raises(OutputError):
        check_outputs([str(index)], [str(shard)])
    check_outputs([str(tmp_path)], [str(tmp_path / "report.json")])  # a new file beside the weights is fine
    refused([str(tmp_path), "--json", str(shard), "-q"])


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "stats.csv"
    out.write_text("old contents")

    def half_then_fail(f):
        f.write("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(out, half_then_fail)
    assert out.read_text() == "old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.csv"]


def test_bad_input_leaves_existing_outputs_untouched(tmp_path):
    out = tmp_path / "stats.json"
    out.write_text("previous run")
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00")
    res = CliRunner().invoke(main, [str(tmp_path / "bad.safetensors"), "--json", str(out)])
    assert res.exit_code == 1 and out.read_text() == "previous run"


def test_names_with_markup_and_control_characters_are_escaped(tmp_path):
    from safetensors.numpy import save_file

    names = ["[bold red]evil[/bold red].weight", "esc\x1b[2J\x07.weight", "new\nline.weight"]
    save_file({n: np.zeros((2, 2), np.float32) for n in names}, str(tmp_path / "m.safetensors"))
    buf = io.StringIO()
    Console(file=buf, width=200, force_terminal=False).print(render(inspect(tmp_path / "m.safetensors")))
    text = buf.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    assert "[bold red]evil[/bold red]" in text  # shown literally, not interpreted
    assert "esc\\x1b[2J\\x07" in text and "new\\nline" in text
