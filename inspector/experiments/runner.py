"""Running an experiment: every job once per seed, one row per run, then summaries and paired tests."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from . import measure
from .catalog import EPOCHS, QUICK_EPOCHS, TARGET, Experiment, Job
from .data import Dataset, task
from .stats import comparisons, summarize
from .train import Trained, single_thread, train

RUN_COLUMNS = [
    "experiment", "network", "task", "config", "signs", "method", "biases", "activation", "init", "seed",
    "epochs", "test_acc", "train_acc", "seconds", "sec_per_epoch", "epochs_to_target", "seconds_to_target",
    "reached_target", "weight_neg_frac", "weight_zero_frac", "init_neg_frac", "violations",
    "dead_relu_candidates", "preact_neg_frac", "dead_relu_frac", "distinct_units",
]
WALL_CLOCK = ["seconds", "sec_per_epoch", "seconds_to_target"]  # differ between identical runs
LAYER_COLUMNS = ["experiment", "network", "task", "config", "signs", "method", "biases", "seed",
                 *measure.LAYER_FIELDS]
# progress(experiment, runs done, runs in all)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Budget:
    seeds: tuple
    epochs: dict

    @classmethod
    def make(cls, seeds: int | None, epochs: int | None, quick: bool) -> "Budget":
        from .catalog import QUICK_SEEDS, SEEDS

        n = seeds if seeds is not None else QUICK_SEEDS if quick else SEEDS
        per = {k: epochs for k in EPOCHS} if epochs is not None else dict(QUICK_EPOCHS if quick else EPOCHS)
        return cls(tuple(range(n)), per)


@dataclass
class Tables:
    """An experiment's results: ``runs`` (one row per run), ``layers`` (per run and layer), ``summary``
    (per configuration: n, mean, std, 95 % interval of each metric), ``tests`` (paired comparisons) and
    any further tables by name."""

    experiment: Experiment
    runs: pd.DataFrame
    layers: pd.DataFrame
    summary: pd.DataFrame
    tests: pd.DataFrame
    extra: dict = field(default_factory=dict)


def labels(exp: Experiment, job: Job, seed: int, epochs: int) -> dict:
    s = job.spec
    method = s.method if s.config != "free" else "none"
    return {"experiment": exp.name, "network": s.network, "task": job.task, "config": job.config,
            "signs": s.config, "method": method, "biases": s.biases, "activation": s.activation, "init": s.init,
            "seed": seed, "epochs": epochs}


def run_row(exp: Experiment, job: Job, seed: int, run: Trained, data: Dataset, folder: Path) -> tuple[dict, list]:
    """The CSV row of one finished run, and its per-layer rows."""
    tag = f"{exp.name}-{len(list(folder.iterdir()))}"
    weights = measure.Weights(run, folder, tag)
    reached, index = measure.epochs_to(run.history, TARGET)
    row = labels(exp, job, seed, len(run.history))
    row.update(test_acc=run.history[-1] if run.history else run.accuracy(data.x_test, data.y_test),
               train_acc=run.accuracy(data.x_train, data.y_train), seconds=sum(run.epoch_seconds),
               sec_per_epoch=sum(run.epoch_seconds) / max(1, len(run.epoch_seconds)), epochs_to_target=reached,
               seconds_to_target=sum(run.epoch_seconds[: index + 1]) if index >= 0 else math.nan,
               reached_target=int(index >= 0))
    row.update(weights.row())
    row.update(measure.activations(run, data, relu=job.spec.activation == "relu" and job.spec.network != "lstm"))
    row["distinct_units"] = measure.distinct_units(run) if job.spec.network == "mlp" else math.nan
    base = {k: row[k] for k in LAYER_COLUMNS[:8]}
    return row, [{**base, **layer} for layer in weights.layers()]


def run_experiment(exp: Experiment, budget: Budget, progress: Progress | None = None,
                   on_epoch=None) -> Tables:
    """Train every job of ``exp`` once per seed and gather the tables."""
    rows, layer_rows, cache = [], [], {}
    total, done = len(exp.jobs) * len(budget.seeds), 0
    with tempfile.TemporaryDirectory(prefix="winspect-experiment-") as tmp:
        for job in exp.jobs:
            if job.task not in cache:
                cache[job.task] = task(job.task)
            data = cache[job.task]
            for seed in budget.seeds:
                with single_thread():  # evaluation too: one thread is faster here, and the same everywhere
                    run = train(job.spec, data, budget.epochs[job.spec.network], seed, on_epoch)
                    row, lay = run_row(exp, job, seed, run, data, Path(tmp))
                rows.append(row)
                layer_rows += lay
                done += 1
                if progress:
                    progress(exp.name, done, total)
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    for c in ("violations", "dead_relu_candidates", "distinct_units"):
        runs[c] = runs[c].astype("Int64")
    layers = pd.DataFrame(layer_rows, columns=LAYER_COLUMNS)
    summary = summarize(runs, exp.keys, exp.metrics)
    tests = comparisons(runs, exp.keys, exp.within, exp.factor, exp.baseline, exp.tested)
    return Tables(exp, runs, layers, summary, tests)
