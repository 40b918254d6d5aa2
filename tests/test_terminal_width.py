"""Terminal tables fit the width: numbers whole, names shortened in the middle, columns dropped."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from inspector.report.fit import Column, fitted_table, middle_ellipsis

COLS = [Column("layer", "left", None, True), Column("values"), Column("weight neg", priority=9),
        Column("all neg", priority=3), Column("zero", priority=2), Column("abs mean (w)", priority=5),
        Column("std (w)", priority=4)]
ROWS = [["encoder.layers.10.self_attention.in_proj_weight_and_more", "86,292,480", "52.3%", "51.0%", "0.0%",
         "4.332e-05", "0.01234"], ["a", "1", "—", "—", "—", "—", "—"]]


def render(table, width):
    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(table)
    return console.export_text().splitlines()


def test_middle_ellipsis():
    s = middle_ellipsis("features.denseblock4.conv2", 12)
    assert s == "featur…conv2" and len(s) == 12
    assert middle_ellipsis("short", 12) == "short" and middle_ellipsis("abc", 1) == "…"


@pytest.mark.parametrize("width", [50, 60, 80, 100, 160])
def test_tables_fit_with_numbers_whole(width):
    table, dropped = fitted_table(COLS, ROWS, width, title="layers")
    lines = render(table, width)
    assert max(len(line.rstrip()) for line in lines) <= width
    assert len(lines) == 1 + 3 + len(ROWS) + 1  # title, header block, one line per row, bottom: nothing wraps
    text = "\n".join(lines)
    assert "86,292,480" in text and "52.3%" in text  # numbers never cut
    for header in dropped:
        assert header not in text
    if width >= 160:
        assert dropped == [] and ROWS[0][0] in text
    else:
        assert "…" in text and ROWS[0][0] not in text
    priority = {c.header: c.priority for c in COLS}
    kept = [c.header for c in COLS if c.header not in dropped and c.priority is not None]
    assert all(priority[d] < priority[k] for d in dropped for k in kept)  # lowest priority first


# --- the reports through the command line ------------------------------------------------------

import re  # noqa: E402

import numpy as np  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from inspector.cli import main  # noqa: E402

LONG = "encoder.layers.encoder_layer_{i}.self_attention.out_proj_with_a_very_long_name"


@pytest.fixture
def long_names(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"{LONG.format(i=i)}.weight": rng.normal(size=(300, 290)).astype(np.float32) for i in range(12)}
    arrays["tiny.weight"] = np.array([[-1.5e-7, 2.0]], np.float32)
    save_file(arrays, str(tmp_path / "m.safetensors"))
    return tmp_path / "m.safetensors"


def invoke(*args, columns):
    return CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": str(columns)})


@pytest.mark.parametrize("columns", [60, 80, 100])
def test_every_table_fits_columns_when_piped(long_names, columns):
    r = invoke(long_names, columns=columns)
    assert r.exit_code == 0, r.output
    table_lines = [line for line in r.output.splitlines() if line[:1] in "┏┃┡│└"]
    assert table_lines and max(len(line) for line in table_lines) <= columns
    body = [line for line in table_lines if "encoder" in line]
    assert len(body) == 12  # one line per layer: names shortened, not wrapped
    assert all("…" in line for line in body)
    assert "87,000" in r.output  # numbers whole
    tiny = next(line for line in table_lines if "tiny" in line)
    assert "50.0%" in tiny
    if columns <= 80:
        assert "left out to fit" in r.output


def test_columns_is_respected_and_wide_terminals_show_whole_names(long_names):
    r = invoke(long_names, columns=200)
    assert LONG.format(i=11) in r.output
    assert max(len(line) for line in r.output.splitlines() if line[:1] in "┏┃┡│└") <= 200


def test_top_sort_and_filter_the_layer_table(long_names):
    r = invoke(long_names, "--sort", "weight_neg_frac", "--top", "3", "--filter", "encoder", columns=200)
    assert r.exit_code == 0, r.output
    assert "sorted by weight_neg_frac" in r.output and "3 of 12 shown" in r.output
    rows = [line for line in r.output.splitlines() if line.startswith("│") and "encoder" in line]
    assert len(rows) == 3
    fracs = [float(x) for x in re.findall(r"(\d+\.\d)%", "\n".join(rows))][::3]
    assert fracs == sorted(fracs, reverse=True)
    r = invoke(long_names, "--filter", "^tiny", columns=200)
    assert "matching '^tiny'" in r.output
    assert not [line for line in r.output.splitlines() if line.startswith("│") and "encoder" in line]
    assert invoke(long_names, "--sort", "nope", columns=80).exit_code == 2
    assert invoke(long_names, "--filter", "(", columns=80).exit_code == 2
    assert invoke(long_names, "--top", "0", columns=80).exit_code == 2


def test_sorting_by_layer_is_natural(tmp_path):
    save_file({f"layers.{i}.weight": np.ones((2, 2), np.float32) for i in (10, 2, 1)}, str(tmp_path / "m.safetensors"))
    r = invoke(tmp_path / "m.safetensors", "--sort", "layer", columns=120)
    rows = [line.split("│")[1].strip() for line in r.output.splitlines() if line.startswith("│ layers")]
    assert rows == ["layers.1", "layers.2", "layers.10"]
