"""The loader registry: format lists, sniffing order and the files an opened source reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

from inspector import loaders
from inspector.cli import main
from inspector.errors import UnsupportedSource
from inspector.loaders import LOADERS, Loader, formats_text, open_source, register, source_files

from .helpers import SAMPLES

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def test_loaders_are_kept_in_sniffing_order():
    assert [lo.order for lo in LOADERS] == sorted(lo.order for lo in LOADERS)
    assert len({lo.name for lo in LOADERS}) == len(LOADERS)


def test_a_registered_loader_sniffs_by_its_order_not_its_registration(monkeypatch, tmp_path):
    """A loader registered last with a low ``order`` is asked first."""
    monkeypatch.setattr(loaders, "LOADERS", list(LOADERS))

    class Greedy(Loader):
        name = "greedy"
        title = "greedy test format"
        order = 0

        @classmethod
        def sniff(cls, path, head):
            return head.startswith(b"GREEDY")

    register(Greedy)
    assert loaders.LOADERS[0] is Greedy
    f = tmp_path / "x.safetensors"
    f.write_bytes(b"GREEDY...")
    assert loaders.choose_loader(str(f)) is Greedy
    assert "greedy test format" in formats_text()


def test_format_lists_come_from_the_registry(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_bytes(b"hello")
    with pytest.raises(UnsupportedSource) as e:
        loaders.choose_loader(str(f))
    for lo in LOADERS:
        assert lo.title in str(e.value)
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    assert all(lo.title.split(" ")[0] in res.output for lo in LOADERS if lo.title)


def test_every_file_loader_has_samples_under_its_name():
    assert set(SAMPLES) == {lo.name for lo in LOADERS if not lo.takes_names}


@pytest.mark.parametrize("loader", ["safetensors-sharded", "keras-weights-sharded"])
def test_a_one_format_loader_reports_its_own_name(tmp_path, loader):
    (_, make), = SAMPLES[loader]
    with open_source(str(make(tmp_path))) as src:
        assert src.meta["format"] == loader


def test_an_opened_source_lists_the_shards_it_reads(tmp_path):
    a, b = tmp_path / "model-1.safetensors", tmp_path / "model-2.safetensors"
    save_file({"x.weight": np.ones((2, 2), np.float32)}, str(a))
    save_file({"y.weight": np.ones((3,), np.float32)}, str(b))
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"x.weight": a.name, "y.weight": b.name}}))
    (tmp_path / "unrelated.safetensors.bak").write_bytes(b"x")
    with open_source(str(index)) as src:
        assert src.files() == [index, a, b]
    with open_source(str(tmp_path)) as src:
        assert src.files() == [index, a, b]
    assert source_files(str(tmp_path)) == [tmp_path, index, a, b]
    assert source_files("resnet18") == []


def test_keras_sharded_source_lists_its_shards():
    d = FIXTURES / "digits_keras_sharded"
    with open_source(str(d)) as src:
        files = src.files()
    assert files[0].name.endswith(".weights.json") and len(files) > 1
    assert all(p.parent == d for p in files)


def test_records_say_their_layout():
    with open_source(str(FIXTURES / "digits_keras.weights.h5")) as src:
        assert {r.layout for r in src.records()} == {"keras"}
    with open_source(str(FIXTURES / "digits_cnn.safetensors")) as src:
        assert {r.layout for r in src.records()} == {"pytorch"}


def test_every_registered_format_has_samples():
    """The generic tests (fuzzing, bad input, renamed files) run over tests/helpers.SAMPLES: every loader
    that reads files must have samples there, so a new format is tested the day it is registered."""
    from tests.helpers import FORMATS, SAMPLES

    file_loaders = {lo.name for lo in LOADERS if not lo.takes_names}
    assert file_loaders <= set(SAMPLES), f"no samples for {sorted(file_loaders - set(SAMPLES))}"
    assert set(SAMPLES) <= {lo.name for lo in LOADERS}
    assert len(FORMATS) == sum(len(v) for v in SAMPLES.values())
