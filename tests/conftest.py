"""Shared fixtures: the read-only data and reference folder beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("LATENTCODEC_SHARED", REPO_ROOT.parent / "shared"))


def pytest_configure(config):
    # Tests run two workers on two cores; more intra-op threads would only oversubscribe.
    torch.set_num_threads(1)
    # The CLI's main() would make this process keep freed memory (latentcodec/runtime.py) for the
    # rest of the suite, whose tests load multi-GB weights; tests/test_runtime.py checks the setting
    # in child processes instead.
    os.environ["LATENTCODEC_MALLOC"] = "default"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED_DIR / "reference").is_dir():
        raise RuntimeError(f"shared data folder not found at {SHARED_DIR} (set LATENTCODEC_SHARED)")
    return SHARED_DIR


@pytest.fixture(scope="session")
def make_weights(shared_dir):
    """The reference folder's deterministic-weights generator (key + shape -> tensor)."""
    import importlib.util

    path = shared_dir / "reference" / "glc" / "make_weights.py"
    spec = importlib.util.spec_from_file_location("glc_make_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def kodak_dir(shared_dir) -> Path:
    return shared_dir / "data" / "kodak"


def pytest_addoption(parser):
    parser.addoption("--rewrite-golden", action="store_true", help="regenerate committed golden files")
    parser.addoption("--reference-errors", metavar="PATH", default=None,
                     help="write the worst relative error per tensor of the GLC-video reference test as JSON")
    parser.addoption("--dlf-reference-errors", metavar="PATH", default=None,
                     help="write the largest relative error per tensor of the DLF reference test as JSON")


@pytest.fixture
def count_tiled_runs(monkeypatch):
    """How many tiled chains ran, and with how many tiles each (so tests see tiling happen)."""
    from latentcodec.nn import tiling

    calls = []
    original = tiling.TiledChain.tile_side

    def tile_side(self, site, budget):
        side = original(self, site, budget)
        calls.append(side)
        return side

    monkeypatch.setattr(tiling.TiledChain, "tile_side", tile_side)
    return calls


@pytest.fixture(autouse=True)
def _denormals_back_to_default():
    """The trainer flushes denormals process-wide (a speed setting for training runs); put the default
    back after each test, so that no later test (hypothesis draws subnormal floats) depends on order."""
    yield
    torch.set_flush_denormal(False)
