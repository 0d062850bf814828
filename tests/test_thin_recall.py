"""scripts/thin_recall.py: thin / thick recall of a binary segmentation (docs/results/dualpath.md)."""

from __future__ import annotations

import doctest
import importlib.util
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "thin_recall.py"
_SPEC = importlib.util.spec_from_file_location("thin_recall", _PATH)
thin_recall = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(thin_recall)


def test_doctests():
    assert doctest.testmod(thin_recall).failed == 0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), radius=st.sampled_from([0.5, 1.0, 2.0]))
def test_counts_split_the_truth_and_the_prediction(seed, radius):
    rng = np.random.default_rng(seed)
    truth, pred = rng.random((2, 24, 20)) < rng.uniform(0.1, 0.9, 2)[:, None, None]
    c = thin_recall.structure_counts(truth, pred, radius=radius)
    assert c["thin"] + c["thick"] == truth.sum()  # every truth pixel is thin or thick
    assert c["thin_found"] + c["thick_found"] == (truth & pred).sum() == c["predicted"] - c["outside"]
    assert c["thin"] >= c["thin_found"] and c["thick"] >= c["thick_found"]
    # a thicker threshold only moves pixels from thick to thin
    wider = thin_recall.structure_counts(truth, pred, radius=radius + 1)
    assert wider["thin"] >= c["thin"]
