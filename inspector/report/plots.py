"""Figures of an inspection, in network order (the layer table's order).

matplotlib is imported only here, and only when a figure is made. Figures are
``matplotlib.figure.Figure`` objects drawn on an Agg canvas: making them needs
no display and leaves pyplot alone; only the Python API's ``plot()`` hands
them to pyplot (:func:`with_pyplot`), for ``plt.show()`` and notebooks.

Plots (:data:`PLOT_NAMES`):

* ``weight``: the whole model's weight distribution: every weight-kind tensor's
  histogram, refined by its percentiles (:func:`tensor_cdf`), summed onto one
  range (:func:`shown_range`), negative side shaded, the negative share (from
  the exact sign counts) annotated;
* ``negative``: negative fraction per layer and kind (horizontal bars), 50 % line;
* ``magnitude``: weight abs mean, std and L2 norm per layer (log axis when the
  values span more than a factor :data:`LOG_SPREAD`);
* ``histograms``: one small histogram per weight tensor, each on its own
  symmetric range, negative side shaded, zero marked.

Big models stay legible: at most :data:`BARS_PER_FIG` bars and
:data:`MULTIPLES_PER_FIG` small multiples per figure; when a plot would need
more than :data:`MAX_FIGS` figures, consecutive layers are pooled by block (the
name up to its first numeric component, ``encoder.layers.7``), and consecutive
blocks into runs if there are still too many.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..analysis.stats import PERCENTILES
from ..table.layers import pooled
from ..table.schema import counted
from .terminal import visible

PLOT_NAMES = ("weight", "negative", "magnitude", "histograms")
BARS_PER_FIG = 60
MULTIPLES_PER_FIG = 48
MAX_FIGS = {"negative": 4, "magnitude": 3, "histograms": 2}
LOG_SPREAD = 30.0
SHOWN_BINS = 120  # bins drawn in the whole-model distribution
SHOWN_MASS = 0.99  # share of weight values in tensors whose percentiles set the whole-model range
SHOWN_SPAN = 1.5  # the whole-model range: this times those tensors' largest |p01|, |p99|
LABEL_CHARS = 48

NEG_COLOR = "#d6604d"
POS_COLOR = "#4393c3"
KIND_COLORS = {"weight": "#542788", "bias": "#e08214", "norm": "#1b7837", "other": "#878787"}


# --- grouping and re-binning (no matplotlib) -------------------------------------

def block_of(name: str) -> str:
    """The block a layer belongs to: its name up to its first numeric component (``layer1.0``)."""
    parts = re.split(r"[./]", name)
    for i, part in enumerate(parts):
        if part.isdigit():
            return name[: sum(len(p) for p in parts[: i + 1]) + i]
    return name


def group_layers(layers: list[str], cap: int) -> dict[str, str]:
    """Map each layer label (network order) to a group label, with at most ``cap`` groups.

    Layers stay themselves while they fit; then consecutive layers of one block are
    pooled; then consecutive blocks are pooled into equal runs ``first … last``.
    """
    if len(layers) <= cap:
        return {u: u for u in layers}
    runs: list[list[str]] = []
    for u in layers:
        if runs and block_of(runs[-1][-1]) == block_of(u):
            runs[-1].append(u)
        else:
            runs.append([u])
    labels = [block_of(r[0]) if len(r) > 1 else r[0] for r in runs]
    size = math.ceil(len(runs) / cap)
    out = {}
    for start in range(0, len(runs), size):
        part = range(start, min(start + size, len(runs)))
        label = labels[part[0]] if len(part) == 1 else f"{labels[part[0]]} … {labels[part[-1]]}"
        out.update({u: label for i in part for u in runs[i]})
    return out


def rebin(edges: np.ndarray, counts: np.ndarray, new_edges: np.ndarray) -> np.ndarray:
    """Counts of a histogram moved onto other bin edges.

    Values are taken as spread uniformly inside each source bin, so a source bin
    that straddles target edges is split in proportion to the overlap; mass
    outside ``new_edges`` is dropped. Zero is an edge of every winspect histogram
    (bins are symmetric about zero), so no count crosses from one sign to the other.
    """
    cdf = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)])
    return np.diff(np.interp(new_edges, edges, cdf))


def short(label: str, width: int = LABEL_CHARS) -> str:
    """A label safe to draw: control characters shown as escapes (no glyph is missing from the font),
    one line, cut in the middle to at most ``width`` characters. Draw it with ``parse_math=False``
    so that ``$`` in a name is not read as mathtext."""
    label = " ".join(visible(label).split()) or "(top level)"
    if len(label) <= width:
        return label
    keep = (width - 1) // 2
    return f"{label[:keep]}…{label[-(width - 1 - keep):]}"


def _layer_label(layer) -> str:
    return layer if isinstance(layer, str) and layer else "(top level)"


def _grouped(label: pd.Series, cap: int) -> pd.Series:
    layers = list(dict.fromkeys(label))
    return label.map(group_layers(layers, cap))


def negative_entries(tensors: pd.DataFrame) -> pd.DataFrame:
    """label, kind, numel, neg_frac per (layer or group, kind) of learned tensors."""
    df = counted(tensors)
    df = df[(df["kind"] != "buffer") & (df["numel"] > 0)]
    label = df["layer"].map(_layer_label)
    per_label = max(1.0, len(df.groupby([label, df["kind"]], sort=False)) / max(1, label.nunique()))
    group = _grouped(label, int(BARS_PER_FIG * MAX_FIGS["negative"] / per_label))
    rows = [
        {"label": g, "kind": k, "numel": int(sub["numel"].sum()),
         "neg_frac": sub["neg_count"].sum() / sub["numel"].sum(), "members": len(sub),
         "layers": sub["layer"].nunique(dropna=False)}
        for (g, k), sub in df.groupby([group, df["kind"]], sort=False)
    ]
    return pd.DataFrame(rows, columns=["label", "kind", "numel", "neg_frac", "members", "layers"])


def magnitude_entries(tensors: pd.DataFrame) -> pd.DataFrame:
    """label, abs_mean, std, l2_norm of the weight-kind tensors per layer (or group)."""
    df = counted(tensors)
    df = df[(df["kind"] == "weight") & (df["finite_count"] > 0)]
    group = _grouped(df["layer"].map(_layer_label), BARS_PER_FIG * MAX_FIGS["magnitude"])
    rows = [{"label": g, "layers": sub["layer"].nunique(dropna=False), **pooled(sub)}
            for g, sub in df.groupby(group, sort=False)]
    return pd.DataFrame(rows, columns=["label", "layers", "numel", "abs_mean", "std", "l2_norm"])


def histogram_entries(tensors: pd.DataFrame, histograms: dict) -> list[dict]:
    """label, edges, counts, neg_frac per weight tensor (or group, re-binned onto its widest range)."""
    df = counted(tensors)
    df = df[(df["kind"] == "weight") & (df["numel"] > 0)]
    group = _grouped(df["name"], MULTIPLES_PER_FIG * MAX_FIGS["histograms"])
    out = []
    for g, sub in df.groupby(group, sort=False):
        hists = [histograms[n] for n in sub["name"]]
        edges = max((e for e, _ in hists), key=lambda e: e[-1])
        counts = sum(rebin(e, c, edges) for e, c in hists)
        reach = float(np.nanmax(np.abs(sub[["min", "max"]].to_numpy(dtype=np.float64)), initial=0.0))
        out.append({"label": g, "edges": edges, "counts": counts, "members": len(sub),
                    "neg_frac": sub["neg_count"].sum() / sub["numel"].sum(),
                    "outliers_to": reach if reach > edges[-1] else None})
    return out


def tensor_cdf(row, edges: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots (x, number of finite values <= x) of one tensor's distribution, piecewise linear.

    The histogram's edges, refined by the tensor's percentiles where they fall
    inside a bin; when outliers reach beyond the histogram's range (its outer bins
    hold them), its outer edges move out to the tensor's min and max.
    """
    h = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)])
    edges = edges.copy()
    if np.isfinite(row.min) and np.isfinite(row.max):
        edges[0], edges[-1] = min(edges[0], row.min), max(edges[-1], row.max)
    q = np.array([getattr(row, f"p{p:02d}") for p in PERCENTILES], dtype=np.float64)
    share = np.array(PERCENTILES, dtype=np.float64) / 100 * h[-1]
    ok = np.isfinite(q) & (q > edges[0]) & (q < edges[-1]) & ~np.isin(q, edges)
    q, share = q[ok], share[ok]
    k = np.searchsorted(edges, q) - 1  # the bin each percentile falls in
    share = np.clip(share, h[k], h[k + 1])
    xs = np.concatenate([edges, q])
    order = np.argsort(xs, kind="stable")
    return xs[order], np.maximum.accumulate(np.concatenate([h, share])[order])


def shown_range(rows: pd.DataFrame) -> float:
    """Half-width of the whole-model plot: SHOWN_SPAN times the 1st/99th percentile reach of
    the tensors that hold SHOWN_MASS of the values (so a tiny outlying tensor does not set it)."""
    reach = np.maximum(rows["p01"].abs(), rows["p99"].abs()).to_numpy(dtype=np.float64)
    order = np.argsort(reach)
    share = np.cumsum(rows["finite_count"].to_numpy(dtype=np.float64)[order])
    i = min(int(np.searchsorted(share, SHOWN_MASS * share[-1])), len(order) - 1)
    widest = max(np.maximum(rows["min"].abs(), rows["max"].abs()))
    b = min(SHOWN_SPAN * reach[order][i], widest)
    return b if b > 0 else 1.0


def model_distribution(tensors: pd.DataFrame, histograms: dict):
    """(edges, counts, beyond) of all weight-kind values on one shown range (:func:`shown_range`).

    Each tensor's distribution (:func:`tensor_cdf`) is moved onto the shown bins,
    values taken as spread evenly between knots; ``beyond`` is the estimated
    share of values outside the shown range. None without finite weight values.
    """
    df = counted(tensors)
    rows = df[(df["kind"] == "weight") & (df["finite_count"] > 0)]
    if rows.empty:
        return None
    b = shown_range(rows)
    edges = np.linspace(-b, b, SHOWN_BINS + 1)
    counts = sum(np.diff(np.interp(edges, *tensor_cdf(r, *histograms[r.name]))) for r in rows.itertuples())
    return edges, counts, max(0.0, 1.0 - counts.sum() / rows["finite_count"].sum())


# --- figures ----------------------------------------------------------------------

def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _pages(n: int, per: int) -> list[range]:
    count = max(1, math.ceil(n / per))
    size = math.ceil(n / count) if n else 0
    return [range(s, min(s + size, n)) for s in range(0, n, size)] if n else []


def _title(text: str, page: int, pages: int) -> str:
    return text if pages == 1 else f"{text} ({page + 1}/{pages})"


def _pooled_note(e: pd.DataFrame) -> str:
    pooled = len(e) and e["layers"].max() > 1
    return f" (consecutive layers pooled into {e['label'].nunique():,} groups)" if pooled else ""


def _compact(n: int) -> str:
    """1234 -> 1.2k, 11689512 -> 11.7M."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.1f}{suffix}"
    return str(int(n))


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def negative_figures(tensors: pd.DataFrame) -> list:
    """Horizontal bars: negative fraction per layer and kind, network order top to bottom."""
    e = negative_entries(tensors)
    pages = _pages(len(e), BARS_PER_FIG)
    figs = []
    for p, rows in enumerate(pages):
        sub = e.iloc[list(rows)]
        fig = _figure(10, 1.6 + 0.19 * len(sub))
        ax = fig.add_subplot()
        y = np.arange(len(sub))
        ax.barh(y, sub["neg_frac"], color=[KIND_COLORS.get(k, "#878787") for k in sub["kind"]], height=0.75)
        for yi, v, n in zip(y, sub["neg_frac"], sub["numel"]):
            inside = v > 0.8  # no room right of the bar: write inside it
            ax.text(v - 0.01 if inside else v + 0.01, yi, f"{_pct(v)} of {_compact(n)}", va="center",
                    ha="right" if inside else "left", color="white" if inside else "black", fontsize=7,
                    parse_math=False)
        ax.axvline(0.5, color="black", lw=1, ls="--")
        ax.set_yticks(y, [short(f"{lab} [{k}]") for lab, k in zip(sub["label"], sub["kind"])],
                      fontsize=7, parse_math=False)
        ax.set_ylim(len(sub) - 0.5, -0.5)
        ax.set_xlim(0, 1)
        ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
        ax.set_xlabel("share of values that are negative (dashed line: 50%); labels: share of how many values")
        handles = [_patch(c, k) for k, c in KIND_COLORS.items() if k in set(e["kind"])]
        fig.legend(handles=handles, loc="outside upper right", fontsize=7, ncols=len(handles))
        ax.set_title(_title(f"Negative fraction per layer{_pooled_note(e)}", p, len(pages)), loc="left",
                     parse_math=False)
        figs.append(fig)
    return figs


def _patch(color: str, label: str):
    from matplotlib.patches import Patch

    return Patch(color=color, label=label)


def _spread_log(ax, values, axis: str) -> None:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size and v.max() / v.min() > LOG_SPREAD:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def magnitude_figures(tensors: pd.DataFrame) -> list:
    """Per layer: weight abs mean and std (left), L2 norm (right), network order top to bottom."""
    e = magnitude_entries(tensors)
    pages = _pages(len(e), BARS_PER_FIG)
    figs = []
    for p, rows in enumerate(pages):
        sub = e.iloc[list(rows)]
        fig = _figure(11, 1.6 + 0.19 * len(sub))
        left, right = fig.subplots(1, 2, sharey=True, width_ratios=[3, 2])
        y = np.arange(len(sub))
        left.hlines(y, 0, sub["abs_mean"], color="#bbbbbb", lw=1)
        left.plot(sub["abs_mean"], y, "o", color="#542788", ms=4, label="abs mean")
        left.plot(sub["std"], y, "|", color="#e08214", ms=9, mew=2, label="std")
        right.barh(y, sub["l2_norm"], color="#1b7837", height=0.7)
        _spread_log(left, np.r_[sub["abs_mean"], sub["std"]], "x")
        _spread_log(right, sub["l2_norm"], "x")
        left.set_yticks(y, [short(x) for x in sub["label"]], fontsize=7, parse_math=False)
        left.set_ylim(len(sub) - 0.5, -0.5)
        fig.legend(*left.get_legend_handles_labels(), loc="outside upper right", fontsize=7, ncols=2)
        left.set_xlabel("abs mean, std of weight values")
        right.set_xlabel("L2 norm of the layer's weights")
        left.set_title(_title(f"Weight magnitudes per layer{_pooled_note(e)}", p, len(pages)), loc="left",
                       parse_math=False)
        figs.append(fig)
    return figs


def _signed_hist(ax, edges, counts, lw=0.0) -> None:
    """Negative side shaded red, positive blue, zero marked."""
    half = len(counts) // 2
    ax.stairs(counts[:half], edges[: half + 1], fill=True, color=NEG_COLOR, lw=lw)
    ax.stairs(counts[half:], edges[half:], fill=True, color=POS_COLOR, lw=lw)
    ax.axvline(0, color="black", lw=0.8)


def histogram_figures(tensors: pd.DataFrame, histograms: dict) -> list:
    """Small multiples: one histogram per weight tensor (or block), each on its own range."""
    entries = histogram_entries(tensors, histograms)
    pages = _pages(len(entries), MULTIPLES_PER_FIG)
    cols = min(6, len(entries))
    pooled = any(e["members"] > 1 for e in entries)
    what = "Weight histograms, tensors pooled by block" if pooled else "Weight histograms per tensor"
    figs = []
    for p, rows in enumerate(pages):
        nrows = math.ceil(len(rows) / cols)
        fig = _figure(0.3 + 2.5 * cols, 0.9 + 1.55 * nrows)
        axes = fig.subplots(nrows, cols, squeeze=False).ravel()
        for ax, i in zip(axes, rows):
            _multiple(ax, entries[i])
        for ax in axes[len(rows):]:
            ax.set_axis_off()
        sep = "\n" if cols < 4 else " "  # a narrow figure: the legend on a line of its own
        fig.suptitle(_title(f"{what}{sep}(own range each; red = negative, line = zero)", p, len(pages)),
                     x=0.01, ha="left", parse_math=False)
        figs.append(fig)
    return figs


def _multiple(ax, e: dict) -> None:
    edges = e["edges"]
    _signed_hist(ax, edges, e["counts"])
    label = e["label"] if e["members"] == 1 else f"{e['label']} ({e['members']} tensors)"
    ax.set_title(short(label, 34), fontsize=7, parse_math=False)
    ax.text(0.02, 0.97, f"neg {_pct(e['neg_frac'])}", transform=ax.transAxes, va="top", fontsize=7,
            color=NEG_COLOR, fontweight="bold", parse_math=False)
    if e.get("outliers_to"):
        ax.text(0.98, 0.97, f"outer bins:\nout to ±{e['outliers_to']:.2g}", transform=ax.transAxes, va="top",
                ha="right", fontsize=6, color="0.3", parse_math=False)
    a = edges[-1]
    ax.set_xlim(-a, a)
    ax.set_xticks([-a, 0, a], [f"{-a:.2g}", "0", f"{a:.2g}"], fontsize=6)
    ax.set_yticks([])


def distribution_figure(tensors: pd.DataFrame, histograms: dict, summary: dict):
    """The whole model's weight distribution, negative share annotated; None without weights."""
    d = model_distribution(tensors, histograms)
    if d is None:
        return None
    edges, counts, beyond = d
    fig = _figure(10, 4.2)
    ax = fig.add_subplot()
    _signed_hist(ax, edges, counts)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_yticks([])
    neg, n = summary["weight_neg_frac"], summary["weight_numel"]
    ax.text(0.02, 0.95, f"{_pct(neg)} negative", transform=ax.transAxes, va="top", fontsize=16,
            color=NEG_COLOR, fontweight="bold", parse_math=False)
    ax.text(0.98, 0.95, f"{_pct(summary['weight_pos_frac'])} positive", transform=ax.transAxes, va="top",
            ha="right", fontsize=16, color=POS_COLOR, fontweight="bold", parse_math=False)
    note = f"{n:,} weight values in {int((counted(tensors)['kind'] == 'weight').sum())} tensors"
    if beyond >= 5e-5:  # shows as at least 0.01%
        note += f"; about {beyond:.2%} lie beyond ±{edges[-1]:.3g} (not shown)"
    ax.set_xlabel(f"weight value ({note})")
    ax.set_title("Whole-model weight distribution (all weight-kind tensors)", loc="left", parse_math=False)
    return fig


def with_pyplot(figures: list) -> list:
    """The figures, made known to pyplot so that ``plt.show()`` and notebooks display them."""
    import matplotlib.pyplot as plt

    return [plt.figure(f) for f in figures]


class Plot(NamedTuple):
    stem: str  # file name without suffix
    caption: str
    figure: object  # matplotlib.figure.Figure


CAPTIONS = {
    "weight": ("weight-distribution", "Whole-model weight distribution"),
    "negative": ("negative-fraction", "Negative fraction per layer and kind"),
    "magnitude": ("magnitudes", "Weight magnitudes per layer"),
    "histograms": ("histograms", "Weight histograms per tensor"),
}


def plots(inspection, which: str = "all") -> list[Plot]:
    """The figures of one plot (a :data:`PLOT_NAMES` name), or of ``all`` in report order."""
    if which != "all" and which not in PLOT_NAMES:
        raise ValueError(f"unknown plot {which!r}; choose one of {', '.join(PLOT_NAMES)} or all")
    t, h = inspection.tensors, inspection.histograms
    makers = {
        "weight": lambda: [f for f in [distribution_figure(t, h, inspection.summary)] if f is not None],
        "negative": lambda: negative_figures(t),
        "magnitude": lambda: magnitude_figures(t),
        "histograms": lambda: histogram_figures(t, h),
    }
    return assemble(makers, CAPTIONS, which)


def assemble(makers: dict, captions: dict, which: str) -> list[Plot]:
    """The plots named ``which`` (or ``all``): each maker's figures, named ``stem`` or ``stem-N`` when several."""
    out = []
    for k, make in makers.items():
        if which in (k, "all"):
            figs = make()
            stem, caption = captions[k]
            for i, fig in enumerate(figs):
                many = len(figs) > 1
                out.append(Plot(f"{stem}-{i + 1}" if many else stem, _title(caption, i, len(figs)), fig))
    return out
