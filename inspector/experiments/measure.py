"""Figures of a finished run. Every weight figure comes from winspect itself: the state dict is
written as a safetensors file and read back with :func:`inspector.inspect` (sign counts per
tensor and layer) and :func:`inspector.diff` (sign flips since initialisation). Activation
figures (pre-activations, dead units) are measured on the test set.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..api import inspect
from ..multi import diff
from ..report.export import write_bytes
from .data import Dataset
from .train import Trained

LAYER_FIELDS = ["layer", "weight_numel", "weight_neg_frac", "weight_zero_frac", "weight_pos_frac"]


def save(state_dict: dict, path: Path) -> Path:
    """A state dict as a safetensors file, written atomically."""
    from safetensors.torch import save

    return write_bytes(save(state_dict), path)


class Weights:
    """winspect's tables of a run's final weights, and of their change since initialisation."""

    def __init__(self, run: Trained, folder: Path, tag: str):
        self.run = run
        final = save(run.state_dict(), folder / f"{tag}.safetensors")
        initial = save(run.initial, folder / f"{tag}-init.safetensors")
        self.inspection = inspect(final)
        self.changes = diff(initial, final).tensors

    def _constrained(self, table: pd.DataFrame) -> pd.DataFrame:
        return table[table["name"].isin(list(self.run.constraint.signs))]

    def violations(self) -> float:
        """Constrained values on the wrong side: negatives (nonneg), positives (nonpos), or sign flips
        since initialisation (fixed_sign, dale: the initial values are all on their allowed side)."""
        config = self.run.constraint.config
        if config == "free":
            return math.nan
        if config in ("nonneg", "nonpos"):
            column = "neg_count" if config == "nonneg" else "pos_count"
            return int(self._constrained(self.inspection.tensors)[column].sum())
        return int(self._constrained(self.changes)["sign_flips"].sum())

    def initial_neg_frac(self) -> float:
        """The weights' negative fraction at initialisation (winspect's diff, side A, pooled over weights)."""
        w = self.changes[self.changes["kind"] == "weight"]
        return float((w["neg_frac_a"] * w["numel"]).sum() / w["numel"].sum()) if len(w) else math.nan

    def row(self) -> dict:
        s = self.inspection.summary
        t = self.inspection.tensors
        cand = t.loc[t["kind"] == "weight", "dead_relu_candidates"].dropna()
        return {"weight_neg_frac": s["weight_neg_frac"], "weight_zero_frac": s["weight_zero_frac"],
                "init_neg_frac": self.initial_neg_frac(), "violations": self.violations(),
                "dead_relu_candidates": int(cand.sum()) if len(cand) else 0}

    def layers(self) -> list[dict]:
        lay = self.inspection.layers
        return lay[lay["weight_numel"] > 0][LAYER_FIELDS].to_dict("records")


def activations(run: Trained, data: Dataset, relu: bool) -> dict:
    """Hidden pre-activations on the test set: the fraction negative, and (ReLU networks) the fraction of
    hidden units whose pre-activation is <= 0 on every test example (dead: output and gradient 0)."""
    pre = run.predict(data.x_test, pre=True)
    dead = (pre <= 0).all(0).double().mean().item() if relu else math.nan
    return {"preact_neg_frac": (pre < 0).double().mean().item(), "dead_relu_frac": dead}


def distinct_units(run: Trained) -> int:
    """Distinct hidden units of an MLP: rows of fc1's weight with their bias, compared exactly.
    With a symmetric initialisation (zeros, constant) every unit gets the same gradient and they stay equal."""
    sd = run.state_dict()
    units = torch.cat([sd["fc1.weight"], sd["fc1.bias"][:, None]], 1).numpy()
    return int(len(np.unique(units, axis=0)))


def epochs_to(history: list, target: float) -> tuple[float, int]:
    """The first epoch (1-based) whose test accuracy reaches ``target``, or NaN ("never")."""
    for i, acc in enumerate(history):
        if acc >= target:
            return float(i + 1), i
    return math.nan, -1
