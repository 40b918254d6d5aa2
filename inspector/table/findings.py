"""Findings: facts about a checkpoint that a user auditing it should see, from the tables."""

from __future__ import annotations

import numpy as np

from ..analysis.significance import holm, two_proportion_p, wilson_interval
from .frame import Frame, first_seen, isnull
from ..finding import (
    ALPHA_HIGH, ALPHA_LOW, Finding, alpha_finding, dead_relu_finding, inf_finding, nan_finding, outlier_finding,
    tied_finding, zero_finding,
)


def tensor_findings(tensors: Frame) -> list[Finding]:
    """NaN/Inf values, all-zero tensors and tied tensors, from the tensor table (its rows with a finding only)."""
    nan, inf = tensors["nan_count"], tensors["inf_count"]  # int64 columns (see schema.finish_tensor_frame)
    numel, kind = tensors["numel"], tensors["kind"]
    zero = (numel > 0) & (tensors["zero_count"] == numel) & (kind != "buffer")
    tied = np.fromiter((isinstance(t, str) for t in tensors["tied_to"]), bool, len(tensors))
    out = []
    for i in np.flatnonzero((nan > 0) | (inf > 0) | zero | tied).tolist():
        name = tensors["name"][i]
        if nan[i]:
            out.append(nan_finding(name, int(nan[i])))
        if inf[i]:
            out.append(inf_finding(name, int(inf[i])))
        if zero[i]:
            out.append(zero_finding(name, kind[i]))
        if tied[i]:
            out.append(tied_finding(name, tensors["tied_to"][i]))
    return out


def alpha_findings(tensors: Frame) -> list[Finding]:
    """Weights whose fitted alpha is below 2 or above 6 (only with the spectral columns)."""
    if "alpha" not in tensors:
        return []
    alpha = tensors["alpha"].astype(np.float64)
    hit = ((alpha < ALPHA_LOW) | (alpha > ALPHA_HIGH)) & isnull(tensors["tied_to"])
    return [alpha_finding(tensors["name"][i], float(alpha[i])) for i in np.flatnonzero(hit).tolist()]


def dead_relu_layers(tensors: Frame) -> list[dict]:
    """The weight tensors with dead-ReLU candidates, in network order."""
    if "dead_relu_candidates" not in tensors:
        return []
    dead = np.nan_to_num(tensors["dead_relu_candidates"].astype(np.float64))
    return [
        {"layer": tensors["layer"][i], "tensor": tensors["name"][i], "dead_relu_candidates": int(dead[i]),
         "units": int(tensors["units"][i])}
        for i in np.flatnonzero(dead > 0).tolist()
    ]


def dead_relu_findings(layers: list[dict]) -> list[Finding]:
    return [dead_relu_finding(x["tensor"], x["dead_relu_candidates"], x["units"]) for x in layers]


OUTLIER_Z = 3.5  # robust z-score beyond which a layer is reported (Iglewicz and Hoaglin's cut-off)
OUTLIER_MIN_LAYERS = 5  # a kind needs at least this many layers to have a "rest"
OUTLIER_MIN_NEG_GAP = 0.05  # ... and a layer must differ by at least 5 percentage points
OUTLIER_ALPHA = 0.05  # ... by more than sampling error: Holm-adjusted p-value below this
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


def _layer_groups(layers: Frame, tensors: Frame) -> Frame:
    """Layers with weights, each with its kind: module type, else the weight's rank ("2-d weight")."""
    w = tensors[(tensors["kind"] == "weight") & isnull(tensors["tied_to"])]
    group = {}  # the first weight tensor of each layer names its kind
    for layer, module, ndim in zip(w["layer"].tolist(), w["module_type"].tolist(), w["ndim"].tolist()):
        if layer not in group:
            group[layer] = module if isinstance(module, str) else f"{ndim}-d weight"
    layer_names = layers["layer"].tolist()
    keep = (layers["weight_numel"] > 0) & np.fromiter((x in group for x in layer_names), bool, len(layers))
    out = layers[keep]
    out.set("group", [group[x] for x in out["layer"].tolist()], "object")
    return out


def layer_outliers(layers: Frame, tensors: Frame, z: float = OUTLIER_Z) -> list[Finding]:
    """Layers whose weight statistics are far from the rest of their kind.

    Within each kind of layer (module type, or the weight's rank when unknown) with at least
    OUTLIER_MIN_LAYERS layers, two statistics get a robust z-score: the negative fraction of the
    weights and log10 of their abs mean. A layer is reported when |z| > ``z`` and the difference
    matters:

    * a negative fraction at least OUTLIER_MIN_NEG_GAP from the median, and beyond sampling error:
      a layer's fraction is a count, tested against the pooled fraction of the other layers of its
      kind (two-proportion test), with Holm's correction over every layer tested in the model
      (analysis/significance.py). Among 1000 identically initialised Linear(16, 16) layers the most
      extreme sits about 3.3 standard errors out, p ~ 0.001 before and 1.0 after the correction.
    * an abs mean at least a factor OUTLIER_MIN_RATIO from the median (layers of one kind differ
      by a few times through their fan-in or fan-out alone; sampling error is negligible here).
    """
    df = _layer_groups(layers, tensors)
    if not len(df):  # no weights at all (an empty checkpoint): nothing to compare
        return []
    df = df[np.isfinite(df["weight_abs_mean"]) & (df["weight_abs_mean"] > 0)]
    names, codes = first_seen(df["group"])
    groups = [(g, df[codes == i]) for i, g in enumerate(names)]
    groups = [(g, sub) for g, sub in groups if len(sub) >= OUTLIER_MIN_LAYERS]
    p_adj = iter(holm(np.concatenate([_neg_p_values(sub) for _, sub in groups]) if groups else np.array([])))
    tested = sum(len(sub) for _, sub in groups)
    out = []
    for group, sub in groups:
        out += _group_outliers(group, sub, [next(p_adj) for _ in range(len(sub))], tested, z)
    return out


def _neg_p_values(sub: Frame) -> np.ndarray:
    """Each layer's negative count against the pooled count of the other layers of its group."""
    n = sub["weight_numel"].astype(np.float64)
    k = np.rint(sub["weight_neg_frac"].astype(np.float64) * n)
    return two_proportion_p(k, n, k.sum() - k, n.sum() - n)


def _group_outliers(group: str, sub: Frame, p_adj: list, tested: int, z: float) -> list[Finding]:
    neg = sub["weight_neg_frac"].astype(np.float64)
    n = sub["weight_numel"].astype(np.float64)
    mag = np.log10(sub["weight_abs_mean"].astype(np.float64))
    z_neg, z_mag = robust_z(neg), robust_z(mag)
    rest = (np.rint(neg * n).sum() - np.rint(neg * n)) / (n.sum() - n)
    low, high = wilson_interval(np.rint(neg * n), n)
    far_neg = (np.abs(z_neg) > z) & (np.abs(neg - np.median(neg)) >= OUTLIER_MIN_NEG_GAP)
    far_neg &= np.asarray(p_adj) < OUTLIER_ALPHA
    far_mag = (np.abs(z_mag) > z) & (np.abs(mag - np.median(mag)) >= np.log10(OUTLIER_MIN_RATIO))
    out = []
    for i, layer in enumerate(sub["layer"].tolist()):
        if far_neg[i]:
            how = (f"{neg[i]:.1%} (95 % interval {low[i]:.1%}–{high[i]:.1%}) vs {rest[i]:.1%} in the others; "
                   f"p = {p_adj[i]:.2g} after Holm's correction for {tested} layers")
            out.append(outlier_finding(layer, group, len(sub), "negative fraction", how, z_neg[i],
                                       p_value=float(p_adj[i]), interval=[float(low[i]), float(high[i])]))
        if far_mag[i]:
            ratio = 10 ** (mag[i] - np.median(mag))
            out.append(outlier_finding(layer, group, len(sub), "weight magnitude",
                                       f"abs mean {ratio:.3g} times the median", z_mag[i]))
    return out


