"""The data sets: scikit-learn's bundled digits and breast-cancer tables (no download).

One fixed split for every seed (stratified 80/20, ``random_state=0``), so that runs with
different seeds differ only in initialisation and batch order, and can be paired by seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SPLIT_SEED = 0
TEST_SIZE = 0.2
SPLIT = f"stratified {1 - TEST_SIZE:.0%}/{TEST_SIZE:.0%} train/test split, scikit-learn random_state={SPLIT_SEED}"
DIGIT_PAIRS = {"0v1": (0, 1), "1v7": (1, 7), "4v9": (4, 9), "3v8": (3, 8)}


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors; ``x`` shaped (n, 1, 8, 8) for digits, (n, features) otherwise."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int

    @property
    def features(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))


def _split(name: str, x: np.ndarray, y: np.ndarray) -> Dataset:
    from sklearn.model_selection import train_test_split

    xtr, xte, ytr, yte = train_test_split(x, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED)
    t = [torch.from_numpy(np.ascontiguousarray(a)) for a in (xtr, ytr, xte, yte)]
    return Dataset(name, *t, classes=int(y.max()) + 1)


def digits(pair: tuple[int, int] | None = None) -> Dataset:
    """The 1,797 8x8 digit images scaled to [0, 1]; with ``pair``, only those two digits, labelled 0 and 1."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    y = d.target.astype(np.int64)
    if pair is None:
        return _split("digits", x, y)
    keep = np.isin(y, pair)
    return _split(f"digits {pair[0]} vs {pair[1]}", x[keep], (y[keep] == pair[1]).astype(np.int64))


def breast_cancer() -> Dataset:
    """569 tumours, 30 features standardised with the training part's mean and std; malignant = 0."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    ds = _split("breast cancer", d.data.astype(np.float32), d.target.astype(np.int64))
    mean, std = ds.x_train.mean(0), ds.x_train.std(0)
    return Dataset(ds.name, (ds.x_train - mean) / std, ds.y_train, (ds.x_test - mean) / std, ds.y_test, 2)


def task(name: str) -> Dataset:
    """A task of the ``tasks`` experiment by name: a digit pair, ``digits10`` or ``breast_cancer``."""
    if name in DIGIT_PAIRS:
        return digits(DIGIT_PAIRS[name])
    return breast_cancer() if name == "breast_cancer" else digits()
