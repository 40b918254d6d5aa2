"""The terminal report of ``--header-only``: totals, then parameter counts per kind and per layer."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table

from .terminal import MAX_LAYER_ROWS, safe


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return str(n)  # pragma: no cover


def render_headers(result, max_rows: int = MAX_LAYER_ROWS) -> Group:
    s = result.summary
    parts: list = [f"[bold]winspect[/bold] {safe(result.source)}  ({safe(result.meta.get('format', '?'))}, "
                   "headers only: no values read)"]
    parts += [f"  note: {safe(n)}" for n in result.meta.get("notes", [])]
    parts.append(f"{s['tensors']:,} tensors, {s['numel']:,} values, {_size(s['nbytes'])} of tensor data")
    if result.received is not None:
        parts.append(f"network: {_size(result.received)} received")
    tables = result.tables
    parts.append(_table("by kind", "kind", tables.kinds, len(tables.kinds)))
    parts.append(_table("layers", "layer", tables.layers, max_rows))
    return Group(*parts)


def _table(title: str, key: str, frame, max_rows: int) -> Table:
    n = len(frame)
    rows = frame if n <= max_rows else frame.take(list(range(max_rows // 2)) + list(range(n - max_rows // 2, n)))
    if n > max_rows:
        title += f" ({max_rows} of {n} shown; --layers-csv FILE writes all)"
    t = Table(title=title, title_justify="left")
    for col in (key, "tensors", "values", "bytes"):
        t.add_column(col, justify="left" if col == key else "right", overflow="fold")
    for i, r in enumerate(rows.records()):
        if n > max_rows and i == max_rows // 2:
            t.add_row(f"… {n - max_rows} more …", "", "", "")
        t.add_row(safe(r[key] or "(top level)"), f"{r['tensors']:,}", f"{r['numel']:,}", _size(r["nbytes"]))
    return t
