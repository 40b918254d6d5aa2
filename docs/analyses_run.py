"""Make a small training run to try ``winspect diff`` and ``winspect track`` on (the numbers in docs/analyses.md).

    python docs/analyses_run.py OUT_DIR

Trains a small CNN on scikit-learn's bundled 8x8 digits (offline, CPU, fixed seed) for 20 epochs
and saves the state dict at initialisation and after epochs 1, 2, 5, 10 and 20 as
``OUT_DIR/epoch<N>.safetensors``. Needs torch, safetensors and scikit-learn.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file
from sklearn.datasets import load_digits

SAVE_AT = (0, 1, 2, 5, 10, 20)


def model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def main(out: Path) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    digits = load_digits()
    x = torch.from_numpy((digits.images / 16.0).astype(np.float32)[:, None])
    y = torch.from_numpy(digits.target.astype(np.int64))
    net = model()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(max(SAVE_AT) + 1):
        if epoch in SAVE_AT:
            save_file({k: v.detach().clone().contiguous() for k, v in net.state_dict().items()},
                      out / f"epoch{epoch}.safetensors")
        if epoch == max(SAVE_AT):
            break
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        print(f"training accuracy after {max(SAVE_AT)} epochs: {(net(x).argmax(1) == y).float().mean():.4f}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "run"))
