"""The terminal report: summary first, then a per-layer table that stays readable at any size.

Renderers here return rich renderables; the CLI prints them."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from rich.console import Group
from rich.markup import escape

from ..names import natural_key
from ..table.frame import Frame, descending
from .fit import Column, fitted_table
from .text import shorten, visible
from .views import count, counters_line, grouped_findings, headline, num, order_label, pct, quantization_line, totals

MAX_LAYER_ROWS = 40
DEFAULT_WIDTH = 120  # when standard output is not a terminal and COLUMNS is not set
MAX_FINDING_ROWS = 20


def safe(text) -> str:
    """Escape rich markup, make control characters visible and shorten over-long names (before layout)."""
    return escape(visible(shorten(text)))


@dataclass(frozen=True)
class LayerSelection:
    """Which rows of the layer table the terminal shows: ``sort`` by a column (numbers largest
    first, names in natural order), only layers whose name matches ``pattern`` (a regular expression), the
    first ``top`` of them; without ``top``, the first and last MAX_LAYER_ROWS / 2 of a long table."""

    top: int | None = None
    sort: str | None = None
    pattern: str | None = None


def render(inspection, max_rows: int = MAX_LAYER_ROWS, width: int = DEFAULT_WIDTH,
           selection: LayerSelection = LayerSelection()) -> Group:
    """The whole terminal report, every table at most ``width`` characters wide."""
    s = inspection.summary
    parts: list = _header(inspection.source, s)
    table, dropped = _kind_table(s, width)
    parts += [table, *dropped_note(dropped, width)]
    if counters_line(s):
        parts.append(f"  {safe(counters_line(s))}")
    for key, title in (("most_negative_layers", "most"), ("least_negative_layers", "least")):
        if s[key]:
            parts.append(f"{title} negative layers: " + ", ".join(
                f"{safe(x['layer'])} {pct(x['weight_neg_frac'])}" for x in s[key]))
    table, dropped = _layer_table(inspection.tables.layers, max_rows, order_label(s), width, selection)
    parts += [table, *dropped_note(dropped, width)]
    if s.get("spectral"):
        parts.append(spectral_line(s["spectral"]))
    rows = grouped_findings(s.get("findings", []))
    for type_, subject, detail in rows[:MAX_FINDING_ROWS]:
        parts.append(f"[yellow]finding[/yellow] {safe(type_)}: {safe(subject)}: {safe(detail)}")
    if len(rows) > MAX_FINDING_ROWS:
        parts.append(f"… {len(rows) - MAX_FINDING_ROWS} more findings (see --json)")
    return Group(*parts)


def spectral_line(sp: dict) -> str:
    """One line of the spectral summary (``--spectral``)."""
    return (f"[bold]spectral[/bold] ({sp['weights']} weights): mean alpha {num(sp['mean_alpha'])}, "
            f"alpha < 2: {sp['alpha_below_2']}, alpha > 6: {sp['alpha_above_6']}; mean log_norm "
            f"{num(sp['mean_log_norm'])}, mean stable_rank {num(sp['mean_stable_rank'])} (columns: --csv)")


def _header(source: str, s: dict) -> list:
    parts = [f"[bold]winspect[/bold] {safe(source)}  ({safe(s['format'])})"]
    if s.get("trained") is False:
        parts.append("[bold red]UNTRAINED[/bold red]: freshly initialised weights, not a trained model")
    keras = [f"{k} {s[v]}" for k, v in (("keras", "keras_version"), ("backend", "backend")) if s.get(v)]
    if keras:
        parts.append(f"  {safe(', '.join(keras))}")
    parts += [f"  note: {safe(note)}" for note in s["notes"]]
    if s.get("quantization"):
        parts.append(safe(quantization_line(s)))
    parts.append(totals(s))
    if headline(s):
        parts.append(f"[bold]{headline(s)}[/bold] ({pct(s['weight_zero_frac'])} zero, {pct(s['weight_pos_frac'])} "
                     "positive)")
    return parts


def dropped_note(dropped: list[str], width: int) -> list[str]:
    if not dropped:
        return []
    return [f"  ({', '.join(dropped)} left out to fit {width} columns; widen the terminal or set COLUMNS)"]


KIND_COLUMNS = [Column("kind", "left", None, True), Column("tensors", priority=3), Column("values", priority=5),
                Column("negative"), Column("zero", priority=2), Column("positive", priority=4),
                Column("abs mean", priority=1), Column("std", priority=0)]


def _kind_table(s, width: int):
    rows = [[kind, str(k["tensors"]), f"{k['numel']:,}", pct(k["neg_frac"]), pct(k["zero_frac"]),
             pct(k["pos_frac"]), num(k["abs_mean"]), num(k["std"])] for kind, k in s["by_kind"].items()]
    return fitted_table(KIND_COLUMNS, rows, width, title="by kind")


# (layer table column, header, formatter, priority: lowest dropped first, None never)
LAYER_TERMINAL_VIEW = [
    ("numel", "values", count, 6), ("weight_neg_frac", "weight neg", pct, None), ("neg_frac", "all neg", pct, 3),
    ("zero_frac", "zero", pct, 2), ("weight_abs_mean", "abs mean (w)", num, 5), ("weight_std", "std (w)", num, 4),
]


def select_layers(layers: Frame, selection: LayerSelection, max_rows: int):
    """(the rows to show, their title words, the number of rows before cutting) for a selection."""
    words, df = [], layers
    if selection.pattern is not None:
        found = re.compile(selection.pattern).search
        df = df[np.fromiter((found(x if isinstance(x, str) else "") is not None for x in df["layer"]), bool, len(df))]
        words.append(f"matching {selection.pattern!r}")
    if selection.sort == "layer":  # names in natural order: layers.2 before layers.10
        names = df["layer"].tolist()
        df = df.take(sorted(range(len(df)), key=lambda i: natural_key(str(names[i]))))
    elif selection.sort:
        df = df.take(descending(df[selection.sort]))
        words.append(f"sorted by {selection.sort}")
    n = len(df)
    if selection.top is not None:
        return df.take(range(min(selection.top, n))), words + [f"{min(selection.top, n)} of {n} shown"], n
    if n > max_rows:
        half = max_rows // 2
        return df.take(list(range(half)) + list(range(n - half, n))), words + [
            f"{max_rows} of {n} shown; --top, --filter or --layers-csv FILE for the rest"], n
    return df, words, n


def _layer_table(layers, max_rows: int, order: str, width: int, selection: LayerSelection):
    shown, words, n = select_layers(layers, selection, max_rows)
    view = list(LAYER_TERMINAL_VIEW)
    if selection.sort and selection.sort not in ("layer", *(c for c, *_ in view)):
        view.append((selection.sort, selection.sort, count if "count" in selection.sort else num, None))
    columns = [Column("layer", "left", None, True)] + [Column(h, priority=p) for _, h, _, p in view]
    rows = [[visible(r["layer"] or "(top level)")] + [f(r[c]) for c, _, f, _ in view] for r in shown.records()]
    if selection.top is None and n > max_rows:
        rows.insert(max_rows // 2, [f"… {n - max_rows} more layers …"] + [""] * len(view))
    title = f"layers ({'; '.join(([] if selection.sort else [order]) + words)})"
    return fitted_table(columns, rows, width, title=title)
