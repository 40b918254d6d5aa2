"""The tables' schema: column orders defined once, and the tensor table built from rows.

Column orders here are the contract of the CSV/JSON outputs; exporters only read them.
"""

from __future__ import annotations

import numpy as np

from ..analysis.spectral import SPECTRAL_COLUMNS
from ..analysis.significance import wilson_interval
from ..analysis.stats import PERCENTILES
from .frame import Frame, isnull

TENSOR_COLUMNS = [
    "name", "layer", "kind", "dtype", "shape", "numel",
    "neg_count", "zero_count", "pos_count", "neg_frac", "zero_frac", "pos_frac",
    "mean", "std", "min", "max", "abs_mean", "l2_norm", "nan_count", "inf_count",
    *[f"p{q:02d}" for q in PERCENTILES],
]
# more columns follow the required ones, in this order
TENSOR_EXTRA_COLUMNS = ["finite_count", "out_axis", "module_type", "tied_to", "neg_frac_lo", "neg_frac_hi", "ndim"]
# per-unit sign structure (analysis/units.py) and initialisation baseline (analysis/init_baseline.py);
# empty for tensors they do not apply to
TENSOR_ANALYSIS_COLUMNS = [
    "units", "all_nonpos_units", "dead_relu_candidates", "unit_neg_frac_min", "unit_neg_frac_max",
    "fan_in", "fan_out", "std_vs_kaiming_uniform", "std_vs_kaiming_normal", "std_vs_xavier",
]

LAYER_COLUMNS = [
    "layer", "tensors", "numel", "neg_count", "zero_count", "pos_count", "neg_frac", "zero_frac", "pos_frac",
    "learned_numel", "buffer_numel",
    "weight_numel", "weight_neg_frac", "weight_zero_frac", "weight_pos_frac",
    "weight_abs_mean", "weight_std", "weight_l2_norm", "nan_count", "inf_count",
    "neg_frac_lo", "neg_frac_hi", "weight_neg_frac_lo", "weight_neg_frac_hi",
]
# neg_frac_lo / neg_frac_hi: the 95 % Wilson interval of a negative fraction (analysis/significance.py)

SPECTRAL_COUNTS = ("num_evals", "num_pl_spikes", "num_spikes")


INTEGER_COLUMNS = ("numel", "neg_count", "zero_count", "pos_count", "nan_count", "inf_count", "finite_count", "ndim")
NULLABLE_INTEGER_COLUMNS = ("units", "all_nonpos_units", "dead_relu_candidates", "fan_in", "fan_out")


def tensor_columns(spectral: bool = False, extra: list[str] | None = None) -> list[str]:
    """The tensor table's columns; the spectral columns (analysis/spectral.py) with ``spectral``."""
    more = TENSOR_EXTRA_COLUMNS + TENSOR_ANALYSIS_COLUMNS + (SPECTRAL_COLUMNS if spectral else [])
    return TENSOR_COLUMNS + more + [c for c in (extra or []) if c not in more]


def tensor_frame(rows: list[dict], extra: list[str] | None = None) -> Frame:
    """The tensor table; the spectral columns (analysis/spectral.py) follow when a row has them."""
    spectral = any("spectral_method" in r for r in rows)
    return finish_tensor_frame(Frame.from_rows(rows, tensor_columns(spectral, extra)), spectral)


def finish_tensor_frame(df: Frame, spectral: bool) -> Frame:
    """The tensor table's column types, and the Wilson interval of each negative fraction."""
    for c in INTEGER_COLUMNS:
        df.cast(c, "int64")
    df.cast("out_axis", "Int64")
    low, high = wilson_interval(df["neg_count"], df["numel"])
    df.set("neg_frac_lo", low, "float64")
    df.set("neg_frac_hi", high, "float64")
    for c in TENSOR_ANALYSIS_COLUMNS:  # counts stay integers when some rows leave them empty
        df.cast(c, "Int64" if c in NULLABLE_INTEGER_COLUMNS else "float64")
    if spectral:
        for c in SPECTRAL_COLUMNS[1:]:
            df.cast(c, "Int64" if c in SPECTRAL_COUNTS else "float64")
    return df


def counted(df):
    """Rows that count towards totals: a tensor tied to an earlier one is counted once (a Frame or a
    DataFrame, as given)."""
    return df[isnull(np.asarray(df["tied_to"], dtype=object))]
