"""Deterministic training on the CPU: one thread, deterministic algorithms, seeded generators.

A run's initialisation draws from torch's global generator, reseeded with the run's seed
inside :func:`torch.random.fork_rng` (the caller's generator state is left as it was); batch
order and Dale signs come from a ``torch.Generator`` seeded with the same seed. The thread
count and the deterministic-algorithms switch are restored afterwards.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call

from .constraints import Constraint
from .data import Dataset
from .nets import build

BATCH = 64
LR = {"mlp": 3e-3, "cnn": 3e-3, "lstm": 1e-2}
THREADS = 1
INITS = ("zeros", "constant", "uniform", "normal", "xavier", "kaiming")
CONSTANT = 0.05


@dataclass(frozen=True)
class Spec:
    """What one run trains: the network, its sign constraint, activation and initialisation."""

    network: str = "mlp"
    config: str = "free"
    method: str = "clamp"
    biases: bool = False
    activation: str = "relu"
    init: str = "kaiming"


@dataclass
class Trained:
    """A finished run: the model, its constraint, per-epoch test accuracy and training seconds."""

    model: torch.nn.Module
    constraint: Constraint
    initial: dict
    history: list = field(default_factory=list)
    epoch_seconds: list = field(default_factory=list)

    def forward(self, x: torch.Tensor, pre: bool = False) -> torch.Tensor:
        """The network with its effective weights (``reparam``: computed from the trained ``v``)."""
        if self.constraint.method != "reparam":
            return self.model(x, pre=pre)
        return functional_call(self.model, self.constraint.params(self.model), (x,), {"pre": pre})

    def predict(self, x: torch.Tensor, pre: bool = False) -> torch.Tensor:
        self.model.eval()
        with torch.no_grad():
            return self.forward(x, pre)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.predict(x).argmax(1) == y).double().mean())

    def state_dict(self) -> dict:
        return self.constraint.state_dict(self.model)


@contextlib.contextmanager
def single_thread():
    """One torch thread and deterministic algorithms (training and evaluation alike); restored on exit."""
    threads, strict = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(strict)


@contextlib.contextmanager
def deterministic(seed: int):
    """:func:`single_thread`, and torch's global generator seeded (its state restored on exit); yields a
    ``torch.Generator`` seeded with the same seed."""
    with single_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed)


def initialise(model: torch.nn.Module, scheme: str) -> None:
    """Weights and biases by ``scheme``; ``kaiming`` keeps PyTorch's default (Kaiming-uniform, a=√5)."""
    if scheme == "kaiming":
        return
    with torch.no_grad():
        for name, p in model.named_parameters():
            if scheme == "zeros" or (name.endswith("bias") and scheme != "constant"):
                p.zero_()
            elif scheme == "constant":
                p.fill_(CONSTANT)
            elif scheme == "uniform":
                p.uniform_(-1.0, 1.0)
            elif scheme == "normal":
                p.normal_(0.0, 1.0)
            elif scheme == "xavier":
                torch.nn.init.xavier_uniform_(p)


def train(spec: Spec, data: Dataset, epochs: int, seed: int, on_epoch: Callable | None = None) -> Trained:
    """Train ``spec`` on ``data`` for ``epochs`` epochs with Adam (batch 64), evaluating after each epoch."""
    with deterministic(seed) as gen:
        model = build(spec.network, data.features, data.classes, spec.activation)
        initialise(model, spec.init)
        constraint = Constraint(spec.config, spec.method, spec.biases)
        constraint.attach(model, gen)
        run = Trained(model, constraint, constraint.state_dict(model))
        opt = torch.optim.Adam(model.parameters(), lr=LR[spec.network])
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            _epoch(run, opt, data, gen)
            run.epoch_seconds.append(time.perf_counter() - start)
            run.history.append(run.accuracy(data.x_test, data.y_test))
            if on_epoch:
                on_epoch(epoch, run)
    return run


def _epoch(run: Trained, opt, data: Dataset, gen: torch.Generator) -> None:
    run.model.train()
    for idx in torch.randperm(len(data.y_train), generator=gen).split(BATCH):
        logits = run.forward(data.x_train[idx])
        loss = F.cross_entropy(logits, data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.constraint.project(run.model)
