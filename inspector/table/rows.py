"""Rows of the tensor table: the record stream reduced, one row per tensor, in record order."""

from __future__ import annotations

from typing import Callable

from ..analysis.init_baseline import baseline_columns
from ..analysis.parallel import analyze_stream
from ..analysis.spectral import SPECTRUM_KEY, spectral_reducer
from ..analysis.stats import CHUNK_ELEMS
from ..analysis.units import bias_signs, resolve_dead_relu, unit_signs
from ..names import shape_str
from ..records import TensorRecord

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
    rows, hists, at, submitted = [], {}, {}, set()
    empty_hists: dict = {}

    def tied(rec) -> bool:
        known = bool(rec.tied_to) and rec.tied_to in submitted
        submitted.add(rec.name)
        return known

    on_part = getattr(progress, "part_done", None)
    for rec, stats in analyze_stream(records, chunk_elems, reducer_factories, workers, skip=tied, on_part=on_part):
        if stats is None:  # the same values as the tensor it is tied to
            hist = hists[rec.tied_to]
            stats = {k: v for k, v in rows[at[rec.tied_to]].items() if k not in RECORD_KEYS}
        else:
            for fn in row_functions:
                stats.update(fn(rec, stats))
            hist = shared_if_empty((stats.pop("hist_edges"), stats.pop("hist_counts")), empty_hists)
        at[rec.name] = len(rows)
        hists[rec.name] = hist
        rows.append(record_row(rec, stats))
        if progress:
            progress(rec)
    return rows, hists


def shared_if_empty(hist: tuple, seen: dict) -> tuple:
    """A histogram with no value counted, as one read-only pair shared by every tensor with the same
    edges (a source of a million empty tensors keeps one, not a million)."""
    edges, counts = hist
    if counts.any():
        return hist
    key = (edges.tobytes(), counts.dtype.str, len(counts))
    if key not in seen:
        edges, counts = edges.copy(), counts.copy()
        edges.flags.writeable = counts.flags.writeable = False
        seen[key] = (edges, counts)
    return seen[key]


# the row keys that come from the record, not from its values
RECORD_KEYS = frozenset(("name", "layer", "kind", "dtype", "shape", "out_axis", "module_type", "tied_to", "ndim"))


def record_row(rec: TensorRecord, stats: dict) -> dict:
    """One row of the tensor table: the record's metadata around its statistics."""
    stats.pop("sum_sq", None)
    return {
        "name": rec.name, "layer": rec.layer, "kind": rec.kind, "dtype": rec.dtype, "shape": shape_str(rec.shape),
        **stats,
        "out_axis": rec.out_axis, "module_type": rec.module_type, "tied_to": rec.tied_to, "ndim": len(rec.shape),
    }


def table_rows(records, chunk_elems: int = CHUNK_ELEMS, progress: ProgressFn | None = None, spectral: bool = False,
               workers: int | None = None):
    """Rows of the tensor table: core statistics, per-unit signs and the init baseline, one pass;
    with ``spectral``, the spectral columns too (their spectra stay in the rows: see pop_spectra).
    ``workers``: see analyze_records."""
    reducers = TABLE_REDUCERS + ((spectral_reducer,) if spectral else ())
    rows, hists = analyze_records(records, chunk_elems, progress, reducers, TABLE_ROW_FUNCTIONS, workers)
    resolve_dead_relu(rows)
    return rows, hists


def pop_spectra(rows: list[dict]) -> dict:
    """{tensor name: spectrum} of the rows with spectral columns, taken out of the rows (for the plots)."""
    spectra = {}
    for row in rows:
        spectrum = row.pop(SPECTRUM_KEY, None)
        if spectrum is not None and not row.get("tied_to"):
            spectra[row["name"]] = spectrum
    return spectra
