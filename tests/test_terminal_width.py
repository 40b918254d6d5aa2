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
