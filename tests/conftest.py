"""Shared fixtures: where the real public datasets are (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# An empty OMP_NUM_THREADS makes libgomp print a warning into the stderr of every `python -m
# medbalance` the tests start, which the one-line-error tests would read as the CLI's own output.
if os.environ.get("OMP_NUM_THREADS") == "":
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``$MEDBALANCE_DATA`` or ``../shared/data`` beside the checkout; skips the test when absent."""
    root = Path(os.environ.get("MEDBALANCE_DATA", _DEFAULT_DATA))
    if not root.is_dir():
        pytest.skip(f"real datasets not found at {root} (set MEDBALANCE_DATA)")
    return root


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory) -> None:
    """Folder datasets cache their decoded arrays; tests write that cache to a temporary folder."""
    os.environ["MEDBALANCE_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: tiny networks only add synchronisation with a second."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
