"""Tables and summary: column sums equal the totals, per-kind figures add up, headline from weights only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import inspector


@pytest.fixture
def result(tmp_path):
    g = torch.Generator().manual_seed(0)
    sd = {
        "a.weight": -torch.rand(8, 4, generator=g),  # all negative
        "a.bias": torch.rand(8, generator=g),
        "b.weight": torch.rand(2, 8, generator=g),  # all positive
        "b.bias": torch.zeros(2),
        "n.weight": torch.ones(8),
        "n.bias": torch.zeros(8),
        "n.running_mean": -torch.ones(8),
    }
    torch.save(sd, tmp_path / "m.pt")
    return inspector.inspect(tmp_path / "m.pt")


def test_layer_sums_equal_totals(result):
    layers, s = result.layers, result.summary
    assert layers["numel"].sum() == s["numel"] == result.tensors["numel"].sum()
    assert layers["learned_numel"].sum() == s["learned_numel"]
    assert layers["buffer_numel"].sum() == s["buffer_numel"]
    assert layers["weight_numel"].sum() == s["weight_numel"]
    assert sum(k["numel"] for k in s["by_kind"].values()) == s["numel"]


def test_headline_is_over_weight_kind_only(result):
    s = result.summary
    assert s["weight_numel"] == 32 + 16
    assert s["weight_neg_frac"] == pytest.approx(32 / 48)
    assert s["by_kind"]["buffer"]["neg_frac"] == 1.0
    assert s["by_kind"]["norm"]["zero_frac"] == 0.5


def test_most_and_least_negative_layers(result):
    s = result.summary
    assert s["most_negative_layers"][0]["layer"] == "a"
    assert s["least_negative_layers"][0]["layer"] == "b"


def test_layer_figures_pool_their_tensors(result):
    row = result.layers.set_index("layer").loc["a"]
    w = result.tensors.set_index("name").loc["a.weight"]
    assert row["weight_neg_frac"] == 1.0 and row["weight_std"] == pytest.approx(w["std"])
    assert row["neg_frac"] == pytest.approx(32 / 40)


def test_zero_tensor_finding(result):
    found = {(f.type, f.subject) for f in result.summary["findings"]}
    assert ("zero", "b.bias") in found and ("zero", "n.bias") in found


def test_pooled_std_matches_numpy(tmp_path):
    g = torch.Generator().manual_seed(1)
    sd = {"l.weight": torch.randn(5, 5, generator=g) + 3, "l.in_proj_weight": torch.randn(3, 5, generator=g) - 1}
    torch.save(sd, tmp_path / "p.pt")
    row = inspector.inspect(tmp_path / "p.pt").layers.iloc[0]
    allv = np.concatenate([t.numpy().ravel() for t in sd.values()]).astype(np.float64)
    assert row["weight_std"] == pytest.approx(allv.std(), rel=1e-9)
    assert row["weight_l2_norm"] == pytest.approx(np.linalg.norm(allv), rel=1e-9)
