"""Read buffers are reused from tensor to tensor, never while a view of one is alive."""

from __future__ import annotations

import numpy as np
from safetensors.numpy import save_file

from inspector.loaders import buffers, open_source


def test_a_buffer_comes_back_only_when_no_view_of_it_is_alive(monkeypatch):
    monkeypatch.setattr(buffers, "_kept", [])
    a = buffers.take(100_000)
    assert a.size == 1 << 17  # rounded up to a power of two
    first = id(a)
    view = a[:16].view(np.float32)
    buffers.give(a)
    del a
    other = buffers.take(100_000)
    assert id(other) != first  # a view of the kept one is alive: a new buffer
    del view
    again = buffers.take(70_000)
    assert id(again) == first  # nothing refers to it any more: the same one
    assert buffers.take(10).size == 10  # small ones are not pooled


def test_kept_last_chunks_keep_their_values(tmp_path):
    """Chunks a caller keeps after their reader is done are not overwritten by later reads."""
    rng = np.random.default_rng(0)
    arrays = {f"t{i}.weight": rng.standard_normal(50_000 + i).astype(np.float32) for i in range(6)}
    path = tmp_path / "m.safetensors"
    save_file(arrays, str(path))
    kept = {}
    with open_source(str(path)) as src:
        for rec in src.records():
            for chunk in rec.chunks(1 << 20):
                kept[rec.name] = chunk  # a view of the reader's buffer, kept past the end of the read
    for name, a in arrays.items():
        assert np.array_equal(kept[name], a), name


def test_buffers_are_reused_across_tensors(tmp_path, monkeypatch):
    monkeypatch.setattr(buffers, "_kept", [])
    rng = np.random.default_rng(1)
    save_file({f"t{i}.weight": rng.standard_normal(40_000).astype(np.float32) for i in range(5)},
              str(tmp_path / "m.safetensors"))
    seen = set()
    with open_source(str(tmp_path / "m.safetensors")) as src:
        for rec in src.records():
            for chunk in rec.chunks(1 << 20):
                seen.add(id(chunk.base))
                chunk.sum()
            del chunk
    assert len(seen) == 1  # one buffer for the five reads
