"""Make a small training run to try ``winspect diff`` and ``winspect track`` on (the numbers in docs/analyses.md).

    python docs/analyses_run.py OUT_DIR [LAST_EPOCH]

Trains a small CNN on scikit-learn's bundled 8x8 digits (offline, CPU) for 20 epochs (or
LAST_EPOCH) and saves the state dict at initialisation and after epochs 1, 2, 5, 10 and 20 as
``OUT_DIR/epoch<N>.safetensors``. Needs torch, safetensors and scikit-learn.

Fixed seeds, one thread, deterministic algorithms: a rerun on the same machine and torch
version writes the same bits. ``OUT_DIR/run.json`` records what else the bits depend on (the
torch version and the CPU capability torch picks its kernels by) and each file's SHA-256, so
two runs can be compared. The initial weights come from torch's own random generator and are
the same on every CPU; trained weights may differ in the last bits on another CPU.
"""

from __future__ import annotations

import hashlib
import json
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


def deterministic() -> dict:
    """Fixed seed, one thread, deterministic algorithms; returns what the result depends on."""
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    return {"torch": torch.__version__.split("+")[0], "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}


def main(out: Path, last: int = max(SAVE_AT)) -> None:
    made_with = deterministic()
    digits = load_digits()
    x = torch.from_numpy((digits.images / 16.0).astype(np.float32)[:, None])
    y = torch.from_numpy(digits.target.astype(np.int64))
    net = model()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    saved = {}
    for epoch in range(last + 1):
        if epoch in SAVE_AT or epoch == last:
            path = out / f"epoch{epoch}.safetensors"
            save_file({k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}, path)
            saved[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
        if epoch == last:
            break
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        acc = float((net(x).argmax(1) == y).float().mean())
    (out / "run.json").write_text(json.dumps({"epochs": last, "training_accuracy": round(acc, 4),
                                              "made_with": made_with, "sha256": saved}, indent=2) + "\n")
    print(f"training accuracy after {last} epochs: {acc:.4f}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "run"), int(sys.argv[2]) if len(sys.argv) > 2 else max(SAVE_AT))
