"""The tables' schema: column orders defined once, and the tensor table built from rows.

Column orders here are the contract of the CSV/JSON outputs; exporters only read them.
"""

from __future__ import annotations

import pandas as pd

from ..analysis.spectral import SPECTRAL_COLUMNS
from ..analysis.significance import wilson_interval
from ..analysis.stats import PERCENTILES

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


def tensor_frame(rows: list[dict], extra: list[str] | None = None) -> pd.DataFrame:
    """The tensor table; the spectral columns (analysis/spectral.py) follow when a row has them."""
    more = TENSOR_EXTRA_COLUMNS + TENSOR_ANALYSIS_COLUMNS
    spectral = any("spectral_method" in r for r in rows)
    if spectral:
        more = more + SPECTRAL_COLUMNS
    cols = TENSOR_COLUMNS + more + [c for c in (extra or []) if c not in more]
    df = pd.DataFrame(rows, columns=cols)
    for c in ("numel", "neg_count", "zero_count", "pos_count", "nan_count", "inf_count", "finite_count", "ndim"):
        df[c] = df[c].astype("int64")
    df["out_axis"] = df["out_axis"].astype("Int64")
    df["neg_frac_lo"], df["neg_frac_hi"] = wilson_interval(df["neg_count"].to_numpy(), df["numel"].to_numpy())
    for c in TENSOR_ANALYSIS_COLUMNS:  # counts stay integers when some rows leave them empty
        df[c] = df[c].astype("Int64" if c in ("units", "all_nonpos_units", "dead_relu_candidates", "fan_in",
                                              "fan_out") else "float64")
    if spectral:
        for c in SPECTRAL_COLUMNS[1:]:
            df[c] = df[c].astype("float64")
            if c in SPECTRAL_COUNTS:
                df[c] = df[c].astype("Int64")
    return df


def counted(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that count towards totals: a tensor tied to an earlier one is counted once."""
    return df[df["tied_to"].isna()]
