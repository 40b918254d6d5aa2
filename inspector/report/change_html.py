"""Self-contained HTML for diff, track and compare results, and their notebook views.

Like the inspection report: one file, styles inline, figures as base64 ``data:`` URIs, every
name from a checkpoint HTML-escaped; nothing is fetched from anywhere.
"""

from __future__ import annotations

import math
from importlib import resources
from string import Template

import pandas as pd

from .. import __version__
from .html import _e as escape_html
from .html import figures_html
from .terminal import visible


def _e(x) -> str:
    """HTML-escaped, control characters shown as Python escapes."""
    return escape_html(visible(x))

NOTEBOOK_ROWS = 20  # rows of the main table in a notebook view (first and last half)


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def frame_html(df: pd.DataFrame, max_rows: int | None = None) -> str:
    """A DataFrame as an escaped HTML table; with ``max_rows``, its first and last rows only."""
    n = len(df)
    if max_rows is not None and n > max_rows:
        half = max_rows // 2
        df = df.iloc[list(range(half)) + list(range(n - half, n))]
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    note = f"<p>{len(df)} of {n:,} rows shown (first and last).</p>" if len(df) < n else ""
    return f'{note}<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _lines(lines: list[str]) -> str:
    return "".join(f"<p>{_e(line)}</p>" for line in lines)


def change_report_html(title: str, lines: list[str], table: pd.DataFrame, images) -> str:
    """The whole report of a diff, track or compare result as one HTML document.
    ``images``: (caption, PNG bytes) pairs."""
    body = "\n".join([
        f'<h1>winspect: <span class="src">{_e(title)}</span></h1>',
        _lines(lines),
        "<h2>Plots</h2>",
        figures_html(images) or "<p>No plots.</p>",
        "<h2>Table</h2>",
        frame_html(table),
        f"<footer>winspect {_e(__version__)}</footer>",
    ])
    template = resources.files("inspector.report").joinpath("templates/report.html").read_text("utf-8")
    return Template(template).substitute(title=_e(title), body=body)


def change_notebook_html(title: str, lines: list[str], table: pd.DataFrame) -> str:
    """The summary lines and the main table's first and last rows, for ``_repr_html_``."""
    return (f'<div class="winspect"><h3>winspect: {_e(title)}</h3>{_lines(lines)}'
            f"{frame_html(table, NOTEBOOK_ROWS)}</div>")
