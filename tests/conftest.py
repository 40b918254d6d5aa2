"""Test configuration: isolation from the network, and nothing written into the checkout."""

from __future__ import annotations

import atexit
import shutil
import tempfile

import pytest
from hypothesis import configuration as hypothesis_configuration
from hypothesis import settings

# hypothesis keeps its example database and caches under a temporary directory, never in the checkout
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="winspect-hypothesis-")
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)
hypothesis_configuration.set_hypothesis_home_dir(_HYPOTHESIS_HOME)
settings.register_profile("winspect", database=None)
settings.load_profile("winspect")


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    """No test may download: torchvision weights resolve in an empty private TORCH_HOME unless a test fills it."""
    monkeypatch.setenv("WINSPECT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
