"""winspect's spectral columns against WeightWatcher 0.7.7 itself (in the dev extra), on the same model."""

from __future__ import annotations

import logging

import numpy as np
import pytest

ww = pytest.importorskip("weightwatcher")  # in the dev extra: this runs wherever the tests do
torch = pytest.importorskip("torch")

from inspector import inspect  # noqa: E402

SAME = ["spectral_norm", "log_spectral_norm", "stable_rank", "log_norm", "alpha", "alpha_weighted", "mp_softrank",
        "num_spikes", "num_evals", "xmin", "num_pl_spikes"]


def model():
    g = torch.Generator().manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Embedding(300, 48),
        torch.nn.Conv2d(16, 32, 3),
        torch.nn.Linear(200, 90),
        torch.nn.Linear(90, 60),
    )
    with torch.no_grad():  # heavy tails and a few spikes, so that alpha and num_spikes vary
        t = torch.distributions.StudentT(2.5)
        m[2].weight.copy_(t.sample((90, 200)) * 0.05 + 0.3 * torch.outer(torch.randn(90, generator=g),
                                                                            torch.randn(200, generator=g)))
        m[3].weight.copy_(t.sample((60, 90)) * 0.1)
    return m


def test_columns_agree_with_weightwatcher(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    m = model()
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    details = ww.WeightWatcher(model=m).analyze(mp_fit=True, plot=False)
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, path)
    ours = inspect(path, spectral=True).tensors.set_index("name")
    assert len(details) == 4
    for _, row in details.iterrows():
        mine = ours.loc[f"{row['longname']}.weight"]
        for c in SAME:
            assert float(mine[c]) == pytest.approx(float(row[c]), rel=1e-6, abs=1e-9), (row["longname"], c)
    alphas = details["alpha"].to_numpy(float)
    assert np.ptp(alphas) > 1  # the layers differ: the comparison is not of one number
    assert details["num_spikes"].sum() > 0
