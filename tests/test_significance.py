"""Sampling error of negative fractions and outlier findings that account for it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from inspector.analysis.significance import holm, two_proportion_p, wilson_interval


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 10), (5, 10), (10, 10), (128, 256), (3, 1000), (999, 1000),
                                 (123456, 250000), (7, 9)])
def test_wilson_interval_matches_scipy(k, n):
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(k, n)
    assert float(low) == pytest.approx(ref.low, abs=1e-12) and float(high) == pytest.approx(ref.high, abs=1e-12)


def test_wilson_interval_vectorised_and_empty():
    low, high = wilson_interval(np.array([0, 5, 0]), np.array([10, 10, 0]))
    assert low[0] == 0.0 and high[1] > 0.5 > low[1] and np.isnan(low[2]) and np.isnan(high[2])


def test_two_proportion_p_against_a_plain_reference():
    k, n, kr, nr = 160, 256, 128000, 256000
    pooled = (k + kr) / (n + nr)
    z = (abs(k / n - kr / nr) - 0.5 / n) / np.sqrt(pooled * (1 - pooled) * (1 / n + 1 / nr))
    assert float(two_proportion_p(k, n, kr, nr)) == pytest.approx(2 * stats.norm.sf(z), rel=1e-9)
    assert float(two_proportion_p(128, 256, 1000, 2000)) == 1.0  # same fraction
    assert float(two_proportion_p(0, 0, 10, 20)) == 1.0
    assert float(two_proportion_p(0, 5, 0, 20)) == 1.0  # no variation at all


def test_holm_adjustment():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 -> 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert list(holm(p)) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm(np.array([])).size == 0 and list(holm([0.9, 0.8])) == [1.0, 1.0]


# --- in the tables and findings -----------------------------------------------------------------

import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402

import inspector  # noqa: E402
from inspector.cli import main  # noqa: E402


def test_every_tensor_and_layer_has_a_wilson_interval(tmp_path):
    rng = np.random.default_rng(0)
    sd = {"a.weight": torch.tensor(rng.normal(size=(16, 16)), dtype=torch.float32),
          "a.bias": torch.tensor(rng.normal(size=16), dtype=torch.float32),
          "b.weight": torch.tensor([[-1.0, 0.0], [2.0, float("nan")]]), "e.weight": torch.zeros(0, 3)}
    torch.save(sd, tmp_path / "m.pt")
    ins = inspector.inspect(tmp_path / "m.pt")
    for r in ins.tensors.itertuples():
        if r.numel == 0:
            assert np.isnan(r.neg_frac_lo) and np.isnan(r.neg_frac_hi)
            continue
        ref = stats.binomtest(int(r.neg_count), int(r.numel)).proportion_ci(method="wilson")
        assert (r.neg_frac_lo, r.neg_frac_hi) == pytest.approx((ref.low, ref.high), abs=1e-12)
    a = ins.layers.set_index("layer").loc["a"]
    neg_w = int((sd["a.weight"] < 0).sum())
    ref = stats.binomtest(neg_w, 256).proportion_ci(method="wilson")
    assert (a["weight_neg_frac_lo"], a["weight_neg_frac_hi"]) == pytest.approx((ref.low, ref.high), abs=1e-12)
    neg_all = neg_w + int((sd["a.bias"] < 0).sum())
    ref = stats.binomtest(neg_all, 272).proportion_ci(method="wilson")
    assert (a["neg_frac_lo"], a["neg_frac_hi"]) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_identically_initialised_layers_give_no_outlier_finding(tmp_path):
    torch.manual_seed(12)  # a seed whose most extreme layer is 61.3 % negative (three layers >= 60 %)
    sd = {}
    for i in range(1000):
        layer = torch.nn.Linear(16, 16)
        sd[f"layers.{i}.weight"], sd[f"layers.{i}.bias"] = layer.weight.detach(), layer.bias.detach()
    torch.save(sd, tmp_path / "init.pt")
    ins = inspector.inspect(tmp_path / "init.pt")
    neg = ins.layers["weight_neg_frac"]
    assert neg.max() == pytest.approx(0.61328125)  # this far out by sampling error alone: not an outlier
    assert [f for f in ins.summary["findings"] if f.type == "outlier"] == []
    r = CliRunner().invoke(main, ["audit", str(tmp_path / "init.pt"), "--fail-on", "outlier", "-q"])
    assert r.exit_code == 0, r.output


def test_a_really_different_layer_is_still_found_and_says_how_surprising(tmp_path):
    torch.manual_seed(0)
    sd = {f"l{i}.weight": torch.nn.Linear(64, 64).weight.detach() for i in range(20)}
    sd["l7.weight"] = -sd["l7.weight"].abs() * torch.where(torch.rand(64, 64) < 0.9, 1.0, -1.0)  # ~90 % negative
    torch.save(sd, tmp_path / "m.pt")
    found = [f for f in inspector.inspect(tmp_path / "m.pt").summary["findings"] if f.type == "outlier"]
    assert [f.subject for f in found] == ["l7"]
    assert found[0].data["p_value"] < 1e-100 and "Holm" in found[0].detail and "95 % interval" in found[0].detail
    lo, hi = found[0].data["interval"]
    assert 0.85 < lo < 0.9 < hi < 0.93


@pytest.mark.parametrize("layers", [1, 2, 3, 4, 5, 7, 12])
def test_most_and_least_negative_layers_never_overlap_and_agree_everywhere(tmp_path, layers):
    import re

    from inspector.report.terminal import render
    from inspector.table.summary import SUMMARY_TOP

    rng = np.random.default_rng(layers)
    sd = {f"l{i}.weight": torch.tensor(rng.normal(i / 10, 1, size=(8, 8)), dtype=torch.float32)
          for i in range(layers)}
    torch.save(sd, tmp_path / "m.pt")
    ins = inspector.inspect(tmp_path / "m.pt")
    most = [x["layer"] for x in ins.summary["most_negative_layers"]]
    least = [x["layer"] for x in ins.summary["least_negative_layers"]]
    assert not set(most) & set(least)
    assert len(most) == len(least) == min(SUMMARY_TOP, layers // 2)
    md = ins.to_report(tmp_path / "r").with_name("report.md").read_text()
    html = (tmp_path / "r" / "report.html").read_text()
    from rich.console import Console
    import io
    console = Console(width=200, file=io.StringIO(), record=True)
    console.print(render(ins))
    term = console.export_text()
    for text in (md, term):  # one line each: the same layers, no others
        for title, names in (("most", most), ("least", least)):
            line = re.search(rf"{title} negative layers:?\W*(.*)", text, re.I)
            assert (line is None) == (not names)
            if names:
                assert [w for w in re.split(r"[^\w.]+", line.group(1)) if re.fullmatch(r"l\d+", w)] == names
    shown = re.findall(r"most negative layers.*?</ol>", html, re.S | re.I)
    assert (not shown) == (not most)
    if most:
        assert re.findall(r"<li>.*?</li>", shown[0]).__len__() == len(most)


def test_integer_counters_stay_out_of_magnitude_figures(tmp_path):
    from pathlib import Path

    fix = Path(__file__).resolve().parent.parent / "fixtures" / "digits_cnn.pth"
    ins = inspector.inspect(fix)
    sd = torch.load(fix, weights_only=True)
    buffers = [k for k in sd if k.endswith(("running_mean", "running_var"))]
    values = np.concatenate([sd[k].numpy().astype(np.float64).ravel() for k in buffers])
    b = ins.summary["by_kind"]["buffer"]
    assert b["abs_mean"] == pytest.approx(np.abs(values).mean()) and b["std"] == pytest.approx(values.std())
    assert b["numel"] == values.size + 2  # the counters are still counted
    assert ins.summary["counters"] == ["bn1.num_batches_tracked", "bn2.num_batches_tracked"]
    md = ins.to_report(tmp_path / "r").with_name("report.md").read_text()
    assert "2 integer counters left out of abs mean, std and L2 norm" in md
    only = {"c.num_batches_tracked": torch.tensor(7)}
    torch.save(only, tmp_path / "c.pt")
    k = inspector.inspect(tmp_path / "c.pt").summary["by_kind"]["buffer"]
    assert np.isnan(k["abs_mean"]) and k["numel"] == 1 and k["pos_frac"] == 1.0


def test_findings_of_one_kind_are_grouped_in_the_terminal_and_listed_in_json(tmp_path):
    import json

    sd = {}
    for i in range(54):
        sd[f"blocks.{i}.fc.weight"] = torch.ones(4, 4)
        sd[f"blocks.{i}.fc.bias"] = torch.zeros(4)
    sd["head.weight"] = torch.zeros(3, 4)  # one all-zero weight: listed on its own
    sd["nan.weight"] = torch.tensor([[float("nan"), 1.0]])
    torch.save(sd, tmp_path / "m.pt")
    r = CliRunner().invoke(main, [str(tmp_path / "m.pt"), "--json", str(tmp_path / "m.json")], env={"COLUMNS": "200"})
    lines = [line for line in r.output.splitlines() if line.startswith("finding")]
    assert any(line.startswith("finding nan: nan.weight") for line in lines)
    grouped = [line for line in lines if "54 bias tensors" in line]
    assert len(grouped) == 1 and "finding zero: 54 bias tensors: every value is zero (usual at initialisation)" in grouped[0]
    assert "blocks.0.fc.bias, blocks.1.fc.bias, blocks.2.fc.bias, …" in grouped[0]
    assert any(line.startswith("finding zero: head.weight: every value is zero") for line in lines)
    assert len(lines) == 4  # and the dead-ReLU finding of head.weight
    data = json.loads((tmp_path / "m.json").read_text())
    zero = [f for f in data["summary"]["findings"] if f["type"] == "zero"]
    assert len(zero) == 55 and {f["kind"] for f in zero} == {"bias", "weight"}
