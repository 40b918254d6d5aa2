"""The report of a scan (many models): the zoo at a glance, in Markdown and self-contained HTML.

Sections: counts by status, models per finding type, the distribution of weight negative fractions
across models, the worst models per finding type, and the models that could not be read. Both
renderers draw the same sections (:func:`zoo_sections`); nothing links outside the file.
"""

from __future__ import annotations

from html import escape

import numpy as np
import pandas as pd

from ..finding import FINDING_TYPES
from .markdown import md

WORST = 5  # models listed per finding type
ERRORS_SHOWN = 50
BINS = 10  # negative-fraction histogram bins over [0, 1]


def zoo_sections(models: pd.DataFrame) -> list[tuple[str, list[str], list[list]]]:
    """(title, headers, rows) for every section of the scan report."""
    status = [[s, int((models["status"] == s).sum())] for s in ("ok", "error", "skipped")]
    sections = [("Models by status", ["status", "models"], status + [["total", len(models)]])]
    per_type = [[t, int((models[f"findings_{t}"].fillna(0) > 0).sum()), int(models[f"findings_{t}"].fillna(0).sum()),
                 FINDING_TYPES[t]] for t in FINDING_TYPES]
    sections.append(("Findings", ["finding", "models", "findings", "meaning"], [r for r in per_type if r[1]]))
    sections.append(("Weight negative fraction across models", ["range", "models", ""], neg_frac_bins(models)))
    for t in FINDING_TYPES:
        col = f"findings_{t}"
        worst = models[models[col].fillna(0) > 0].sort_values([col, "path"], ascending=[False, True]).head(WORST)
        if len(worst):
            sections.append((f"Most {t} findings", ["model", "findings", "format"],
                             [[r.path, int(getattr(r, col)), r.format if pd.notna(r.format) else ""]
                              for r in worst.itertuples()]))
    errors = models[models["status"] == "error"].head(ERRORS_SHOWN)
    if len(errors):
        sections.append(("Models that could not be read", ["model", "message"],
                         [[r.path, r.message] for r in errors.itertuples()]))
    return sections


def neg_frac_bins(models: pd.DataFrame) -> list[list]:
    """[range, models, bar] rows: how many models have their weight negative fraction in each tenth."""
    fr = pd.to_numeric(models["weight_neg_frac"], errors="coerce").dropna().to_numpy(dtype=float)
    counts, edges = np.histogram(fr, bins=BINS, range=(0.0, 1.0))
    top = max(int(counts.max()) if len(counts) else 0, 1)
    return [[f"{edges[i]:.1f}–{edges[i + 1]:.1f}", int(c), "#" * round(30 * c / top)] for i, c in enumerate(counts)]


def zoo_markdown(models: pd.DataFrame) -> str:
    lines = ["# winspect scan", "", f"{len(models)} models", ""]
    for title, headers, rows in zoo_sections(models):
        lines += [f"## {md(title)}", ""]
        if not rows:
            lines += ["None.", ""]
            continue
        lines += ["| " + " | ".join(md(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(md(c) for c in r) + " |" for r in rows] + [""]
    return "\n".join(lines)


STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;"
         "margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
         "td.n{text-align:right}.bar{font-family:monospace;color:#36c}")


def zoo_html(models: pd.DataFrame) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>winspect scan</title><style>{STYLE}"
             f"</style></head><body><h1>winspect scan</h1><p>{len(models)} models</p>"]
    for title, headers, rows in zoo_sections(models):
        parts.append(f"<h2>{escape(title)}</h2>")
        if not rows:
            parts.append("<p>None.</p>")
            continue
        head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
        body = "".join("<tr>" + "".join(_cell(c) for c in r) + "</tr>" for r in rows)
        parts.append(f"<table><tr>{head}</tr>{body}</table>")
    return "".join(parts) + "</body></html>\n"


def _cell(c) -> str:
    if isinstance(c, (int, np.integer)):
        return f"<td class='n'>{c}</td>"
    if isinstance(c, str) and c and set(c) == {"#"}:
        return f"<td class='bar'>{escape(c)}</td>"
    return f"<td>{escape(str(c), quote=True)}</td>"
