"""``to_report``: the whole report set written into one directory.

DIR gets ``tensors.csv``, ``layers.csv``, ``summary.json``, the plots as PNG
(and SVG on request), ``report.html`` and ``report.md``, and a manifest of them
(``.winspect-report.json``). DIR is created if missing; the files of an earlier
report there are replaced (plot pages an earlier run wrote and this one does not
are removed, when its manifest lists them and they are unchanged); nothing else
is touched, and no input ever. See :mod:`inspector.report.outdir`.
"""

from __future__ import annotations

import io
from pathlib import Path

from ..errors import OutputError
from .export import write_bytes, write_json, write_text
from .outdir import MANIFEST, earlier_files, locked, manifest, refuse_protected, remove_stale

REPORT_FILES = ("tensors.csv", "layers.csv", "summary.json", "report.html", "report.md")
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


def render_png(fig) -> bytes:
    """A figure as PNG bytes."""
    return _render(fig, "png")


def write_plots(inspection, out: Path, svg: bool = False, protect=()) -> tuple[list[tuple[str, str, bytes]], set]:
    """Write every plot as PNG (and SVG): ((caption, PNG file name, PNG bytes) per plot, names written)."""
    from .plots import plots
    from .spectral_plots import spectral_plots

    written, shown = set(), []
    for p in plots(inspection) + spectral_plots(inspection):
        png = _render(p.figure, "png")
        put(write_bytes, png, out, f"{p.stem}.png", written, protect)
        if svg:
            put(write_bytes, _render(p.figure, "svg"), out, f"{p.stem}.svg", written, protect)
        shown.append((p.caption, f"{p.stem}.png", png))
    return shown, written


def put(writer, data, out: Path, name: str, written: set, protect) -> None:
    """Write one file of the set (never over a protected file) and remember its name."""
    refuse_protected(out / name, protect)
    writer(data, out / name)
    written.add(name)


def to_report(inspection, directory, svg: bool = False, protect=()) -> Path:
    """Write the report set into ``directory``; returns the path of report.html.

    ``protect``: files that must not be written over or removed (the inputs and the files they read).
    One run at a time writes a directory (a lock); files of an earlier report that this one does not
    write again are removed only when its manifest lists them and they are unchanged since.
    """
    from .html import report_html
    from .markdown import report_markdown

    out = report_dir(directory)
    with locked(out):
        earlier = earlier_files(out)
        written: set[str] = set()
        put(lambda _, p: inspection.to_csv(p), None, out, "tensors.csv", written, protect)
        put(lambda _, p: inspection.to_layers_csv(p), None, out, "layers.csv", written, protect)
        put(write_json, inspection.summary, out, "summary.json", written, protect)
        shown, plots_written = write_plots(inspection, out, svg, protect)
        written |= plots_written
        put(write_text, report_html(inspection, [(c, png) for c, _, png in shown]), out, "report.html", written, protect)
        put(write_text, report_markdown(inspection, [(c, name) for c, name, _ in shown]), out, "report.md", written,
            protect)
        remove_stale(out, earlier, written, protect)
        write_json(manifest(out, written), out / MANIFEST)
    return out / "report.html"
