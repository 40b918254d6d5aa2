"""Terminal tables that fit the width: numbers whole, names shortened in the middle, columns dropped.

A table is a list of :class:`Column` specs and rows of strings. :func:`fit_columns` decides,
for a width in characters, which columns stay and how wide the name column may be:

* numbers and other fixed cells are never cut: a column is as wide as its widest cell or header;
* when the whole table does not fit, columns are dropped, lowest ``priority`` first (the name
  column and priority-``None`` columns never), and the caller says which were left out;
* the name column takes what is left (at least ``MIN_NAME`` characters) and a longer name is
  shortened in the middle with ``…``, keeping its start and its end (``features.…conv2``), on one line.

Widths follow rich's default table: one space of padding either side of each cell and one
border character between and around the columns.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table
from rich.text import Text

MIN_NAME = 20
ELLIPSIS = "…"


@dataclass(frozen=True)
class Column:
    header: str
    justify: str = "right"
    priority: int | None = None  # None: always kept; else dropped lowest first when the width is short
    name: bool = False  # the one column shortened in the middle to fit


def middle_ellipsis(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, its middle replaced by ``…`` when it is longer."""
    if len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    keep = width - 1
    head = (keep + 1) // 2
    return text[:head] + ELLIPSIS + text[len(text) - (keep - head):]


def table_width(widths: list[int]) -> int:
    """Characters a rich table with these column widths takes: padding 2 and one border per column, plus 1."""
    return sum(widths) + 3 * len(widths) + 1


def fit_columns(columns: list[Column], rows: list[list[str]], width: int) -> tuple[list[int], dict[int, int]]:
    """The indices of the columns kept, and each kept column's width, for a table at most ``width`` wide."""
    natural = [max([len(c.header)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    kept = list(range(len(columns)))

    def need(ids: list[int]) -> int:
        return table_width([min(natural[i], max(MIN_NAME, len(columns[i].header))) if columns[i].name
                            else natural[i] for i in ids])

    droppable = sorted((i for i, c in enumerate(columns) if c.priority is not None and not c.name),
                       key=lambda i: (columns[i].priority, -i))
    while need(kept) > width and droppable:
        kept.remove(droppable.pop(0))
    widths = {i: natural[i] for i in kept}
    names = [i for i in kept if columns[i].name]
    if names:
        i = names[0]
        room = width - table_width([widths[j] for j in kept if j != i] + [0])
        widths[i] = max(min(natural[i], room), min(natural[i], max(MIN_NAME, len(columns[i].header))))
    return kept, widths


def fitted_table(columns: list[Column], rows: list[list[str]], width: int, title: str | None = None,
                 **table_args) -> tuple[Table, list[str]]:
    """A rich Table of ``rows`` at most ``width`` wide, and the headers of the columns it left out.

    Cells are plain text (never read as rich markup); the caller makes control characters visible."""
    kept, widths = fit_columns(columns, rows, width)
    table = Table(title=title, title_justify="left", **table_args)
    for i in kept:
        c = columns[i]
        table.add_column(c.header, justify=c.justify, no_wrap=True, overflow="ellipsis", width=widths[i],
                         min_width=widths[i])
    for r in rows:
        table.add_row(*(Text(middle_ellipsis(r[i], widths[i]) if columns[i].name else r[i]) for i in kept))
    return table, [columns[i].header for i in range(len(columns)) if i not in kept]
