"""Figures of the spectral analysis (``--spectral``), in network order.

* ``esd``: small multiples, one per analysed weight: its empirical spectral density on log-log
  axes (a histogram of the eigenvalues of W^T W on log-spaced bins) with the fitted power law
  from ``xmin`` on, alpha in the corner;
* ``alpha``: alpha per weight in network order, the band 2 <= alpha <= 6 shaded;
* ``sign``: the sign spectrum: ``sign_spectral_ratio`` per weight in network order (1 = the bulk
  edge of a random sign pattern of the same shape and density), and for the weights furthest
  above it, the ESD of sign(W) (the first kernel position or gate of a conv or recurrent kernel)
  against the Marchenko-Pastur law a random pattern follows.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .plots import MULTIPLES_PER_FIG, Plot, _figure, _pages, _title, assemble, short

SPECTRAL_PLOT_NAMES = ("esd", "alpha", "sign")
SPECTRAL_CAPTIONS = {
    "esd": ("esd", "Eigenvalue spectra (ESD of W^T W) with their power-law fits"),
    "alpha": ("alpha", "Power-law exponent alpha per weight"),
    "sign": ("sign-spectrum", "Sign spectrum: sign(W) against a random sign pattern"),
}
ALPHA_COLOR = "#542788"
BAND_COLOR = "#1b7837"
SIGN_SHOWN = 6  # sign ESDs drawn: the weights furthest above the random edge


def analysed(tensors: pd.DataFrame, spectra: dict) -> pd.DataFrame:
    """The weights with a spectrum, in network (table) order."""
    if "spectral_method" not in tensors:
        return tensors.iloc[0:0]
    return tensors[tensors["name"].isin(list(spectra))]


def esd_axes(ax, name: str, spectrum: dict) -> None:
    evals = spectrum["evals"]
    pos = evals[evals > evals.max() * 1e-9] if evals.size else evals  # not the round-off of zero
    ax.set_title(short(name, 34), fontsize=7, parse_math=False)
    if pos.size < 2 or pos.min() == pos.max():
        ax.text(0.5, 0.5, "no spread", transform=ax.transAxes, ha="center", fontsize=7)
        return
    bins = np.logspace(math.log10(pos.min()), math.log10(pos.max()), 40)
    dens, edges, _ = ax.hist(pos, bins=bins, density=True, color="#4393c3", alpha=0.7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    alpha, xmin = spectrum["alpha"], spectrum["xmin"]
    if math.isfinite(alpha) and math.isfinite(xmin) and alpha > 1:
        x = np.logspace(math.log10(xmin), math.log10(pos.max()), 50)
        share = np.count_nonzero(pos >= xmin) / pos.size
        ax.plot(x, share * (alpha - 1) / xmin * (x / xmin) ** -alpha, color="#d6604d", lw=1.5)
        ax.axvline(xmin, color="0.4", lw=0.8, ls="--")
        ax.text(0.97, 0.95, f"α={alpha:.2f}", transform=ax.transAxes, ha="right", va="top", fontsize=7,
                color="#d6604d", fontweight="bold")
    ax.tick_params(labelsize=6)


def esd_figures(tensors: pd.DataFrame, spectra: dict) -> list:
    names = list(analysed(tensors, spectra)["name"])
    figs = []
    pages = _pages(len(names), MULTIPLES_PER_FIG)
    for p, rows in enumerate(pages):
        cols = min(6, len(rows))
        nrows = math.ceil(len(rows) / cols)
        fig = _figure(0.3 + 2.5 * cols, 0.9 + 1.7 * nrows)
        axes = fig.subplots(nrows, cols, squeeze=False).ravel()
        for ax, i in zip(axes, rows):
            esd_axes(ax, names[i], spectra[names[i]])
        for ax in axes[len(rows):]:
            ax.set_axis_off()
        fig.suptitle(_title("ESD of W^T W per weight, log-log (red: power-law fit from xmin, dashed)", p,
                            len(pages)), x=0.01, ha="left", parse_math=False)
        figs.append(fig)
    return figs


def per_weight_figure(values: pd.Series, labels: list, title: str, ylabel: str, band=None, line=None):
    """A dot per weight in network order (a log axis when the values span more than 100x)."""
    fig = _figure(min(16, max(7, 3 + 0.18 * len(values))), 4.2)
    ax = fig.subplots()
    x = np.arange(len(values))
    y = values.to_numpy(dtype=float)
    if band:
        ax.axhspan(*band, color=BAND_COLOR, alpha=0.12)
    if line is not None:
        ax.axhline(line, color="0.3", lw=1, ls="--")
    ax.plot(x, y, "o-", color=ALPHA_COLOR, ms=3.5, lw=0.8)
    finite = y[np.isfinite(y) & (y > 0)]
    if finite.size and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
    step = max(1, math.ceil(len(labels) / 60))
    ax.set_xticks(x[::step], [short(s, 28) for s in labels[::step]], rotation=90, fontsize=6)
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left", parse_math=False)
    return fig


def alpha_figure(tensors: pd.DataFrame, spectra: dict):
    df = analysed(tensors, spectra)
    title = "Power-law exponent alpha per weight, network order (shaded: 2 to 6)"
    return per_weight_figure(df["alpha"], list(df["name"]), title, "alpha", band=(2, 6))


def sign_figures(tensors: pd.DataFrame, spectra: dict) -> list:
    df = analysed(tensors, spectra)
    title = "Top singular value of sign(W) over a random sign pattern's bulk edge (1 = random)"
    figs = [per_weight_figure(df["sign_spectral_ratio"], list(df["name"]), title, "sign_spectral_ratio", line=1.0)]
    top = df.sort_values("sign_spectral_ratio", ascending=False, na_position="last").head(SIGN_SHOWN)
    names = [n for n in top["name"] if spectra[n]["sign_evals"].size > 1]
    if names:
        fig = _figure(0.3 + 2.6 * min(3, len(names)), 0.9 + 2.0 * math.ceil(len(names) / 3))
        axes = fig.subplots(math.ceil(len(names) / 3), min(3, len(names)), squeeze=False).ravel()
        for ax, n in zip(axes, names):
            sign_axes(ax, n, spectra[n])
        for ax in axes[len(names):]:
            ax.set_axis_off()
        fig.suptitle("ESD of sign(W) (scaled) against Marchenko-Pastur for a random sign pattern (red)",
                     x=0.01, ha="left", parse_math=False)
        figs.append(fig)
    return figs


def sign_axes(ax, name: str, spectrum: dict) -> None:
    ev, q = spectrum["sign_evals"], spectrum["q"]
    ax.hist(ev, bins=60, density=True, color="#878787", alpha=0.8)
    lo, hi = (1 - 1 / math.sqrt(q)) ** 2, (1 + 1 / math.sqrt(q)) ** 2
    x = np.linspace(max(lo, 1e-9), hi, 200)
    with np.errstate(invalid="ignore", divide="ignore"):
        mp = q / (2 * math.pi * x) * np.sqrt(np.clip((hi - x) * (x - lo), 0, None))
    ax.plot(x, mp, color="#d6604d", lw=1.2)
    ax.set_yscale("log")
    ax.set_title(short(name, 34), fontsize=7, parse_math=False)
    ax.tick_params(labelsize=6)


def spectral_plots(inspection, which: str = "all") -> list[Plot]:
    """The spectral figures named ``which`` (or ``all``); none without spectral columns."""
    spectra = getattr(inspection, "spectra", {})
    if not spectra:
        return []
    t = inspection.tensors
    makers = {"esd": lambda: esd_figures(t, spectra), "alpha": lambda: [alpha_figure(t, spectra)],
              "sign": lambda: sign_figures(t, spectra)}
    return assemble(makers, SPECTRAL_CAPTIONS, which)
