"""Findings: facts about a checkpoint that a user auditing it should see."""

from __future__ import annotations

import numpy as np
import pandas as pd


def tensor_findings(tensors: pd.DataFrame) -> list[dict]:
    """NaN/Inf values, all-zero tensors and tied tensors, from the tensor table."""
    out = []
    for r in tensors.itertuples():
        if r.nan_count:
            out.append({"type": "nan", "tensor": r.name, "detail": f"{r.nan_count} NaN values"})
        if r.inf_count:
            out.append({"type": "inf", "tensor": r.name, "detail": f"{r.inf_count} infinite values"})
        if r.numel > 0 and r.zero_count == r.numel and r.kind != "buffer":
            out.append({"type": "zero", "tensor": r.name, "detail": "every value is zero"})
        if isinstance(r.tied_to, str):
            out.append({"type": "tied", "tensor": r.name, "detail": f"shares storage with {r.tied_to}"})
    return out


OUTLIER_Z = 3.5  # robust z-score beyond which a layer is reported (Iglewicz and Hoaglin's cut-off)
OUTLIER_MIN_LAYERS = 5  # a kind needs at least this many layers to have a "rest"


def robust_z(values: np.ndarray) -> np.ndarray:
    """0.6745 (x - median) / MAD; the mean absolute deviation (scaled) stands in when MAD is 0."""
    med = np.median(values)
    dev = np.abs(values - med)
    mad = np.median(dev)
    if mad > 0:
        return 0.6745 * (values - med) / mad
    mean_ad = dev.mean()
    return (values - med) / (1.2533 * mean_ad) if mean_ad > 0 else np.zeros_like(values)


def _layer_kinds(layers: pd.DataFrame, tensors: pd.DataFrame) -> pd.DataFrame:
    """Per layer with weights: its kind (module type, else the weights' rank) and fan-in."""
    w = tensors[(tensors["kind"] == "weight") & tensors["tied_to"].isna()].drop_duplicates("layer")
    dims = w["shape"].map(lambda s: [int(d) for d in s.split("x")] if s != "scalar" else [])
    kind = [m if isinstance(m, str) else f"{len(d)}-d weight" for m, d in zip(w["module_type"], dims)]
    units = [d[a] if a is not pd.NA and a is not None and d else 1 for d, a in zip(dims, w["out_axis"])]
    info = pd.DataFrame({"layer": w["layer"], "group": kind, "units": units})
    df = layers[layers["weight_numel"] > 0].merge(info, on="layer", how="inner")
    df["fan_in"] = df["weight_numel"] / df["units"].clip(lower=1)
    return df


def layer_outliers(layers: pd.DataFrame, tensors: pd.DataFrame, z: float = OUTLIER_Z) -> list[dict]:
    """Layers whose weight statistics are far from the rest of their kind.

    Within each kind of layer (module type, or the weight's rank when unknown)
    with at least OUTLIER_MIN_LAYERS layers, two statistics get a robust z-score:
    the negative fraction of the weights, and log10(abs mean * sqrt(fan-in)),
    the magnitude relative to the usual 1/sqrt(fan-in) scale of initialisation.
    A layer is reported when |z| > ``z``; for the negative fraction the gap to
    the median must also exceed three binomial standard errors (0.5 / sqrt(n)),
    so small layers are not reported for noise.
    """
    df = _layer_kinds(layers, tensors)
    df = df[np.isfinite(df["weight_abs_mean"]) & (df["weight_abs_mean"] > 0)]
    out = []
    for group, sub in df.groupby("group", sort=False):
        if len(sub) < OUTLIER_MIN_LAYERS:
            continue
        neg = sub["weight_neg_frac"].to_numpy(dtype=float)
        mag = np.log10(sub["weight_abs_mean"].to_numpy(dtype=float) * np.sqrt(sub["fan_in"].to_numpy(dtype=float)))
        z_neg, z_mag = robust_z(neg), robust_z(mag)
        noise = 3 * 0.5 / np.sqrt(sub["weight_numel"].to_numpy(dtype=float))
        far_neg = (np.abs(z_neg) > z) & (np.abs(neg - np.median(neg)) > noise)
        for i, r in enumerate(sub.itertuples()):
            if far_neg[i]:
                out.append(_outlier(r.layer, group, len(sub), "negative fraction",
                                    f"{neg[i]:.1%} vs median {np.median(neg):.1%}", z_neg[i]))
            if abs(z_mag[i]) > z:
                ratio = 10 ** (mag[i] - np.median(mag))
                out.append(_outlier(r.layer, group, len(sub), "weight magnitude",
                                    f"abs mean x{ratio:.3g} the median (scaled by sqrt(fan-in))", z_mag[i]))
    return out


def _outlier(layer: str, group: str, n: int, what: str, how: str, score: float) -> dict:
    detail = f"{what} far from the other {n - 1} {group} layers: {how} (robust z {score:+.1f})"
    return {"type": "outlier", "layer": layer, "statistic": what, "z": float(score), "detail": detail}
