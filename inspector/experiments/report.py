"""The experiments' report: plots per experiment, and the blocks of ``experiments.md`` / ``.html``."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..report.export import write_bytes
from .catalog import TARGET
from .data import SPLIT
from .runner import Tables
from .stats import ALPHA, LEVEL, label

DPI = 110
LEVEL_TEXT = f"{LEVEL:.0%}"


def num(x) -> str:
    if x is None or pd.isna(x):
        return "–"
    if isinstance(x, (int, np.integer)) or float(x).is_integer() and abs(x) >= 1:
        return f"{int(x)}"
    return f"{x:.3f}" if 0.01 <= abs(x) < 1000 else f"{x:.3g}"


def cell(row: pd.Series, metric: str, runs: int) -> str:
    """mean ± std [95 % interval] of one metric (just the mean with one value); "(n of runs)" when some
    runs have no value (a target never reached)."""
    n, mean = row[f"{metric}_n"], row[f"{metric}_mean"]
    if not n:
        return "never" if metric.endswith("_to_target") else "–"
    of = f" ({n} of {runs})" if n < runs else ""
    if n == 1:
        return num(mean) + of
    return (f"{num(mean)} ± {num(row[f'{metric}_std'])} [{num(row[f'{metric}_ci_low'])}, "
            f"{num(row[f'{metric}_ci_high'])}]{of}")


def summary_view(t: Tables) -> pd.DataFrame:
    s = t.summary
    view = s[t.experiment.keys].copy()
    runs = t.runs.groupby(t.experiment.keys, sort=False, dropna=False).size().values
    view.insert(len(view.columns), "runs", runs)
    for m in t.experiment.metrics:
        view[m] = [cell(r, m, k) for (_, r), k in zip(s.iterrows(), runs)]
    return view


def tests_view(tests: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in tests.iterrows():
        rows.append({"comparison": r["comparison"], "against": r["against"], "metric": r["metric"], "n": r["n"],
                     f"difference [{LEVEL_TEXT} CI]": f"{num(r['mean_diff'])} [{num(r['ci_low'])}, {num(r['ci_high'])}]",
                     "p": num(r["p"]), "p (Holm)": num(r["p_holm"]), "significant": r["significant"]})
    return pd.DataFrame(rows)


def verdicts(tests: pd.DataFrame) -> list[str]:
    """One plain sentence per comparison."""
    out = []
    for _, r in tests.iterrows():
        what = f"{r['comparison']} vs {r['against']}, {r['metric']}: {num(r['mean_diff'])}"
        if r["significant"] == "yes":
            out.append(f"{what} — significant (Holm-adjusted p = {num(r['p_holm'])}).")
        elif r["significant"] == "no":
            out.append(f"{what} — not significant (Holm-adjusted p = {num(r['p_holm'])}).")
        else:
            out.append(f"{what} — not tested (fewer than two paired seeds).")
    return out


def _figure(width: float, height: float, panels: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, panels, squeeze=False)[0]


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return write_bytes(buf.getvalue(), path)


def bar_plot(t: Tables, folder: Path) -> Path:
    """The first summarised metric per configuration, with its 95 % interval."""
    s, metric = t.summary, t.experiment.metrics[0]
    labels = [label({k: r[k] for k in t.experiment.keys}) for _, r in s.iterrows()]
    mean = s[f"{metric}_mean"].to_numpy(float)
    err = np.nan_to_num(np.vstack([mean - s[f"{metric}_ci_low"], s[f"{metric}_ci_high"] - mean]).astype(float))
    fig, (ax,) = _figure(7.5, 0.9 + 0.28 * len(labels))
    ax.barh(range(len(labels)), mean, xerr=err, color="#4393c3", capsize=2)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} (mean, {LEVEL_TEXT} interval)")
    ax.set_title(f"{t.experiment.name}: {metric}")
    return _save(fig, folder / f"{t.experiment.name}.png")


def evolution_plot(t: Tables, folder: Path) -> Path:
    layers, steps, weights = (t.extra[k] for k in ("evolution_layers", "evolution_steps", "evolution_weights"))
    fig, axes = _figure(12, 3.4, 3)
    for name, g in layers.groupby("name", sort=False):
        axes[0].plot(g["step"], g["neg_frac"], marker=".", label=name)
    axes[0].set(xlabel="epoch", ylabel="negative fraction", title="negative fraction per weight tensor")
    axes[1].bar(steps["step"], steps["weight_sign_flips"].astype(float).fillna(0), color="#d6604d")
    axes[1].set(xlabel="epoch", ylabel="weights", title="sign flips since the previous epoch")
    for name, g in weights.groupby("weight", sort=False):
        axes[2].plot(g["epoch"], g["value"], marker=".", label=name)
    axes[2].axhline(0, color="#888", lw=0.8)
    axes[2].set(xlabel="epoch", ylabel="value", title="named weights")
    for ax in (axes[0], axes[2]):
        ax.legend(fontsize=7)
    return _save(fig, folder / "evolution.png")


def plots(t: Tables, folder: Path) -> list[Path]:
    return [evolution_plot(t, folder)] if t.experiment.name == "evolution" else [bar_plot(t, folder)]


def platform_rows(platform: dict) -> pd.DataFrame:
    return pd.DataFrame({"item": list(platform), "value": [str(v) for v in platform.values()]})


def intro(platform: dict, seeds: tuple, epochs: dict) -> list:
    return [
        ("h1", "winspect experiments: do negative weights matter?"),
        ("p", f"Command: {platform['command']}"),
        ("p", f"Data: scikit-learn's bundled digits (8x8 images scaled to [0, 1]) and breast-cancer table; "
              f"{SPLIT}, the same for every seed. Seeds: {', '.join(map(str, seeds))} (each seed sets the "
              f"initialisation, the batch order and Dale signs; runs with the same seed are paired). Epochs: "
              + ", ".join(f"{k} {v}" for k, v in epochs.items()) + f". Adam, batch 64, cross-entropy; "
              f"learning rate 3e-3 (MLP, CNN) and 1e-2 (LSTM). Target accuracy for epochs_to_target: {TARGET:.0%}."),
        ("p", f"Every figure is the mean ± sample standard deviation over seeds, with the {LEVEL_TEXT} Student-t "
              f"interval of the mean in brackets. Differences are paired t-tests across seeds against the "
              f"baseline named in each section, Holm-adjusted within each experiment; significant means "
              f"adjusted p < {ALPHA}. Weight figures (negative and zero fractions, violations, per-layer tables) "
              f"are measured by winspect's own inspect, diff and track on the saved weights."),
        ("h2", "Platform"), ("table", platform_rows(platform)),
    ]


def section(t: Tables, images: list[str], extra_tables: dict) -> list:
    e = t.experiment
    blocks = [("h2", f"{e.name}: {e.question}"), ("p", e.method), ("p", f"Table: {e.name}.csv (one row per run), "
              f"{e.name}_layers.csv (per run and layer)."), ("table", summary_view(t))]
    for caption, df in extra_tables.items():
        blocks += [("h3", caption), ("table", df)]
    if len(t.tests):
        blocks += [("h3", f"Paired differences against {e.baseline}"), ("table", tests_view(t.tests)),
                   ("list", verdicts(t.tests))]
    return blocks + [("image", (f"{e.name}", img)) for img in images]
