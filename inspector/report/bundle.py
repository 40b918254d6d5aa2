"""``to_report``: the whole report set written into one directory.

DIR gets ``tensors.csv``, ``layers.csv``, ``summary.json``, the plots as PNG
(and SVG on request), ``report.html`` and ``report.md``. DIR is created if
missing; the files of an earlier report there are replaced (plot pages an
earlier run wrote and this one does not are removed); nothing else is touched.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from ..errors import OutputError
from .export import write_bytes, write_json, write_text

REPORT_FILES = ("tensors.csv", "layers.csv", "summary.json", "report.html", "report.md")
PLOT_FILE = re.compile(r"^(weight-distribution|negative-fraction|magnitudes|histograms)(-\d+)?\.(png|svg)$")
DPI = 100


def report_dir(directory, what: str = "report") -> Path:
    """DIR, created if missing; an existing file there is refused. ``what``: the directory's role in messages."""
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory; cannot create the {what} directory there")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{out}: cannot create the {what} directory ({e.strerror or e})") from None
    return out


def _render(fig, fmt: str) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=DPI)
    return buf.getvalue()


def write_plots(inspection, out: Path, svg: bool = False) -> list[tuple[str, str, bytes]]:
    """Write every plot as PNG (and SVG); (caption, PNG file name, PNG bytes) per plot."""
    from .plots import plots

    written, shown = set(), []
    for p in plots(inspection):
        png = _render(p.figure, "png")
        write_bytes(png, out / f"{p.stem}.png")
        written.add(f"{p.stem}.png")
        if svg:
            write_bytes(_render(p.figure, "svg"), out / f"{p.stem}.svg")
            written.add(f"{p.stem}.svg")
        shown.append((p.caption, f"{p.stem}.png", png))
    for f in out.iterdir():
        if PLOT_FILE.match(f.name) and f.name not in written and f.is_file():
            try:
                f.unlink()
            except OSError as e:
                raise OutputError(f"{f}: cannot remove this plot of an earlier report ({e.strerror or e})") from None
    return shown


def to_report(inspection, directory, svg: bool = False) -> Path:
    """Write the report set into ``directory``; returns the path of report.html."""
    from .html import report_html
    from .markdown import report_markdown

    out = report_dir(directory)
    inspection.to_csv(out / "tensors.csv")
    inspection.to_layers_csv(out / "layers.csv")
    write_json(inspection.summary, out / "summary.json")
    shown = write_plots(inspection, out, svg)
    write_text(report_html(inspection, [(c, png) for c, _, png in shown]), out / "report.html")
    write_text(report_markdown(inspection, [(c, name) for c, name, _ in shown]), out / "report.md")
    return out / "report.html"
