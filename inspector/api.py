"""The public Python API: ``inspect(source) -> Inspection``.

Chains loader -> analyzer -> tables, one tensor at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from .analysis.findings import layer_outliers, tensor_findings
from .analysis.init_baseline import baseline_columns
from .analysis.parallel import analyze_stream
from .analysis.stats import CHUNK_ELEMS
from .analysis.units import bias_signs, dead_relu_findings, dead_relu_layers, resolve_dead_relu, unit_signs
from .loaders import LoadOptions, open_source
from .records import TensorRecord
from .report.export import write_csv, write_json
from .report.table import layer_frame, shape_str, summarize, tensor_frame

# Called with each record once its row is done, in order. Optional methods: ``begin(tensors, nbytes)``
# with the source's totals when known, ``part_done(record, elems)`` as parts of large tensors finish.
ProgressFn = Callable[[TensorRecord], None]
# A reducer factory looks at a record and returns a reducer for it (or None): see analysis.stats.analyze.
ReducerFactory = Callable[[TensorRecord], object]
# A row function adds columns computed from a record and its finished statistics.
RowFunction = Callable[[TensorRecord, dict], dict]
# The tensor table's analyses beyond the core statistics (per-unit signs, init baseline).
TABLE_REDUCERS: tuple[ReducerFactory, ...] = (unit_signs, bias_signs)
TABLE_ROW_FUNCTIONS: tuple[RowFunction, ...] = (baseline_columns,)


class Inspection:
    """The result of inspecting one source.

    ``tensors``: one row per tensor (the CSV columns); ``layers``: one row per layer;
    ``summary``: totals, the headline negative fraction, per-kind figures, findings;
    ``histograms``: per tensor name, (bin edges, counts) from the pass: 64 bins symmetric about
    zero over ±max|x|, or over ±4 max(|p01|, |p99|) when outliers reach further (they count in
    the outer bins; see ``StatsAccumulator._hist_edges``).
    """

    def __init__(self, source: str, tensors: pd.DataFrame, meta: dict, histograms: dict):
        self.source = source
        self.meta = meta
        self.tensors = tensors
        self.layers = layer_frame(tensors)
        self.histograms = histograms
        self.summary = summarize(tensors, self.layers, {**meta, "source": source})
        self.summary["dead_relu_layers"] = dead_relu_layers(tensors)
        self.summary["findings"] = list(meta.get("findings", [])) + tensor_findings(tensors)
        self.summary["findings"] += dead_relu_findings(self.summary["dead_relu_layers"])
        self.summary["findings"] += layer_outliers(self.layers, tensors)

    def to_csv(self, path) -> Path:
        return write_csv(self.tensors, path)

    def to_layers_csv(self, path) -> Path:
        return write_csv(self.layers, path)

    def to_json(self, path) -> Path:
        return write_json({"source": self.source, "summary": self.summary, "tensors": self.tensors}, path)

    def plot(self, kind: str = "weight") -> list:
        """matplotlib figures: ``weight`` (whole-model distribution), ``negative``, ``magnitude``,
        ``histograms`` or ``all`` (see inspector.report.plots)."""
        from .report.plots import plots

        return [p.figure for p in plots(self, kind)]

    def to_report(self, directory, svg: bool = False) -> Path:
        """Write CSVs, summary.json, plots, report.html and report.md into ``directory``."""
        from .report.bundle import to_report

        return to_report(self, directory, svg)

    def _repr_html_(self) -> str:
        from .report.html import notebook_html

        return notebook_html(self)

    def __repr__(self) -> str:
        s = self.summary
        frac = s["weight_neg_frac"]
        head = f"{frac:.1%} of weight parameters negative" if frac == frac else "no weight parameters"
        return f"<Inspection {self.source}: {s['tensors']} tensors, {s['parameters']:,} values, {head}>"


def analyze_records(
    records,
    chunk_elems: int = CHUNK_ELEMS,
    progress: ProgressFn | None = None,
    reducer_factories: tuple[ReducerFactory, ...] = (),
    row_functions: tuple[RowFunction, ...] = (),
    workers: int | None = None,
):
    """Stats rows and histograms for a stream of records (tied tensors are not read twice).

    Tensors are reduced by ``workers`` workers (default: one per CPU; see analysis.parallel);
    rows, histograms and ``progress`` calls come in record order, the same whatever ``workers``.
    """
    rows, hists, by_name, submitted = [], {}, {}, set()

    def tied(rec) -> bool:
        known = bool(rec.tied_to) and rec.tied_to in submitted
        submitted.add(rec.name)
        return known

    on_part = getattr(progress, "part_done", None)
    for rec, stats in analyze_stream(records, chunk_elems, reducer_factories, workers, skip=tied, on_part=on_part):
        if stats is None:
            stats = dict(by_name[rec.tied_to])
        else:
            for fn in row_functions:
                stats.update(fn(rec, stats))
        by_name[rec.name] = dict(stats)
        hists[rec.name] = (stats.pop("hist_edges"), stats.pop("hist_counts"))
        stats.pop("sum_sq", None)
        rows.append({
            "name": rec.name,
            "layer": rec.layer,
            "kind": rec.kind,
            "dtype": rec.dtype,
            "shape": shape_str(rec.shape),
            **stats,
            "out_axis": rec.out_axis,
            "module_type": rec.module_type,
            "tied_to": rec.tied_to,
        })
        if progress:
            progress(rec)
    return rows, hists


def table_rows(records, chunk_elems: int = CHUNK_ELEMS, progress: ProgressFn | None = None):
    """Rows of the tensor table: core statistics, per-unit signs and the init baseline, one pass."""
    rows, hists = analyze_records(records, chunk_elems, progress, TABLE_REDUCERS, TABLE_ROW_FUNCTIONS)
    resolve_dead_relu(rows)
    return rows, hists


def inspect(
    source,
    weights: str = "DEFAULT",
    *,
    unsafe_load: bool = False,
    chunk_elems: int = CHUNK_ELEMS,
    progress: ProgressFn | None = None,
) -> Inspection:
    """Inspect a torchvision model name, a checkpoint file or a model directory."""
    with open_source(str(source), LoadOptions(weights=weights, unsafe_load=unsafe_load)) as src:
        totals = src.totals()
        if totals and hasattr(progress, "begin"):
            progress.begin(*totals)
        rows, hists = table_rows(src.records(), chunk_elems, progress)
        meta = dict(src.meta)
    return Inspection(str(source), tensor_frame(rows), meta, hists)


__all__ = ["inspect", "Inspection", "analyze_records", "table_rows"]
