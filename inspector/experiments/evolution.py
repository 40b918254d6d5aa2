"""The ``evolution`` experiment: one run saved after every epoch, read back with winspect's ``track``."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..multi import track
from .catalog import EVOLUTION
from .measure import save
from .runner import Budget, Progress, Tables, run_experiment

TRACK_FIELDS = ["step", "name", "layer", "numel", "neg_frac", "sign_flips", "sign_flip_frac", "became_neg",
                "became_pos", "rel_change"]
WEIGHT_COLUMNS = ["epoch", "weight", "value", "why"]


def run_evolution(budget: Budget, progress: Progress | None = None) -> Tables:
    """The first seed's MLP, saved at initialisation and after every epoch; the track tables and the
    trajectories of a few named weights."""
    states: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="winspect-evolution-") as tmp:
        def on_epoch(epoch, run):
            if not states:
                states.append(run.initial)
            states.append(run.state_dict())

        one = Budget(budget.seeds[:1], budget.epochs)
        tables = run_experiment(EVOLUTION, one, progress, on_epoch)
        paths = [save(sd, Path(tmp) / f"epoch_{i:03d}.safetensors") for i, sd in enumerate(states)]
        result = track([str(p) for p in paths])
    t = result.tensors
    tables.extra["evolution_steps"] = result.steps.drop(columns=["checkpoint"])
    tables.extra["evolution_layers"] = t[t["kind"] == "weight"][TRACK_FIELDS].reset_index(drop=True)
    tables.extra["evolution_weights"] = trajectories(states)
    return tables


def _flips(series: np.ndarray) -> np.ndarray:
    """Sign changes along axis 0 (epochs) of each element (zero counts as no sign)."""
    s = np.sign(series)
    return ((s[1:] * s[:-1]) < 0).sum(0)


def named_weights(states: list[dict]) -> list[tuple[str, tuple, str]]:
    """The weights followed, and why: (tensor, index, reason)."""
    w1 = np.stack([sd["fc1.weight"].numpy() for sd in states])
    w2 = np.stack([sd["fc2.weight"].numpy() for sd in states])
    flip = np.unravel_index(int(np.argmax(_flips(w1))), w1.shape[1:])
    moved = np.unravel_index(int(np.argmax(np.abs(w1[-1] - w1[0]))), w1.shape[1:])
    big = np.unravel_index(int(np.argmax(np.abs(w2[-1]))), w2.shape[1:])
    return [
        ("fc1.weight", (0, 0), "its input, pixel (0, 0), is 0 in every digit image: its gradient is 0, it never moves"),
        ("fc1.weight", tuple(int(i) for i in flip), "the first-layer weight whose sign changed most often"),
        ("fc1.weight", tuple(int(i) for i in moved), "the first-layer weight that moved furthest from its start"),
        ("fc2.weight", tuple(int(i) for i in big), "the output-layer weight largest in magnitude at the end"),
    ]


def trajectories(states: list[dict]) -> pd.DataFrame:
    rows = []
    for tensor, index, why in named_weights(states):
        label = f"{tensor}[{index[0]}, {index[1]}]"
        for epoch, sd in enumerate(states):
            rows.append({"epoch": epoch, "weight": label, "value": float(sd[tensor][index]), "why": why})
    return pd.DataFrame(rows, columns=WEIGHT_COLUMNS)
