"""winspect experiment: the quick run's numbers that must hold whatever the seed, constraints checked
against numpy, determinism, the statistics against plain references, bad input and Ctrl-C."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from scipy import stats as st

import inspector
from inspector.cli import main
from inspector.experiments import data, measure, stats
from inspector.experiments.constraints import CONFIGS, METHODS
from inspector.experiments.runner import WALL_CLOCK
from inspector.experiments.train import Spec, train

CONSTRAINED = CONFIGS[1:]


def run(*args):
    return CliRunner().invoke(main, ["experiment", *[str(a) for a in args]])


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    res = run("--quick", "--out", out, "-q")
    assert res.exit_code == 0, res.output
    return out


def table(folder, name) -> pd.DataFrame:
    return pd.read_csv(folder / f"{name}.csv")


def test_quick_run_writes_every_table_and_the_report(quick):
    for name in inspector.experiments.NAMES:
        runs = table(quick, name)
        for col in ("experiment", "network", "config", "method", "seed", "test_acc", "train_acc", "seconds",
                    "weight_neg_frac"):
            assert col in runs.columns
        assert set(runs["experiment"]) == {name}
        assert (quick / f"{name}.png").stat().st_size > 0
    assert set(table(quick, "signs")["seed"]) == {0, 1}
    md = (quick / "experiments.md").read_text()
    for words in ("## Platform", "torch threads per run", "significant", "95%", "random\\_state=0", "tanh"):
        assert words in md
    assert "<table" in (quick / "experiments.html").read_text()
    assert not list(quick.glob(".*.tmp"))


def test_free_mlp_reaches_90_percent_on_digits(quick):
    signs = table(quick, "signs")
    free = signs[(signs["network"] == "mlp") & (signs["config"] == "free")]
    assert len(free) == 2 and (free["test_acc"] >= 0.9).all()
    tasks = table(quick, "tasks")
    ten = tasks[(tasks["config"] == "digits10") & (tasks["signs"] == "free")]
    assert (ten["test_acc"] >= 0.9).all()


def test_zero_init_stays_at_chance_with_identical_units(quick):
    init = table(quick, "init").set_index("config")
    zeros = init.loc[["zeros"]]
    assert (zeros["test_acc"] < 0.2).all()  # ten balanced classes: chance is 0.1
    assert (zeros["distinct_units"] == 1).all()
    assert (init.loc[["kaiming"]]["distinct_units"] == 64).all()
    assert (zeros["init_neg_frac"] == 0).all()


def test_every_constrained_configuration_stays_within_its_constraint(quick):
    for name in ("signs", "speed", "tasks"):
        runs = table(quick, name)
        constrained = runs[runs["signs"] != "free"]
        assert len(constrained) and (constrained["violations"] == 0).all()
    layers = table(quick, "signs_layers")
    assert (layers.loc[layers["signs"] == "nonneg", "weight_neg_frac"] == 0).all()
    assert (layers.loc[layers["signs"] == "nonpos", "weight_pos_frac"] == 0).all()
    signs = table(quick, "signs")
    assert (signs.loc[signs["signs"] == "nonneg", "weight_neg_frac"] == 0).all()


def test_activation_values_are_exact(quick):
    values = table(quick, "activation_values").set_index("function")
    assert values.loc["tanh", "f(-1)"] == pytest.approx(math.tanh(-1), abs=1e-6)  # -0.761594, not -0.68
    assert values.loc["sigmoid", "f(-0.5)"] == pytest.approx(1 / (1 + math.exp(0.5)), abs=1e-6)
    assert values.loc["gelu", "f(-1)"] == pytest.approx(-0.5 * (1 + math.erf(-1 / math.sqrt(2))), abs=1e-6)
    assert (values.loc["relu"] == 0).all()


def test_evolution_uses_track_and_the_blind_weight_never_moves(quick):
    steps = table(quick, "evolution_steps")
    assert list(steps["step"]) == list(range(len(steps))) and len(steps) == 9  # init + 8 quick epochs
    assert pd.isna(steps["weight_sign_flips"].iloc[0]) and steps["weight_sign_flips"].iloc[1:].notna().all()
    w = table(quick, "evolution_weights")
    blind = w[w["weight"] == "fc1.weight[0, 0]"]["value"]
    assert blind.nunique() == 1  # pixel (0, 0) is 0 in every image: zero gradient


@pytest.mark.parametrize("config", CONSTRAINED)
@pytest.mark.parametrize("method", METHODS)
def test_violations_match_numpy_and_catch_a_broken_constraint(tmp_path, config, method):
    digits = data.digits()
    done = train(Spec("mlp", config, method, biases=True), digits, 1, 3)
    sd = done.state_dict()
    for name, signs in done.constraint.signs.items():  # numpy: every value on its allowed side
        assert not np.any(signs.numpy() * sd[name].numpy() < 0), name
    assert measure.Weights(done, tmp_path, "ok").violations() == 0
    if method == "reparam":  # sign * softplus(v) cannot leave its side: nothing to break
        return
    with torch.no_grad():  # one value pushed to the wrong side must be counted
        dict(done.model.named_parameters())["fc2.weight"][0, 0] = -0.5 * done.constraint.signs["fc2.weight"][0, 0]
    assert measure.Weights(done, tmp_path, "broken").violations() == 1


def test_same_seed_gives_identical_csvs_and_leaves_torch_as_it_was(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    threads = torch.get_num_threads()
    torch.manual_seed(1234)
    want = torch.rand(3)
    torch.manual_seed(1234)
    ra = inspector.experiment(["signs", "init", "evolution"], a, seeds=1, epochs=1)
    assert torch.equal(torch.rand(3), want) and torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()
    inspector.experiment(["signs", "init", "evolution"], b, seeds=1, epochs=1)
    assert isinstance(ra["signs"], pd.DataFrame) and len(ra["signs"]) == 31
    files = sorted(p.name for p in a.glob("*.csv"))
    assert files == sorted(p.name for p in b.glob("*.csv")) and len(files) == 14
    for f in files:
        x, y = pd.read_csv(a / f), pd.read_csv(b / f)
        wall = [c for c in WALL_CLOCK if c in x.columns]
        pd.testing.assert_frame_equal(x.drop(columns=wall), y.drop(columns=wall), check_exact=True)
        if not wall:
            assert (a / f).read_bytes() == (b / f).read_bytes()


def test_statistics_against_plain_references():
    v = np.array([0.91, 0.93, 0.95, 0.92, 0.97])
    got = stats.interval(v)
    half = st.t.ppf(0.975, 4) * v.std(ddof=1) / math.sqrt(5)
    assert got["mean"] == pytest.approx(v.mean()) and got["std"] == pytest.approx(v.std(ddof=1))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((v.mean() - half, v.mean() + half))
    assert stats.interval([np.nan, 0.5])["n"] == 1 and math.isnan(stats.interval([0.5])["ci_low"])
    assert stats.interval([])["n"] == 0
    a, b = np.array([0.9, 0.8, 0.85, 0.95]), np.array([0.7, 0.75, 0.7, 0.8])
    ref = st.ttest_rel(b, a)
    got = stats.paired(a, b)
    assert got["p"] == pytest.approx(ref.pvalue) and got["t"] == pytest.approx(ref.statistic)
    assert stats.paired([0.5, 0.6], [0.4, 0.5])["p"] == 0.0  # the same non-zero difference on every seed
    assert stats.paired([0.5, 0.6], [0.5, 0.6])["p"] == 1.0
    assert math.isnan(stats.paired([0.5], [0.4])["p"])
    p = pd.Series([0.01, 0.04, np.nan, 0.03])
    assert list(stats.holm(p).fillna(-1)) == pytest.approx([0.03, 0.06, -1, 0.06])


def test_bad_input_is_a_usage_error(tmp_path):
    res = run("sign", "--out", tmp_path)
    assert res.exit_code == 2 and "unknown experiment 'sign'; did you mean signs?" in res.output
    assert run("--seeds", 0, "--out", tmp_path).exit_code == 2
    assert run("--epochs", -1, "--out", tmp_path).exit_code == 2
    f = tmp_path / "file"
    f.write_text("keep")
    res = run("--quick", "--out", f)
    assert res.exit_code == 2 and "is a file" in res.output and f.read_text() == "keep"
    with pytest.raises(inspector.experiments.BadExperiment):
        inspector.experiment(["init"], None, seeds=0)


def test_without_the_extra_the_command_names_it(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "sklearn" else real(n, *a))
    res = run("init", "--out", tmp_path)
    assert res.exit_code == 1 and "winspect[torch]" in res.output and "sklearn" in res.output


def test_ctrl_c_leaves_no_half_written_table(tmp_path, monkeypatch):
    from inspector.experiments import runner

    real, calls = runner.train, []

    def interrupted(spec, *args, **kwargs):
        calls.append(spec)
        if len(calls) > 6:  # the six init runs finish; the evolution run is interrupted
            raise KeyboardInterrupt
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(runner, "train", interrupted)
    res = run("init", "evolution", "--seeds", 1, "--epochs", 1, "--out", tmp_path, "-q")
    assert res.exit_code == 130
    assert len(pd.read_csv(tmp_path / "init.csv")) == 6
    assert not (tmp_path / "evolution.csv").exists() and not (tmp_path / "experiments.md").exists()
    assert not list(tmp_path.glob(".*"))
