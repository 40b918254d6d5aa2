"""The model summary: totals, the headline negative fraction, per kind, extreme layers, findings."""

from __future__ import annotations

import math

import numpy as np

from .findings import alpha_findings, dead_relu_findings, dead_relu_layers, layer_outliers, tensor_findings
from .frame import Frame, descending, first_seen, group_sum, isnull
from .layers import counter_rows, pooled
from .schema import counted

SUMMARY_TOP = 3  # most / least negative layers listed in the summary (and shown by every report)


def build_summary(tensors: Frame, layers: Frame, meta: dict) -> dict:
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


def spectral_summary(tensors: Frame) -> dict:
    """Means of WeightWatcher's summary metrics over the analysed weights (as its get_summary), and
    how many weights have alpha < 2 and > 6."""
    df = tensors[~isnull(tensors["spectral_method"]) & isnull(tensors["tied_to"])]
    alpha = df["alpha"]
    out = {"weights": int(len(df))}
    out.update({f"mean_{c}": _nanmean(df[c]) for c in SPECTRAL_MEANS})
    out["alpha_below_2"] = int((alpha < 2).sum())
    out["alpha_above_6"] = int((alpha > 6).sum())
    return out


def _nanmean(values: np.ndarray) -> float:
    """The mean of the values that are not NaN (NaN when none is), as pandas' ``mean``."""
    values = values.astype(np.float64)
    ok = ~np.isnan(values)
    return float(values[ok].mean()) if ok.any() else math.nan


def summarize(tensors: Frame, layers: Frame, meta: dict) -> dict:
    """The model summary: totals, the headline negative fraction, per kind, extreme layers."""
    df = counted(tensors)
    kind = df["kind"]
    learned = df[kind != "buffer"]
    weights = pooled(df[kind == "weight"])
    tied = ~isnull(tensors["tied_to"])
    summary = {
        "source": meta.get("source"),
        "format": meta.get("format"),
        "order": meta.get("order", "file"),
        "trained": meta.get("trained"),
        "tensors": int(len(tensors)),
        "numel": int(df["numel"].sum()),
        "learned_numel": int(learned["numel"].sum()),
        "buffer_numel": int(df["numel"][kind == "buffer"].sum()),
        "weight_numel": weights["numel"],
        "weight_neg_frac": weights["neg_frac"],
        "weight_zero_frac": weights["zero_frac"],
        "weight_pos_frac": weights["pos_frac"],
        "learned_neg_frac": pooled(learned)["neg_frac"],
        "by_kind": by_kind(df),
        **extreme_layers(layers),
        "nan_count": int(df["nan_count"].sum()),
        "inf_count": int(df["inf_count"].sum()),
        "dtypes": numel_by(df, "dtype"),
        "counters": list(df["name"][counter_rows(df)]),
        "tied_tensors": [{"name": n, "tied_to": t} for n, t in zip(tensors["name"][tied], tensors["tied_to"][tied])],
        "notes": list(meta.get("notes", [])),
    }
    summary.update({key: meta[key] for key in SOURCE_KEYS if key in meta})
    if meta.get("quantized_dtypes") is not None:
        summary["quantization"] = quantization(df, meta["quantized_dtypes"])
    return summary


def by_kind(df: Frame) -> dict:
    """Per kind, in order of first appearance: tensors and the pooled figures."""
    kinds, codes = first_seen(df["kind"])
    return {k: {"tensors": int((codes == i).sum()), **pooled(df[codes == i])} for i, k in enumerate(kinds)}


def numel_by(df: Frame, column: str) -> dict:
    """{value of ``column``: values}, in order of first appearance."""
    keys, codes = first_seen(df[column])
    return {str(k): int(v) for k, v in zip(keys, group_sum(codes, len(keys), df["numel"]))}


def quantization(df: Frame, quantized_dtypes) -> dict:
    """The quantized types of a source, their values, and the fraction of those values that are exactly zero
    (the mix of all types is the summary's ``dtypes``)."""
    wanted = set(quantized_dtypes)
    q = df[np.fromiter((d in wanted for d in df["dtype"]), bool, len(df))]
    n = int(q["numel"].sum())
    return {"quantized_dtypes": list(quantized_dtypes), "quantized_numel": n,
            "quantized_zero_frac": float(q["zero_count"].sum() / n) if n else math.nan}


# what a loader knows about its source, copied into the summary when present
SOURCE_KEYS = ("model", "weights", "nested_key", "keras_version", "backend", "metadata", "gguf")


def extreme_layers(layers: Frame) -> dict:
    """The SUMMARY_TOP most and least negative layers by weight negative fraction; with fewer than
    2 x SUMMARY_TOP layers, half of them each (the middle one of an odd count in neither), so that
    no layer is in both lists."""
    ranked = layers[layers["weight_numel"] > 0]
    frac = ranked["weight_neg_frac"]
    top = [
        {"layer": ranked["layer"][i], "weight_neg_frac": float(frac[i]), "weight_numel": int(ranked["weight_numel"][i])}
        for i in descending(frac).tolist()
    ]
    n = min(SUMMARY_TOP, len(top) // 2)
    return {"most_negative_layers": top[:n], "least_negative_layers": top[::-1][:n]}
