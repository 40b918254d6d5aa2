"""The Markdown report (GitHub-flavoured): summary, plots by relative path, per-layer table, findings."""

from __future__ import annotations

import re

from .text import visible
from .views import (
    KIND_VIEW, LAYER_VIEW, UNTRAINED, counters_line, extreme_layers, finding_rows, headline, headline_detail,
    order_label, plural, quantization_line, totals,
)

_SPECIAL = re.compile(r"([\\`*_\[\]|~])")  # special anywhere in a line (no name starts a line)


def md(x) -> str:
    """Text safe in Markdown, also inside a table cell: HTML-escaped, punctuation backslash-escaped, one line,
    control characters (ESC, NUL, ...) shown as escapes."""
    s = visible(" ".join(str(x).split()))
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _SPECIAL.sub(r"\\\1", s)


def _table(headers, rows, text_col: int) -> list[str]:
    out = ["| " + " | ".join(md(h) for h in headers) + " |",
           "|" + "|".join(":---" if i == text_col else "---:" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(md(c) for c in r) + " |" for r in rows]
    return out


def report_markdown(inspection, images) -> str:
    """``images``: (caption, relative path) pairs."""
    s = inspection.summary
    lines = [f"# winspect report: {md(inspection.source)}", "", f"{md(s.get('format') or '')} · {md(totals(s))}", ""]
    if s.get("trained") is False:
        lines += [f"> **{md(UNTRAINED)}**", ""]
    head = headline(s)
    lines += [f"**{md(head)}** ({md(headline_detail(s))})" if head else "This model has no weight-kind tensors.", ""]
    if s.get("findings"):
        n = plural(len(s["findings"]), "finding")
        lines += [f"**{n}** (NaN/Inf, all-zero, tied or outlying tensors): see Findings.", ""]
    notes = [f"- note: {md(n)}" for n in s.get("notes", [])]
    notes += [f"- {md(quantization_line(s))}"] if s.get("quantization") else []
    lines += notes + [""] * bool(notes) + ["## By kind", ""]
    lines += _table(["kind"] + [h for _, h, _ in KIND_VIEW],
                    [[kind] + [f(k[c]) for c, _, f in KIND_VIEW] for kind, k in s["by_kind"].items()], 0)
    lines += ["", md(counters_line(s))] if counters_line(s) else []
    for title, rows in extreme_layers(s):
        lines += ["", f"**{md(title.capitalize())}:** " + ", ".join(f"{md(name)} {md(v)}" for name, v in rows)]
    lines += ["", "## Plots", ""]
    lines += [f"![{md(caption)}]({path})" + "\n" for caption, path in images] or ["No plots: no learned values.", ""]
    lines += [f"## Layers ({len(inspection.layers):,}, {order_label(s)})", ""]
    lines += _table(["#"] + [h for _, h, _ in LAYER_VIEW],
                    [[str(i)] + [f(r[c]) for c, _, f in LAYER_VIEW] for i, r in inspection.layers.iterrows()], 1)
    lines += ["", "## Findings", ""]
    rows = finding_rows(s)
    lines += [f"- **{md(t)}** {md(name)}: {md(detail)}" for t, name, detail in rows] or ["No findings."]
    return "\n".join(lines) + "\n"
