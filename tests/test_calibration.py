"""ECE and the reliability diagram (MiSLAS's calibration, 15 bins); seed 002 figure 4.3 (issue 19)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics.functional.classification import multiclass_calibration_error

from medbalance.losses.weights import CLASS_WEIGHT_SCHEMES, class_weights, weight_function
from medbalance.metrics import calibration_bins, expected_calibration_error
from medbalance.report import plots


def _ece_numpy(probs: np.ndarray, target: np.ndarray, num_bins: int) -> float:
    """Guo et al. 2017: bins (lower, upper], ECE = sum_b |B_b| / n |acc(B_b) - conf(B_b)|."""
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    ece = 0.0
    for lower, upper in zip(edges[:-1], edges[1:]):
        inside = (confidence > lower) & (confidence <= upper)
        if inside.any():
            accuracy = (predicted[inside] == target[inside]).mean()
            ece += inside.mean() * abs(accuracy - confidence[inside].mean())
    return ece


def _sample(seed: int, n: int, classes: int, sharpness: float) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(n, classes, generator=g, dtype=torch.float64) * sharpness, dim=1)
    return probs, torch.randint(0, classes, (n,), generator=g)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 300),
    classes=st.integers(2, 6),
    sharpness=st.floats(0.1, 6.0),
    num_bins=st.sampled_from([1, 5, 15, 20]),
)
def test_ece_matches_numpy_and_torchmetrics(seed, n, classes, sharpness, num_bins):
    probs, target = _sample(seed, n, classes, sharpness)
    ours = expected_calibration_error(probs, target, num_bins=num_bins)
    assert ours == pytest.approx(_ece_numpy(probs.numpy(), target.numpy(), num_bins), abs=1e-12)
    reference = multiclass_calibration_error(probs.float(), target, classes, n_bins=num_bins, norm="l1")
    assert ours == pytest.approx(float(reference), abs=1e-5)


def test_default_is_15_bins_and_perfect_calibration_is_zero():
    probs, target = _sample(3, 500, 4, 2.0)
    assert expected_calibration_error(probs, target) == pytest.approx(_ece_numpy(probs.numpy(), target.numpy(), 15))
    assert calibration_bins(probs, target)["count"].numel() == 15
    # every sample at confidence 0.75, three in four right: calibrated
    confident = torch.tensor([[0.75, 0.25]] * 8, dtype=torch.float64)
    assert expected_calibration_error(confident, torch.tensor([0, 0, 0, 1] * 2)) == pytest.approx(0.0)
    # always right at confidence 0.6: the gap is 0.4
    assert expected_calibration_error(torch.tensor([[0.6, 0.4]] * 5), torch.zeros(5, dtype=torch.long)) == (
        pytest.approx(0.4)
    )


def test_bins_are_open_on_the_left():
    probs = torch.tensor([[0.5, 0.5], [0.5 + 1e-9, 0.5 - 1e-9], [1.0, 0.0]], dtype=torch.float64)
    bins = calibration_bins(probs, torch.tensor([0, 0, 0]), num_bins=2)
    assert bins["count"].tolist() == [1.0, 2.0]  # 0.5 in (0, 0.5]; 0.5 + 1e-9 and 1.0 in (0.5, 1]


def test_empty_and_bad_input():
    assert expected_calibration_error(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)) == 0.0
    with pytest.raises(ValueError, match="num_bins must be a positive int, got 0"):
        expected_calibration_error(torch.rand(2, 2), torch.zeros(2, dtype=torch.long), num_bins=0)
    with pytest.raises(ValueError, match=r"probs must be a float tensor \(N, C\) with C >= 2"):
        expected_calibration_error(torch.rand(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target must be an integer tensor \(N,\) = \(2,\)"):
        expected_calibration_error(torch.rand(2, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="probs must hold probabilities"):
        expected_calibration_error(torch.randn(2, 2) * 5, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target must hold labels in \[0, 2\)"):
        expected_calibration_error(torch.rand(2, 2), torch.tensor([0, 2]))


def test_reliability_diagram_writes_a_png(tmp_path):
    probs, target = _sample(5, 200, 3, 3.0)
    path = plots.plot_reliability(probs, target, tmp_path / "fig" / "reliability.png", title="phantoms")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- seed 002 figure 4.3
@pytest.mark.parametrize("scheme", CLASS_WEIGHT_SCHEMES[:4])
def test_weight_functions_normalise_to_class_weights(scheme):
    fractions = np.array([0.83975, 0.00126, 0.10308, 0.01855, 0.00551, 0.00103, 0.03081])
    fractions = fractions / fractions.sum()
    raw = weight_function(scheme, fractions, num_classes=len(fractions))
    np.testing.assert_allclose((raw / raw.sum()).numpy(), class_weights(fractions, scheme).numpy(), rtol=1e-6)


def test_foreground_weight_functions_normalise_to_class_weights():
    fractions = np.array([0.83975, 0.00126, 0.10308, 0.01855, 0.00551, 0.00103, 0.03081])
    fractions = fractions / fractions.sum()
    fg = weight_function("exp_decreasing_fg", fractions[1:], background_fraction=fractions[0]).numpy()
    raw5 = np.concatenate([[math.exp(-math.e * fractions[0])], fg])
    np.testing.assert_allclose(raw5 / raw5.sum(), class_weights(fractions, "exp_decreasing_fg").numpy(), rtol=1e-6)
    raw6 = np.concatenate([[0.0], fg])
    np.testing.assert_allclose(raw6 / raw6.sum(), class_weights(fractions, "exp_decreasing_fg_nobg").numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="needs background_fraction in"):
        weight_function("exp_decreasing_fg", [0.1])
    with pytest.raises(ValueError, match=r"fraction must hold values in \[0, 1\]"):
        weight_function("inverse", [1.5])


def test_figure_4_3_writes_a_png(tmp_path):
    path = plots.plot_weight_functions(tmp_path / "fig43.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
