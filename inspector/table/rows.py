"""Rows of the tensor table: the record stream reduced, one row per tensor, in record order."""

from __future__ import annotations

from typing import Callable

from ..analysis.init_baseline import baseline_columns
from ..analysis.parallel import analyze_stream
from ..analysis.spectral import SPECTRUM_KEY, spectral_reducer
from ..analysis.stats import CHUNK_ELEMS
from ..analysis.units import UNIT_ROW_KEYS, bias_signs, resolve_dead_relu, unit_signs
from ..names import shape_str
from ..records import TensorRecord
from .frame import ColumnBlock, Frame
from .schema import finish_tensor_frame, tensor_columns

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
    rows=None,
):
    """Stats rows and histograms for a stream of records (tied tensors are not read twice).

    Tensors are reduced by ``workers`` workers (default: one per CPU; see analysis.parallel);
    rows, histograms and ``progress`` calls come in record order, the same whatever ``workers``.
    ``rows``: where the rows go (``append``, and ``rows[i]`` for the row of the i-th record); a list
    by default, or a :class:`RowBlocks`.
    """
    rows = [] if rows is None else rows
    hists, at, submitted = {}, {}, set()
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


PRIVATE_ROW_KEYS = (*UNIT_ROW_KEYS, SPECTRUM_KEY)  # what reducers leave in a row for the table stage


class RowBlocks:
    """Rows kept as table columns, a block of ``block`` rows at a time: a row's dict (about 1.5 KB for the
    tensor table's 45 columns) lives only until its block is full, a row of columns costs about 0.4 KB.
    Private keys (PRIVATE_ROW_KEYS: the per-unit masks, the spectra) are kept aside, per row that has them."""

    def __init__(self, columns: list[str], block: int = 4096):
        self.columns, self.block = columns, block
        self.blocks: list = []
        self.pending: list[dict] = []
        self.private: dict[int, dict] = {}
        self.length = 0
        self.spectral = False  # whether a row has the spectral columns

    def append(self, row: dict) -> None:
        self.spectral = self.spectral or "spectral_method" in row
        private = {k: row.pop(k) for k in PRIVATE_ROW_KEYS if k in row}
        if private:
            self.private[self.length] = {**private, "name": row["name"], "layer": row["layer"],
                                         "tied_to": row.get("tied_to")}
        self.pending.append(row)
        self.length += 1
        if len(self.pending) >= self.block:
            self.blocks.append(ColumnBlock.from_rows(self.pending, self.columns))
            self.pending = []

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        done = len(self.blocks) * self.block
        row = self.pending[i - done] if i >= done else self.blocks[i // self.block].row(i % self.block)
        return {**row, **{k: v for k, v in self.private.get(i, {}).items() if k in PRIVATE_ROW_KEYS}}

    def frame(self) -> Frame:
        """Every row as one table (rows with no key of a column hold NaN there, as pandas would have it)."""
        blocks = self.blocks + ([ColumnBlock.from_rows(self.pending, self.columns)] if self.pending else [])
        self.blocks, self.pending = [], []
        return ColumnBlock.concat(blocks, self.columns)


def table_frame(records, chunk_elems: int = CHUNK_ELEMS, progress: ProgressFn | None = None, spectral: bool = False,
                workers: int | None = None, block: int = 4096):
    """(the tensor table as a Frame, histograms, spectra): what :func:`table_rows` computes, with the rows
    kept as columns as they come (:class:`RowBlocks`), so that a source of a million tensors never holds a
    million dicts."""
    reducers = TABLE_REDUCERS + ((spectral_reducer,) if spectral else ())
    blocks = RowBlocks(tensor_columns(spectral), block)
    _, hists = analyze_records(records, chunk_elems, progress, reducers, TABLE_ROW_FUNCTIONS, workers, blocks)
    private = [{"row": i, **p} for i, p in blocks.private.items()]
    frame = blocks.frame()
    if spectral and not blocks.spectral:  # no tensor was analysed: no spectral columns, as tensor_frame
        frame = frame.select(tensor_columns())
    frame = finish_tensor_frame(frame, blocks.spectral)
    resolve_dead_relu(private)
    resolved = [p for p in private if "dead_relu_candidates" in p]
    if resolved:
        dead = frame["dead_relu_candidates"].copy()
        dead[[p["row"] for p in resolved]] = [p["dead_relu_candidates"] for p in resolved]
        frame.set("dead_relu_candidates", dead, "Int64")
    spectra = {p["name"]: p[SPECTRUM_KEY] for p in private if SPECTRUM_KEY in p and not p["tied_to"]}
    return frame, hists, spectra


def pop_spectra(rows: list[dict]) -> dict:
    """{tensor name: spectrum} of the rows with spectral columns, taken out of the rows (for the plots)."""
    spectra = {}
    for row in rows:
        spectrum = row.pop(SPECTRUM_KEY, None)
        if spectrum is not None and not row.get("tied_to"):
            spectra[row["name"]] = spectrum
    return spectra
