"""A small generated model zoo for the scan tests: every registered format, broken files, hostile
pickles, a Hugging Face folder, a shard index, a NaN model, a duplicate by symlink and files that are
not models. :func:`make_zoo` returns the zoo's root and the model paths a scan must report.
:func:`hanging_model` makes a model whose inspection really hangs (its weights are a named pipe)."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import numpy as np

from .helpers import FORMATS, hostile_files, make_safetensors


def tiny_safetensors(d: Path, i: int, nan: bool = False) -> Path:
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(i)
    sd = {"fc.weight": torch.randn(4, 3, generator=g) + (i % 3 - 1) * 0.5, "fc.bias": torch.randn(4, generator=g)}
    if nan:
        sd["fc.weight"][0, 0] = float("nan")
    save_file(sd, d / f"m{i:03d}.safetensors")
    return d / f"m{i:03d}.safetensors"


def make_zoo(root: Path, tiny: int = 20) -> tuple[Path, dict[str, str]]:
    """The zoo under ``root/zoo``; path -> expected status (ok, error, skipped) of every model in it."""
    zoo = root / "zoo"
    expect: dict[str, str] = {}
    for name, maker in FORMATS:  # one sample of every format, each in its own folder
        d = zoo / "formats" / name
        d.mkdir(parents=True)
        path = maker(d)
        several = "index" in name or "sharded" in name  # an index and its shards: the folder is one model
        expect[str(d if several else path)] = "ok"
    tiny_dir = zoo / "runs" / "epochs"
    tiny_dir.mkdir(parents=True)
    for i in range(tiny):
        expect[str(tiny_safetensors(tiny_dir, i, nan=(i == 7)))] = "ok"
    hf = zoo / "hf" / "bert-tiny"
    hf.mkdir(parents=True)
    make_safetensors(hf)
    (hf / "config.json").write_text(json.dumps({"model_type": "bert"}))
    expect[str(hf)] = "ok"
    hostile = zoo / "downloads"
    hostile.mkdir()
    for _, (path, _) in hostile_files(hostile, root / "marker").items():
        expect[str(path)] = "ok"  # refused, with unsafe findings
    (zoo / "odd").mkdir()
    expect[str(unicode_trap(zoo / "odd"))] = "ok"
    expect.update(_broken(zoo / "broken"))
    os.symlink(tiny_dir / "m000.safetensors", zoo / "runs" / "latest.safetensors")
    expect[str(zoo / "runs" / "latest.safetensors")] = "skipped"
    (zoo / "README.md").write_text("not a model\n")
    (zoo / "runs" / "notes.json").write_text("{}")
    return zoo, expect


def unicode_trap(d: Path) -> Path:
    """A safetensors file whose tensor name is a lone surrogate escape in its JSON header: valid JSON and a
    Python str, but not Unicode that UTF-8 (or Parquet) can hold."""
    header = b'{"enc\\ud800oder.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}'
    path = d / "unicode_trap.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + np.arange(-2, 2, dtype=np.float32).tobytes())
    return path


def _broken(d: Path) -> dict[str, str]:
    d.mkdir()
    (d / "empty.pth").write_bytes(b"")
    (d / "garbage.pt").write_bytes(b"\x00not a checkpoint" * 10)
    (d / "truncated.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"a\": {\"dtype\"")
    (d / "bad.onnx").write_bytes(b"\xff" * 40)
    (d / "cut.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1")
    return {str(d / n): "error" for n in ("empty.pth", "garbage.pt", "truncated.safetensors", "bad.onnx", "cut.npy")}


def hanging_model(d: Path, name: str = "streaming") -> Path:
    """A Hugging Face folder whose weights file is a named pipe nobody writes: opening it for reading
    waits for a writer, so inspecting the folder hangs until :func:`release` opens the other end."""
    folder = d / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    os.mkfifo(folder / "model.safetensors")
    return folder


def release(folder: Path, wait: float = 0.0) -> bool:
    """Let a reader blocked on opening ``folder``'s pipe go on (it then reads end of file), waiting up to
    ``wait`` seconds for one to be there; whether one was."""
    deadline = time.monotonic() + wait
    while True:
        try:
            os.close(os.open(folder / "model.safetensors", os.O_WRONLY | os.O_NONBLOCK))
            return True
        except OSError as e:  # ENXIO: no reader has it open (yet)
            if e.errno != errno.ENXIO or time.monotonic() > deadline:
                return False
        time.sleep(0.05)
