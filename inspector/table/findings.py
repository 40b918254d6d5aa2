"""Findings: facts about a checkpoint that a user auditing it should see, from the tables."""

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


def dead_relu_layers(tensors: pd.DataFrame) -> list[dict]:
    """The weight tensors with dead-ReLU candidates, in network order."""
    if "dead_relu_candidates" not in tensors:
        return []
    hit = tensors[tensors["dead_relu_candidates"].fillna(0) > 0]
    return [
        {"layer": r.layer, "tensor": r.name, "dead_relu_candidates": int(r.dead_relu_candidates), "units": int(r.units)}
        for r in hit.itertuples()
    ]


def dead_relu_findings(layers: list[dict]) -> list[dict]:
    return [
        {
            "type": "dead_relu",
            "tensor": x["tensor"],
            "detail": f"{x['dead_relu_candidates']} of {x['units']} units have no positive weight and no positive "
            "bias: a ReLU after them never opens on non-negative inputs",
        }
        for x in layers
    ]


OUTLIER_Z = 3.5  # robust z-score beyond which a layer is reported (Iglewicz and Hoaglin's cut-off)
OUTLIER_MIN_LAYERS = 5  # a kind needs at least this many layers to have a "rest"
OUTLIER_MIN_NEG_GAP = 0.05  # ... and a layer must differ by at least 5 percentage points
OUTLIER_MIN_RATIO = 10.0  # ... or by an order of magnitude in abs mean


def robust_z(values: np.ndarray) -> np.ndarray:
    """0.6745 (x - median) / MAD; the mean absolute deviation (scaled) stands in when MAD is 0."""
    med = np.median(values)
    dev = np.abs(values - med)
    mad = np.median(dev)
    if mad > 0:
        return 0.6745 * (values - med) / mad
    mean_ad = dev.mean()
    return (values - med) / (1.2533 * mean_ad) if mean_ad > 0 else np.zeros_like(values)


def _layer_groups(layers: pd.DataFrame, tensors: pd.DataFrame) -> pd.DataFrame:
    """Layers with weights, each with its kind: module type, else the weight's rank ("2-d weight")."""
    w = tensors[(tensors["kind"] == "weight") & tensors["tied_to"].isna()].drop_duplicates("layer")
    rank = w["shape"].map(lambda s: 0 if s == "scalar" else s.count("x") + 1)
    group = [m if isinstance(m, str) else f"{r}-d weight" for m, r in zip(w["module_type"], rank)]
    info = pd.DataFrame({"layer": w["layer"], "group": group})
    return layers[layers["weight_numel"] > 0].merge(info, on="layer", how="inner")


def layer_outliers(layers: pd.DataFrame, tensors: pd.DataFrame, z: float = OUTLIER_Z) -> list[dict]:
    """Layers whose weight statistics are far from the rest of their kind.

    Within each kind of layer (module type, or the weight's rank when unknown)
    with at least OUTLIER_MIN_LAYERS layers, two statistics get a robust z-score:
    the negative fraction of the weights and log10 of their abs mean.
    A layer is reported when |z| > ``z`` and the difference matters: a negative
    fraction at least OUTLIER_MIN_NEG_GAP from the median and three binomial
    standard errors (0.5 / sqrt(n), so small layers are not reported for noise);
    an abs mean at least a factor OUTLIER_MIN_RATIO from the median (layers of
    one kind differ by a few times through their fan-in or fan-out alone).
    """
    df = _layer_groups(layers, tensors)
    if df.empty:  # no weights at all (an empty checkpoint): nothing to compare
        return []
    df = df[np.isfinite(df["weight_abs_mean"]) & (df["weight_abs_mean"] > 0)]
    out = []
    for group, sub in df.groupby("group", sort=False):
        if len(sub) < OUTLIER_MIN_LAYERS:
            continue
        neg = sub["weight_neg_frac"].to_numpy(dtype=float)
        mag = np.log10(sub["weight_abs_mean"].to_numpy(dtype=float))
        z_neg, z_mag = robust_z(neg), robust_z(mag)
        gap = np.abs(neg - np.median(neg))
        noise = 3 * 0.5 / np.sqrt(sub["weight_numel"].to_numpy(dtype=float))
        far_neg = (np.abs(z_neg) > z) & (gap >= OUTLIER_MIN_NEG_GAP) & (gap > noise)
        far_mag = (np.abs(z_mag) > z) & (np.abs(mag - np.median(mag)) >= np.log10(OUTLIER_MIN_RATIO))
        for i, r in enumerate(sub.itertuples()):
            if far_neg[i]:
                out.append(_outlier(r.layer, group, len(sub), "negative fraction",
                                    f"{neg[i]:.1%} vs median {np.median(neg):.1%}", z_neg[i]))
            if far_mag[i]:
                ratio = 10 ** (mag[i] - np.median(mag))
                out.append(_outlier(r.layer, group, len(sub), "weight magnitude",
                                    f"abs mean {ratio:.3g} times the median", z_mag[i]))
    return out


def _outlier(layer: str, group: str, n: int, what: str, how: str, score: float) -> dict:
    detail = f"{what} far from the other {n - 1} {group} layers: {how} (robust z {score:+.1f})"
    return {"type": "outlier", "layer": layer, "statistic": what, "z": float(score), "detail": detail}


# Every finding type, with what it means. Loaders and analyses add findings of these types to
# ``meta["findings"]``; ``winspect audit --fail-on`` accepts exactly these names.
FINDING_TYPES = {
    "nan": "NaN values in a tensor",
    "inf": "infinite values in a tensor",
    "zero": "a learned tensor whose values are all zero",
    "tied": "a tensor sharing storage with another",
    "dead_relu": "units that never activate (dead-ReLU candidates)",
    "outlier": "a layer whose weight statistics are far from the other layers of its kind",
    "lambda": "a Keras Lambda layer (code that runs when the model is loaded)",
    "custom_object": "a Keras layer or object of a custom class",
    "unsafe": "a pickle that imports code (refused; nothing was executed)",
}
DEFAULT_FAIL_ON = ("nan", "inf", "unsafe")


def unsafe_findings(scan) -> list[dict]:
    """One ``unsafe`` finding per dangerous or unknown global of a refused pickle's scan."""
    from ..safety.pickle_scan import classify

    return [
        {"type": "unsafe", "global": g, "class": classify(g), "detail": f"pickle imports {classify(g)} global {g}"}
        for g in scan.unsafe
    ]
