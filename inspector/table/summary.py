"""The model summary: totals, the headline negative fraction, per kind, extreme layers, findings."""

from __future__ import annotations

import math

import pandas as pd

from .findings import alpha_findings, dead_relu_findings, dead_relu_layers, layer_outliers, tensor_findings
from .layers import counter_rows, pooled
from .schema import counted

SUMMARY_TOP = 3  # most / least negative layers listed in the summary (and shown by every report)


def build_summary(tensors: pd.DataFrame, layers: pd.DataFrame, meta: dict) -> dict:
    """The whole summary of one source: :func:`summarize`, the dead-ReLU layers and every finding
    (the loader's, in ``meta["findings"]``, then those read off the tables)."""
    summary = summarize(tensors, layers, meta)
    summary["dead_relu_layers"] = dead_relu_layers(tensors)
    summary["findings"] = list(meta.get("findings", [])) + tensor_findings(tensors)
    summary["findings"] += dead_relu_findings(summary["dead_relu_layers"])
    summary["findings"] += layer_outliers(layers, tensors)
    summary["findings"] += alpha_findings(tensors)
    if "alpha" in tensors:
        summary["spectral"] = spectral_summary(tensors)
    return summary


SPECTRAL_MEANS = ("log_norm", "alpha", "alpha_weighted", "log_spectral_norm", "stable_rank", "mp_softrank")


def spectral_summary(tensors: pd.DataFrame) -> dict:
    """Means of WeightWatcher's summary metrics over the analysed weights (as its get_summary), and
    how many weights have alpha < 2 and > 6."""
    df = tensors[tensors["spectral_method"].notna() & tensors["tied_to"].isna()]
    alpha = df["alpha"].astype("float64")
    out = {"weights": int(len(df))}
    out.update({f"mean_{c}": float(df[c].astype("float64").mean()) for c in SPECTRAL_MEANS})
    out["alpha_below_2"] = int((alpha < 2).sum())
    out["alpha_above_6"] = int((alpha > 6).sum())
    return out


def summarize(tensors: pd.DataFrame, layers: pd.DataFrame, meta: dict) -> dict:
    """The model summary: totals, the headline negative fraction, per kind, extreme layers."""
    df = counted(tensors)
    learned = df[df["kind"] != "buffer"]
    weights = pooled(df[df["kind"] == "weight"])
    summary = {
        "source": meta.get("source"),
        "format": meta.get("format"),
        "order": meta.get("order", "file"),
        "trained": meta.get("trained"),
        "tensors": int(len(tensors)),
        "numel": int(df["numel"].sum()),
        "learned_numel": int(learned["numel"].sum()),
        "buffer_numel": int(df.loc[df["kind"] == "buffer", "numel"].sum()),
        "weight_numel": weights["numel"],
        "weight_neg_frac": weights["neg_frac"],
        "weight_zero_frac": weights["zero_frac"],
        "weight_pos_frac": weights["pos_frac"],
        "learned_neg_frac": pooled(learned)["neg_frac"],
        "by_kind": {kind: {"tensors": len(sub), **pooled(sub)} for kind, sub in df.groupby("kind", sort=False)},
        **extreme_layers(layers),
        "nan_count": int(df["nan_count"].sum()),
        "inf_count": int(df["inf_count"].sum()),
        "dtypes": {str(k): int(v) for k, v in df.groupby("dtype", sort=False)["numel"].sum().items()},
        "counters": list(df.loc[counter_rows(df), "name"]),
        "tied_tensors": [
            {"name": r.name, "tied_to": r.tied_to} for r in tensors[tensors["tied_to"].notna()].itertuples()
        ],
        "notes": list(meta.get("notes", [])),
    }
    summary.update({key: meta[key] for key in SOURCE_KEYS if key in meta})
    if meta.get("quantized_dtypes") is not None:
        summary["quantization"] = quantization(df, meta["quantized_dtypes"])
    return summary


def quantization(df: pd.DataFrame, quantized_dtypes) -> dict:
    """The quantized types of a source, their values, and the fraction of those values that are exactly zero
    (the mix of all types is the summary's ``dtypes``)."""
    q = df[df["dtype"].isin(list(quantized_dtypes))]
    n = int(q["numel"].sum())
    return {"quantized_dtypes": list(quantized_dtypes), "quantized_numel": n,
            "quantized_zero_frac": float(q["zero_count"].sum() / n) if n else math.nan}


# what a loader knows about its source, copied into the summary when present
SOURCE_KEYS = ("model", "weights", "nested_key", "keras_version", "backend", "metadata", "gguf")


def extreme_layers(layers: pd.DataFrame) -> dict:
    """The SUMMARY_TOP most and least negative layers by weight negative fraction; with fewer than
    2 x SUMMARY_TOP layers, half of them each (the middle one of an odd count in neither), so that
    no layer is in both lists."""
    ranked = layers[layers["weight_numel"] > 0].sort_values("weight_neg_frac", ascending=False, kind="stable")
    top = [
        {"layer": r.layer, "weight_neg_frac": float(r.weight_neg_frac), "weight_numel": int(r.weight_numel)}
        for r in ranked.itertuples()
    ]
    n = min(SUMMARY_TOP, len(top) // 2)
    return {"most_negative_layers": top[:n], "least_negative_layers": top[::-1][:n]}
