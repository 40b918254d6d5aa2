"""The report of a scan (many models): the zoo at a glance, in Markdown and self-contained HTML.

Sections: counts by status, models per finding type, the distribution of weight negative fractions
across models, the worst models per finding type, and the models that could not be read. Both
renderers draw the same sections (:func:`zoo_sections`); nothing links outside the file. Their input is
a :class:`ZooTally`, filled from the model rows a batch at a time, so a zoo of any size is reported
in bounded memory.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

import numpy as np

from ..finding import FINDING_TYPES
from .markdown import md

if TYPE_CHECKING:  # (pandas is imported where it is used)
    import pandas as pd

WORST = 5  # models listed per finding type
ERRORS_SHOWN = 50
BINS = 10  # negative-fraction histogram bins over [0, 1]
STATUSES = ("ok", "error", "skipped")


class ZooTally:
    """What the scan report shows, gathered from the model rows one batch at a time, in path order, in
    memory bounded whatever the number of models: counts by status and finding type, the histogram of
    weight negative fractions, the WORST models per finding type and the first ERRORS_SHOWN errors."""

    def __init__(self):
        self.models = 0
        self.status = dict.fromkeys(STATUSES, 0)
        self.with_finding = dict.fromkeys(FINDING_TYPES, 0)  # models with at least one finding of the type
        self.findings = dict.fromkeys(FINDING_TYPES, 0)
        self.neg_frac = np.zeros(BINS, dtype=np.int64)
        self.worst: dict[str, list[list]] = {t: [] for t in FINDING_TYPES}  # [model, findings, format]
        self.errors: list[list] = []  # [model, message]

    def add(self, models) -> "ZooTally":
        """Count one batch of model rows (MODEL_COLUMNS; batches come in path order): a dict of columns
        as lists of plain values, None where one is missing (a scan's ``model_columns``: no pandas is
        imported), or a DataFrame."""
        cols = models if isinstance(models, dict) else frame_columns(models)
        paths, status = cols["path"], cols["status"]
        self.models += len(paths)
        for s in STATUSES:
            self.status[s] += status.count(s)
        for t in FINDING_TYPES:
            counts = [0 if n is None else n for n in cols[f"findings_{t}"]]
            hit = [i for i, n in enumerate(counts) if n > 0]
            if hit:
                self.with_finding[t] += len(hit)
                self.findings[t] += int(sum(counts))
                new = [[paths[i], int(counts[i]), cols["format"][i] or ""] for i in hit]
                self.worst[t] = sorted(self.worst[t] + new, key=lambda r: (-r[1], r[0]))[:WORST]
        fr = np.array([f for f in cols["weight_neg_frac"] if f is not None], dtype=float)
        self.neg_frac += np.histogram(fr[~np.isnan(fr)], bins=BINS, range=(0.0, 1.0))[0]
        errors = [[p, m or ""] for p, s, m in zip(paths, status, cols["message"]) if s == "error"]
        self.errors += errors[:ERRORS_SHOWN - len(self.errors)]
        return self


def frame_columns(models: pd.DataFrame) -> dict[str, list]:
    """The columns :meth:`ZooTally.add` reads, from a DataFrame of model rows: lists of plain values,
    None where one is missing (a weight_neg_frac that is not a number is missing too)."""
    import pandas as pd

    names = ["path", "format", "status", "message", *[f"findings_{t}" for t in FINDING_TYPES]]
    cols = {c: [None if pd.isna(v) else v for v in models[c].tolist()] for c in names}
    fr = pd.to_numeric(models["weight_neg_frac"], errors="coerce")
    cols["weight_neg_frac"] = [None if pd.isna(v) else float(v) for v in fr.tolist()]
    return cols


def tally_of(models) -> ZooTally:
    """``models`` as a :class:`ZooTally` (a DataFrame of model rows is counted as one batch)."""
    return models if isinstance(models, ZooTally) else ZooTally().add(models)


def zoo_sections(models) -> list[tuple[str, list[str], list[list]]]:
    """(title, headers, rows) for every section of the scan report, from a :class:`ZooTally` or the rows."""
    tally = tally_of(models)
    status = [[s, tally.status[s]] for s in STATUSES]
    sections = [("Models by status", ["status", "models"], status + [["total", tally.models]])]
    per_type = [[t, tally.with_finding[t], tally.findings[t], FINDING_TYPES[t]] for t in FINDING_TYPES]
    sections.append(("Findings", ["finding", "models", "findings", "meaning"], [r for r in per_type if r[1]]))
    sections.append(("Weight negative fraction across models", ["range", "models", ""], neg_frac_bins(tally)))
    for t in FINDING_TYPES:
        if tally.worst[t]:
            sections.append((f"Most {t} findings", ["model", "findings", "format"], tally.worst[t]))
    if tally.errors:
        sections.append(("Models that could not be read", ["model", "message"], tally.errors))
    return sections


def neg_frac_bins(tally: ZooTally) -> list[list]:
    """[range, models, bar] rows: how many models have their weight negative fraction in each tenth."""
    counts, edges = tally.neg_frac, np.linspace(0.0, 1.0, BINS + 1)
    top = max(int(counts.max()) if len(counts) else 0, 1)
    return [[f"{edges[i]:.1f}–{edges[i + 1]:.1f}", int(c), "#" * round(30 * c / top)] for i, c in enumerate(counts)]


def zoo_markdown(models) -> str:
    """The report in Markdown, from a :class:`ZooTally` or a DataFrame of model rows."""
    tally = tally_of(models)
    lines = ["# winspect scan", "", f"{tally.models} models", ""]
    for title, headers, rows in zoo_sections(tally):
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


def zoo_html(models) -> str:
    """The report as one self-contained HTML page, from a :class:`ZooTally` or a DataFrame of model rows."""
    tally = tally_of(models)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>winspect scan</title><style>{STYLE}"
             f"</style></head><body><h1>winspect scan</h1><p>{tally.models} models</p>"]
    for title, headers, rows in zoo_sections(tally):
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
