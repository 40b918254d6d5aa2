"""The public Python API: ``inspect(source) -> Inspection``.

Chains loader -> analyzer -> tables (inspector.table), one tensor at a time.
"""

from __future__ import annotations

from pathlib import Path


from .analysis.complex_values import complex_note
from .analysis.spectral import blas_threads
from .analysis.stats import CHUNK_ELEMS
from .loaders import LoadOptions, open_source
from .names import natural_key
from .report.export import write_csv, write_json
from .table import Tables, build_tables
from .table.headers import HeaderTables, header_tables
from .table.rows import (
    TABLE_REDUCERS, TABLE_ROW_FUNCTIONS, ProgressFn, ReducerFactory, RowFunction, analyze_records, pop_spectra,
    table_frame, table_rows,
)
from .table.schema import tensor_frame

SMALL_MODEL_BYTES = 1 << 20  # models of at most this many bytes of tensor data are reduced on one thread


class TableExports:
    """What the results that hold ``tables`` (tensor and layer tables as Frames) and ``summary`` share:
    ``tensors`` and ``layers`` as pandas DataFrames (made on first use, so that a caller that only writes
    files never imports pandas), and the writers."""

    @property
    def tensors(self):
        return self._dataframe("tensors")

    @property
    def layers(self):
        return self._dataframe("layers")

    def _dataframe(self, name: str):
        made = self.__dict__.setdefault("_dataframes", {})
        if name not in made:
            made[name] = getattr(self.tables, name).to_pandas()
        return made[name]

    def to_csv(self, path) -> Path:
        return write_csv(self.tables.tensors, path)

    def to_layers_csv(self, path) -> Path:
        return write_csv(self.tables.layers, path)

    def to_json(self, path) -> Path:
        return write_json({"source": self.source, "summary": self.summary, "tensors": self.tables.tensors}, path)


class Inspection(TableExports):
    """The result of inspecting one source.

    ``tensors``: one row per tensor (the CSV columns); ``layers``: one row per layer (pandas
    DataFrames; ``tables`` holds the same tables as :class:`~inspector.table.frame.Frame` objects);
    ``summary``: totals, the headline negative fraction, per-kind figures, findings;
    ``histograms``: per tensor name, (bin edges, counts) from the pass: 64 bins symmetric about
    zero over ±max|x|, or over ±4 max(|p01|, |p99|) when outliers reach further (they count in
    the outer bins; see ``analysis.exact.hist_edges``).
    ``spectra``: with ``spectral=True``, per analysed weight its eigenvalues and fit (see
    inspector.analysis.spectral); empty otherwise.
    """

    def __init__(self, source: str, tables: Tables, meta: dict, histograms: dict, spectra: dict | None = None):
        self.source = source
        self.spectra = spectra or {}
        self.meta = meta
        self.tables = tables
        self.summary = tables.summary
        self.histograms = histograms

    @classmethod
    def from_rows(cls, source: str, rows: list[dict], meta: dict, histograms: dict) -> "Inspection":
        """The inspection of ``source`` from its tensor rows (see inspector.table.rows)."""
        spectra = pop_spectra(rows)
        return cls(source, build_tables(source, tensor_frame(rows), meta), meta, histograms, spectra)


    def plot(self, which: str = "weight") -> list:
        """A list of matplotlib Figures, one per page, known to pyplot so that ``plt.show()`` and
        notebooks display them: ``weight`` (the whole-model distribution, one page), ``negative``,
        ``magnitude``, ``histograms`` (several pages for big models), with spectral columns ``esd``,
        ``alpha``, ``sign``; or ``all``. See inspector.report.plots. Nothing to draw: an empty list."""
        from .report.plots import plots, with_pyplot
        from .report.spectral_plots import SPECTRAL_PLOT_NAMES, spectral_plots

        if which in SPECTRAL_PLOT_NAMES:
            return with_pyplot([p.figure for p in spectral_plots(self, which)])
        extra = spectral_plots(self) if which == "all" else []
        return with_pyplot([p.figure for p in plots(self, which) + extra])

    def to_report(self, directory, svg: bool = False, protect=()) -> Path:
        """Write CSVs, summary.json, plots, report.html and report.md into ``directory``; never over or
        removing a file in ``protect``."""
        from .report.bundle import to_report

        return to_report(self, directory, svg, protect)

    def _repr_html_(self) -> str:
        from .report.html import notebook_html

        return notebook_html(self)

    def __repr__(self) -> str:
        s = self.summary
        frac = s["weight_neg_frac"]
        head = f"{frac:.1%} of weight parameters negative" if frac == frac else "no weight parameters"
        return f"<Inspection {self.source}: {s['tensors']} tensors, {s['numel']:,} values, {head}>"


def inspect(
    source,
    weights: str = "DEFAULT",
    *,
    chunk_elems: int = CHUNK_ELEMS,
    progress: ProgressFn | None = None,
    spectral: bool = False,
    no_download: bool = False,
    cache=None,
    threads: int | None = None,
) -> Inspection:
    """Inspect a torchvision model name, a checkpoint file, a model directory, or a remote source (an
    http(s) URL, ``hf://ORG/REPO[@REVISION][/FILE]``, an fsspec URL; see docs/remote.md).

    ``spectral=True`` adds the spectral columns (docs/spectral.md) to the weight matrices. ``threads``: how
    many threads reduce the tensors (default: ``WINSPECT_THREADS``, else one per CPU; a model of at most
    ``SMALL_MODEL_BYTES`` takes one, as starting threads would cost more than its work)."""
    options = LoadOptions(weights=weights, no_download=no_download,
                          cache=str(Path(cache).expanduser()) if cache else None)
    with open_source(str(source), options) as src, blas_threads(spectral):
        totals = src.totals()
        if totals and hasattr(progress, "begin"):
            progress.begin(*totals)
        if src.network is not None and hasattr(progress, "network"):
            progress.network(src.network)
        # a server that ignores Range sends each file whole: one reader, front to back, in one pass
        small = totals is not None and totals[1] <= SMALL_MODEL_BYTES
        workers = 1 if small or getattr(src.network, "ranges_ignored", False) else threads
        tensors, hists, spectra = table_frame(src.records(), chunk_elems, progress, spectral, workers)
        meta = dict(src.meta)
    note = complex_note([{"name": n, "dtype": d} for n, d in zip(tensors["name"], tensors["dtype"])
                         if str(d).startswith("complex")])
    if note:
        meta["notes"] = [*meta.get("notes", []), note]
    if meta.get("order") == "natural":  # the source does not know the modules' order
        names = tensors["name"].tolist()
        tensors = tensors.take(sorted(range(len(names)), key=lambda i: natural_key(names[i])))
    return Inspection(str(source), build_tables(str(source), tensors, meta), meta, hists, spectra)


class HeaderInspection(TableExports):
    """Shapes, dtypes and parameter counts of a source from its headers alone (no value is read):
    ``tensors``, ``layers``, ``kinds`` (DataFrames; ``tables`` holds them as Frames), ``summary`` (dict),
    ``received`` (network bytes)."""

    def __init__(self, source: str, tables: HeaderTables, meta: dict, received: int | None):
        self.source, self.meta, self.received = source, meta, received
        self.tables, self.summary = tables, tables.summary

    @property
    def kinds(self):
        return self._dataframe("kinds")

    def __repr__(self) -> str:
        return f"<HeaderInspection {self.source}: {self.summary['tensors']} tensors, {self.summary['numel']:,} values>"


def inspect_headers(source, weights: str = "DEFAULT", *, no_download: bool = False, cache=None) -> HeaderInspection:
    """What :func:`inspect` would list, from the headers alone: a remote safetensors model costs a few
    range requests, whatever its size."""
    options = LoadOptions(weights=weights, no_download=no_download,
                          cache=str(Path(cache).expanduser()) if cache else None)
    with open_source(str(source), options) as src:
        tables = header_tables(src.records())
        meta = dict(src.meta)
        received = src.network.received if src.network is not None else None
    return HeaderInspection(str(source), tables, meta, received)


__all__ = [
    "inspect", "Inspection", "inspect_headers", "HeaderInspection", "analyze_records", "table_rows", "ProgressFn", "ReducerFactory", "RowFunction",
    "TABLE_REDUCERS", "TABLE_ROW_FUNCTIONS",
]
