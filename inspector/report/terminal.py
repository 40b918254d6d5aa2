"""The terminal report: summary first, then a per-layer table that stays readable at any size.

Renderers here return rich renderables; the CLI prints them."""

from __future__ import annotations

from rich.console import Group
from rich.markup import escape
from rich.table import Table

from .text import shorten, visible
from .views import counters_line, grouped_findings, headline, num, order_label, pct, quantization_line, totals

MAX_LAYER_ROWS = 40
MAX_FINDING_ROWS = 20


def safe(text) -> str:
    """Escape rich markup, make control characters visible and shorten over-long names (before layout)."""
    return escape(visible(shorten(text)))


def render(inspection, max_rows: int = MAX_LAYER_ROWS) -> Group:
    parts: list = []
    s = inspection.summary
    parts.append(f"[bold]winspect[/bold] {safe(inspection.source)}  ({safe(s['format'])})")
    if s.get("trained") is False:
        parts.append("[bold red]UNTRAINED[/bold red]: freshly initialised weights, not a trained model")
    keras = [f"{k} {s[v]}" for k, v in (("keras", "keras_version"), ("backend", "backend")) if s.get(v)]
    if keras:
        parts.append(f"  {safe(', '.join(keras))}")
    for note in s["notes"]:
        parts.append(f"  note: {safe(note)}")
    if s.get("quantization"):
        parts.append(safe(quantization_line(s)))
    parts.append(totals(s))
    if headline(s):
        parts.append(f"[bold]{headline(s)}[/bold] ({pct(s['weight_zero_frac'])} zero, {pct(s['weight_pos_frac'])} "
                     "positive)")
    parts.append(_kind_table(s))
    if counters_line(s):
        parts.append(f"  {safe(counters_line(s))}")
    if s["most_negative_layers"]:
        most = ", ".join(f"{safe(x['layer'])} {pct(x['weight_neg_frac'])}" for x in s["most_negative_layers"])
        least = ", ".join(f"{safe(x['layer'])} {pct(x['weight_neg_frac'])}" for x in s["least_negative_layers"])
        parts.append(f"most negative layers: {most}")
        parts.append(f"least negative layers: {least}")
    parts.append(_layer_table(inspection.layers, max_rows, order_label(s)))
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


def _kind_table(s) -> Table:
    t = Table(title="by kind", title_justify="left")
    for col in ("kind", "tensors", "values", "negative", "zero", "positive", "abs mean", "std"):
        t.add_column(col, justify="left" if col == "kind" else "right")
    for kind, k in s["by_kind"].items():
        t.add_row(kind, str(k["tensors"]), f"{k['numel']:,}", pct(k["neg_frac"]), pct(k["zero_frac"]),
                  pct(k["pos_frac"]), num(k["abs_mean"]), num(k["std"]))
    return t


def _layer_table(layers, max_rows: int, order: str) -> Table:
    n = len(layers)
    shown = layers if n <= max_rows else layers.iloc[list(range(max_rows // 2)) + list(range(n - max_rows // 2, n))]
    title = f"layers ({order})" if n <= max_rows else f"layers ({order}; {max_rows} of {n} shown; --layers-csv FILE writes all)"
    t = Table(title=title, title_justify="left")
    for col in ("layer", "values", "weight neg", "all neg", "zero", "abs mean (w)", "std (w)"):
        t.add_column(col, justify="left" if col == "layer" else "right", overflow="fold", no_wrap=col != "layer")
    for i, r in enumerate(shown.itertuples()):
        if n > max_rows and i == max_rows // 2:
            t.add_row(f"… {n - max_rows} more layers …", "", "", "", "", "", "")
        t.add_row(safe(r.layer or "(top level)"), f"{r.numel:,}", pct(r.weight_neg_frac), pct(r.neg_frac),
                  pct(r.zero_frac), num(r.weight_abs_mean), num(r.weight_std))
    return t
