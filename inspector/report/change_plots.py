"""Plots for diff, track and compare (matplotlib with the Agg backend, imported only here, lazily)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .plots import short as label

LINES_PER_PAGE = 8  # tensors per trend figure
MAX_PAGES = 10  # beyond LINES_PER_PAGE * MAX_PAGES weight tensors, evenly spaced ones are shown
MAX_BARS = 200  # per-tensor bars in a diff figure


def _subplots(nrows: int, ncols: int, figsize: tuple[float, float], **kwargs):
    """A figure on its own Agg canvas (pyplot and the user's backend are left alone) and its axes."""
    from .plots import _figure

    fig = _figure(*figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kwargs)


def _save(fig, path: Path) -> Path:
    """Write the figure as PNG, atomically."""
    from .bundle import _render
    from .export import write_bytes

    return write_bytes(_render(fig, "png"), path)


def _legend(name: str) -> str:
    """A legend entry: legends read mathtext, so a ``$`` in a name is escaped."""
    return label(name).replace("$", r"\$")


def _pick(n: int, limit: int) -> np.ndarray:
    """At most ``limit`` evenly spaced indices of ``range(n)``, first and last included."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def diff_figure(tensors):
    """Per weight tensor: relative change and sign-flip fraction, in the diff table's order."""
    w = tensors[tensors["kind"] == "weight"]
    w = w.iloc[_pick(len(w), MAX_BARS)]
    fig, axes = _subplots(2, 1, (max(8, 0.18 * len(w) + 3), 7), sharex=True)
    x = np.arange(len(w))
    axes[0, 0].bar(x, w["rel_change"].to_numpy(dtype=float), color="tab:blue")
    axes[0, 0].set_ylabel("||B - A|| / ||A||")
    axes[0, 0].set_title("change per weight tensor")
    axes[1, 0].bar(x, 100 * w["sign_flip_frac"].to_numpy(dtype=float), color="tab:red")
    axes[1, 0].set_ylabel("sign flips (% of values)")
    axes[1, 0].set_xticks(x, [label(n) for n in w["name"]], rotation=90, fontsize=6, parse_math=False)
    return fig


def diff_plot(tensors, out_dir: Path) -> Path:
    return _save(diff_figure(tensors), out_dir / "diff_change.png")


def track_figures(tensors, steps) -> list:
    """Trend pages (negative fraction, std, L2 norm per weight tensor across steps), then the sign-flip figure."""
    w = tensors[tensors["kind"] == "weight"]
    names = list(dict.fromkeys(w["name"]))
    names = [names[i] for i in _pick(len(names), LINES_PER_PAGE * MAX_PAGES)]
    figs = []
    pages = math.ceil(len(names) / LINES_PER_PAGE)
    for page in range(pages):
        chosen = names[page * LINES_PER_PAGE : (page + 1) * LINES_PER_PAGE]
        fig, axes = _subplots(3, 1, (9, 9), sharex=True)
        for name in chosen:
            t = w[w["name"] == name]
            for ax, col in zip(axes[:, 0], ("neg_frac", "std", "l2_norm")):
                ax.plot(t["step"], t[col].to_numpy(dtype=float), marker="o", label=_legend(name))
        for ax, title in zip(axes[:, 0], ("negative fraction", "std", "L2 norm")):
            ax.set_ylabel(title)
        _step_ticks(axes[2, 0], steps)
        axes[0, 0].legend(fontsize=7, loc="best")
        axes[0, 0].set_title(f"weight tensors across checkpoints (page {page + 1} of {pages})")
        figs.append(fig)
    return figs + [_flip_figure(steps)]


def track_plots(tensors, steps, out_dir: Path) -> list[Path]:
    """track_trends_NN.png pages and track_sign_flips.png."""
    figs = track_figures(tensors, steps)
    names = [f"track_trends_{i + 1:02d}.png" for i in range(len(figs) - 1)] + ["track_sign_flips.png"]
    return [_save(fig, out_dir / name) for fig, name in zip(figs, names)]


MAX_STEP_LABELS = 24


def _step_ticks(ax, steps) -> None:
    """x axis: the steps, each labelled with its checkpoint's file name (at most MAX_STEP_LABELS of them)."""
    ax.set_xlabel("step")
    if len(steps) > MAX_STEP_LABELS:
        ax.xaxis.get_major_locator().set_params(integer=True)
        return
    names = [f"{int(s)}\n{label(str(c).rstrip('/').replace(chr(92), '/').rsplit('/', 1)[-1])}"
             for s, c in zip(steps["step"], steps["checkpoint"])]
    ax.set_xticks(steps["step"].to_numpy(dtype=float), names, fontsize=7, rotation=30 if len(names) > 6 else 0,
                  parse_math=False)


def _flip_figure(steps):
    fig, axes = _subplots(2, 1, (8, 6), sharex=True)
    axes[0, 0].plot(steps["step"], steps["weight_neg_frac"].to_numpy(dtype=float), marker="o")
    axes[0, 0].set_ylabel("weight negative fraction")
    flips = steps["weight_sign_flip_frac"].to_numpy(dtype=float)
    axes[1, 0].bar(steps["step"], 100 * np.nan_to_num(flips), color="tab:red")
    axes[1, 0].set_ylabel("sign flips from previous (%)")
    _step_ticks(axes[1, 0], steps)
    return fig


def compare_figure(table):
    """Side by side: negative fraction and std per kind, one bar per model."""
    models = list(dict.fromkeys(table["model"]))
    kinds = list(dict.fromkeys(table["kind"]))
    fig, axes = _subplots(1, 2, (max(9, 1.5 * len(kinds) * max(1, len(models) / 3) + 4), 4.5))
    width = 0.8 / max(1, len(models))
    x = np.arange(len(kinds))
    for i, m in enumerate(models):
        sub = table[table["model"] == m].set_index("kind").reindex(kinds)
        for ax, col, scale in ((axes[0, 0], "neg_frac", 100), (axes[0, 1], "std", 1)):
            ax.bar(x + i * width, scale * sub[col].to_numpy(dtype=float), width, label=_legend(m))
    for ax, title in ((axes[0, 0], "negative values (%)"), (axes[0, 1], "std")):
        ax.set_xticks(x + width * (len(models) - 1) / 2, kinds)
        ax.set_ylabel(title)
    axes[0, 0].legend(fontsize=7)
    return fig


def compare_plot(table, out_dir: Path) -> Path:
    return _save(compare_figure(table), out_dir / "compare.png")
