"""The networks: a one-hidden-layer MLP, the digits CNN of the fixtures, an LSTM over image rows.

Every learned matrix is a ``Linear`` or ``Conv2d`` weight, so that the state dict names
(``fc1.weight``, ``ih.weight`` ...) are read by winspect's loaders as kind ``weight``.
``forward(x, pre=True)`` returns the hidden layer's pre-activations instead of the logits.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "gelu": F.gelu}
NETWORKS = ("mlp", "cnn", "lstm")


class MLP(nn.Module):
    """fc1 (inputs -> hidden), activation, fc2 (hidden -> classes)."""

    def __init__(self, inputs: int, classes: int, hidden: int = 64, activation: str = "relu"):
        super().__init__()
        self.fc1 = nn.Linear(inputs, hidden)
        self.fc2 = nn.Linear(hidden, classes)
        self.act = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor, pre: bool = False) -> torch.Tensor:
        h = self.fc1(x.flatten(1))
        return h if pre else self.fc2(self.act(h))


class CNN(nn.Module):
    """conv(1->8) bn relu pool, conv(8->16) bn relu pool, fc(64->32) relu, fc(32->10)."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc1 = nn.Linear(16 * 2 * 2, 32)
        self.fc2 = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor, pre: bool = False) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        h = self.fc1(x.flatten(1))
        return h if pre else self.fc2(torch.relu(h))


class RowLSTM(nn.Module):
    """An LSTM reading an 8x8 image as 8 rows of 8 pixels; the last hidden state feeds fc.

    ``ih`` and ``hh`` hold the four gates' input and recurrent weights (input, forget, cell, output).
    ``pre=True`` returns the cell-input gate's pre-activations at the last row.
    """

    def __init__(self, classes: int = 10, rows: int = 8, hidden: int = 32):
        super().__init__()
        self.hidden = hidden
        self.ih = nn.Linear(rows, 4 * hidden)
        self.hh = nn.Linear(hidden, 4 * hidden, bias=False)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor, pre: bool = False) -> torch.Tensor:
        x = x.flatten(1, 2) if x.dim() == 4 else x
        h = c = x.new_zeros(x.shape[0], self.hidden)
        gates = None
        for t in range(x.shape[1]):
            gates = self.ih(x[:, t]) + self.hh(h)
            i, f, g, o = gates.chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        return gates.chunk(4, 1)[2] if pre else self.fc(h)


def build(network: str, inputs: int, classes: int, activation: str = "relu") -> nn.Module:
    """A fresh network with PyTorch's default initialisation (uses the global torch RNG)."""
    if network == "mlp":
        return MLP(inputs, classes, activation=activation)
    if network == "cnn":
        return CNN(classes)
    return RowLSTM(classes)
