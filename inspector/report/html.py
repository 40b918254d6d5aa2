"""The self-contained HTML report, and the notebook view of an inspection.

One file: styles and the small table-sorting script are inline, images are
base64 ``data:`` URIs; nothing is fetched from anywhere. Every name from the
checkpoint is HTML-escaped.
"""

from __future__ import annotations

import base64
import math
from html import escape
from importlib import resources
from string import Template

from .. import __version__
from .views import (
    COMPACT_COLUMNS, KIND_VIEW, LAYER_VIEW, UNTRAINED, counters_line, extreme_layers, finding_rows, headline,
    headline_detail, order_label, plural, quantization_line, totals,
)

COMPACT_ROWS = 20  # the notebook view shows the first and last half of these


def _e(x) -> str:
    return escape(str(x), quote=True)


def _sort_value(v) -> str:
    """The raw value a sortable cell sorts by: the number as Python writes it, or the text."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    return repr(float(v)) if isinstance(v, float) else str(v)


def summary_html(inspection) -> str:
    """Source, UNTRAINED banner, headline, notes, findings count, per-kind table, extreme layers."""
    s = inspection.summary
    parts = [f'<h1>winspect report: <span class="src">{_e(inspection.source)}</span></h1>',
             f'<p class="meta">{_e(s.get("format") or "")} · {_e(totals(s))}</p>']
    if s.get("trained") is False:
        parts.append(f'<p class="untrained">{_e(UNTRAINED)}</p>')
    head = headline(s)
    if head:
        frac, rest = head.split(" ", 1)
        parts.append(f'<p class="headline"><span class="neg">{_e(frac)}</span> {_e(rest)}</p>')
        parts.append(f"<p>{_e(headline_detail(s))}</p>")
    else:
        parts.append('<p class="headline">This model has no weight-kind tensors.</p>')
    parts += [f'<p class="meta">note: {_e(n)}</p>' for n in s.get("notes", [])]
    parts += [f'<p class="meta">{_e(quantization_line(s))}</p>'] if s.get("quantization") else []
    if s.get("findings"):
        parts.append(f'<p class="warn"><a href="#findings">{plural(len(s["findings"]), "finding")}</a> '
                     "(NaN/Inf, all-zero, tied or outlying tensors): see below.</p>")
    parts.append(kind_table(s))
    cols = "".join(f"<div><strong>{_e(t)}</strong><ol>"
                   + "".join(f'<li><code>{_e(name)}</code> {_e(v)}</li>' for name, v in rows)
                   + "</ol></div>" for t, rows in extreme_layers(s))
    parts.append(f'<div class="cols">{cols}</div>')
    return "\n".join(parts)


def kind_table(s: dict) -> str:
    head = '<th class="name">kind</th>' + "".join(f"<th>{_e(h)}</th>" for _, h, _ in KIND_VIEW)
    rows = "".join(
        f'<tr><td class="name">{_e(kind)}</td>' + "".join(f"<td>{_e(f(k[c]))}</td>" for c, _, f in KIND_VIEW)
        + "</tr>" for kind, k in s["by_kind"].items())
    counters = f"<p>{_e(counters_line(s))}</p>" if counters_line(s) else ""
    return f'<table class="kinds"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{counters}'


def layer_table(layers, columns=None, sortable: bool = True) -> str:
    """The per-layer table; each cell carries its raw value in ``data-v`` for sorting."""
    view = [v for v in LAYER_VIEW if columns is None or v[0] in columns]
    head = '<th data-type="num">#</th>' + "".join(
        f'<th{" class=name" if c == "layer" else ""} data-type="{"text" if c == "layer" else "num"}">{_e(h)}</th>'
        for c, h, _ in view)
    body = []
    for i, r in layers.iterrows():
        cells = [f'<td data-v="{i}">{i}</td>']
        for c, _, f in view:
            v = r[c]
            raw = f(v) if c == "layer" else _sort_value(v)
            cls = ' class="name"' if c == "layer" else ""
            cells.append(f'<td{cls} data-v="{_e(raw)}">{_e(f(v))}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    cls = ' class="sortable"' if sortable else ""
    return f'<table id="layers"{cls}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def figures_html(images) -> str:
    """``images``: (caption, PNG bytes) pairs, embedded as data URIs."""
    return "\n".join(
        f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
        for caption, png in images)


def findings_html(s: dict) -> str:
    rows = finding_rows(s)
    if not rows:
        return "<p>No findings: no NaN/Inf values, all-zero, tied or outlying tensors.</p>"
    items = "".join(f"<li><strong>{_e(t)}</strong> <code>{_e(name)}</code>: {_e(detail)}</li>"
                    for t, name, detail in rows)
    return f"<ul>{items}</ul>"


def report_html(inspection, images) -> str:
    """The whole report as one HTML document."""
    n = len(inspection.layers)
    body = "\n".join([
        summary_html(inspection),
        f"<h2>Layers ({n:,}, {order_label(inspection.summary)}; click a column to sort)</h2>",
        f'<div class="scroll">{layer_table(inspection.layers)}</div>',
        "<h2>Plots</h2>",
        figures_html(images) or "<p>No plots: no learned values.</p>",
        '<h2 id="findings">Findings</h2>',
        findings_html(inspection.summary),
        f"<footer>winspect {_e(__version__)}</footer>",
    ])
    template = resources.files("inspector.report").joinpath("templates/report.html").read_text("utf-8")
    return Template(template).substitute(title=_e(inspection.source), body=body)


def notebook_html(inspection) -> str:
    """The summary and a compact layer table (first and last rows), for ``_repr_html_``."""
    layers = inspection.layers
    n = len(layers)
    half = COMPACT_ROWS // 2
    shown = layers if n <= COMPACT_ROWS else layers.iloc[list(range(half)) + list(range(n - half, n))]
    note = "" if n <= COMPACT_ROWS else f"<p>{COMPACT_ROWS} of {n:,} layers shown (first and last); " \
        "<code>.layers</code> has all of them, <code>.to_report(dir)</code> writes the full report.</p>"
    table = layer_table(shown, COMPACT_COLUMNS, sortable=False)
    return f'<div class="winspect">{summary_html(inspection)}{note}{table}</div>'
