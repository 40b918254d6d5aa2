"""Running several experiments and writing their tables, plots and report."""

from __future__ import annotations

import os
import platform as _platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..report.bundle import report_dir
from ..report.export import write_csv, write_text
from . import document, report
from .catalog import EXPERIMENTS
from .runner import WALL_CLOCK, Budget, Tables, run_experiment
from .train import THREADS

POINTS = (-1.0, -0.5, -0.2)


class ExperimentResult:
    """``tables[name]``: an experiment's :class:`~inspector.experiments.runner.Tables`; ``result[name]`` its
    runs DataFrame; ``platform``: where and how it ran."""

    def __init__(self, tables: dict, budget: Budget, platform: dict):
        self.tables, self.budget, self.platform = tables, budget, platform

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name].runs

    def __repr__(self) -> str:
        runs = sum(len(t.runs) for t in self.tables.values())
        return f"<ExperimentResult {', '.join(self.tables)}: {runs} runs, {len(self.budget.seeds)} seeds>"

    def blocks(self, images: dict) -> list:
        out = report.intro(self.platform, self.budget.seeds, self.budget.epochs)
        for name, t in self.tables.items():
            out += report.section(t, images.get(name, []), extra_views(t))
        return out

    def save(self, directory) -> Path:
        """Every experiment's CSVs and plots, then experiments.md and experiments.html; returns the .md path."""
        folder = report_dir(directory, "output")
        images = {name: save_tables(t, folder) for name, t in self.tables.items()}
        blocks = self.blocks(images)
        write_text(document.to_html(blocks, "winspect experiments"), folder / "experiments.html")
        return write_text(document.to_markdown(blocks), folder / "experiments.md")


def save_tables(t: Tables, folder: Path) -> list[str]:
    """``<name>.csv``, ``<name>_layers.csv``, the summaries and tests, any further tables; plots. Returns the
    plots' names."""
    name = t.experiment.name
    write_csv(t.runs, folder / f"{name}.csv")
    write_csv(t.layers, folder / f"{name}_layers.csv")
    write_csv(t.summary, folder / f"{name}_summary.csv")
    write_csv(t.tests, folder / f"{name}_tests.csv")
    for key, df in t.extra.items():
        write_csv(df, folder / f"{key}.csv")
    return [p.name for p in report.plots(t, folder)]


def activation_values() -> pd.DataFrame:
    """sigmoid, tanh, ReLU and GELU (exact, erf form) at a few negative inputs, in float64."""
    import torch
    import torch.nn.functional as F

    x = torch.tensor(POINTS, dtype=torch.float64)
    fns = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "gelu": F.gelu}
    return pd.DataFrame([{"function": k, **{f"f({p:g})": round(float(v), 6) for p, v in zip(POINTS, fn(x))}}
                         for k, fn in fns.items()])


def extra_views(t: Tables) -> dict:
    """Further tables shown in an experiment's section."""
    if t.experiment.name == "activations":
        return {"Function values at negative inputs (exact, float64)": t.extra["activation_values"]}
    if t.experiment.name != "evolution":
        return {}
    steps = t.extra["evolution_steps"]
    w = t.extra["evolution_weights"]
    named = w.pivot(index="epoch", columns="weight", values="value").reset_index()
    reasons = w.drop_duplicates("weight")[["weight", "why"]]
    cols = ["step", "weight_neg_frac", "weight_sign_flips", "weight_sign_flip_frac", "weight_rel_change"]
    return {"Per epoch (winspect track)": steps[cols].map(report.num),
            "Named weights: which and why": reasons, "Named weights per epoch": named.map(report.num)}


def platform_info(names, budget: Budget, quick: bool) -> dict:
    import sklearn
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), _platform.processor() or _platform.machine())
    args = " ".join(names) + f" --seeds {len(budget.seeds)}" + (" --quick" if quick else "")
    return {"command": f"winspect experiment {args} --out DIR", "started (UTC)": _now(), "cpu": cpu,
            "logical CPUs": os.cpu_count(), "torch threads per run": THREADS, "python": sys.version.split()[0],
            "torch": torch.__version__, "scikit-learn": sklearn.__version__, "numpy": __import__("numpy").__version__,
            "system": f"{_platform.system()} {_platform.release()}", "load average at start": _load()}


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def run_all(names, out, seeds, epochs, quick: bool, progress) -> ExperimentResult:
    """Run each experiment in turn; with ``out``, each one's tables are written as soon as it ends."""
    from .evolution import run_evolution

    budget = Budget.make(seeds, epochs, quick)
    info = platform_info(names, budget, quick)
    folder = report_dir(out, "output") if out is not None else None
    start, tables = time.perf_counter(), {}
    for name in names:
        t = run_evolution(budget, progress) if name == "evolution" else run_experiment(EXPERIMENTS[name], budget,
                                                                                        progress)
        if name == "activations":
            t.extra["activation_values"] = activation_values()
        tables[name] = t
        if folder is not None:
            save_tables(t, folder)
    info.update({"load average at end": _load(), "wall time (s)": round(time.perf_counter() - start, 1),
                 "wall-clock columns": ", ".join(WALL_CLOCK)})
    result = ExperimentResult(tables, budget, info)
    if folder is not None:
        result.save(folder)
    return result
