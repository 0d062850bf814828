"""Surface metrics (HD95, normalised surface Dice) against MONAI's on random masks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from monai.metrics import compute_hausdorff_distance, compute_surface_dice

from medbalance.metrics import hausdorff_distance, normalized_surface_dice, surface_distances
from medbalance.metrics import surface as surface_module


def monai_scores(pred: np.ndarray, target: np.ndarray, spacing, tolerance: float) -> tuple[float, float]:
    """MONAI's HD95 and NSD (pixel-counted borders) of one pair of boolean masks."""
    p = torch.as_tensor(pred, dtype=torch.float32)[None, None]
    t = torch.as_tensor(target, dtype=torch.float32)[None, None]
    spacing = spacing if spacing is None or np.ndim(spacing) == 0 else list(spacing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns on empty masks and deprecations
        hd = compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=spacing)
        nsd = compute_surface_dice(p, t, [tolerance], include_background=True, spacing=spacing)
    return float(hd), float(nsd)


def random_mask(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    if kind == "empty":
        return np.zeros(shape, bool)
    if kind == "noise":
        return rng.random(shape) < rng.uniform(0.05, 0.9)
    mask = np.zeros(shape, bool)  # a few boxes: smooth borders, sparse in their bounding box
    for _ in range(rng.integers(1, 4)):
        lo = [rng.integers(0, s) for s in shape]
        hi = [rng.integers(a + 1, s + 1) for a, s in zip(lo, shape)]
        mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


masks = st.tuples(
    st.sampled_from([(13, 11), (40, 37), (96, 80), (7, 9, 6), (16, 12, 14)]),
    st.sampled_from(["noise", "boxes", "empty"]),
    st.sampled_from(["noise", "boxes", "empty"]),
    st.integers(0, 2**32 - 1),
)
spacings = st.one_of(
    st.none(),
    st.floats(0.2, 3.0),
    st.lists(st.floats(0.2, 3.0), min_size=3, max_size=3),
)


def assert_close_or_both_nan(ours: float, ref: float, rel: float = 1e-5) -> None:
    if math.isnan(ref):
        assert math.isnan(ours)
    else:
        assert ours == pytest.approx(ref, rel=rel, abs=1e-6)


@settings(max_examples=50, deadline=None)
@given(masks, spacings, st.floats(0.0, 4.0))
def test_hd95_and_nsd_match_monai(case, spacing, tolerance):
    shape, pred_kind, target_kind, seed = case
    rng = np.random.default_rng(seed)
    pred, target = random_mask(rng, shape, pred_kind), random_mask(rng, shape, target_kind)
    if isinstance(spacing, list):
        spacing = spacing[: len(shape)]
    # MONAI compares float32 distances with the tolerance: a distance within float32 rounding of
    # it, but not equal, may count on one side only (e.g. 2.0 vs a tolerance of 1.9999999999999996)
    gaps = np.abs(np.concatenate(surface_distances(pred, target, spacing=spacing)) - tolerance)
    assume(not np.any((gaps > 0) & (gaps <= 1e-6 * max(tolerance, 1e-6))))
    ref_hd, ref_nsd = monai_scores(pred, target, spacing, tolerance)
    hd = hausdorff_distance(pred, target, spacing=spacing)
    nsd = normalized_surface_dice(pred, target, tolerance=tolerance, spacing=spacing)
    # with an empty side both are NaN (MONAI's 95th percentile interpolates between infinities);
    # MONAI's torch.quantile runs in float32, whose rounded position 0.95 (n - 1) moves the
    # percentile by up to ~1e-5 relative between two far-apart distances (tests/test_cases.py)
    assert_close_or_both_nan(hd, ref_hd, rel=1e-4)
    assert math.isnan(hd) == (not pred.any() or not target.any())
    assert_close_or_both_nan(nsd, ref_nsd)


def disk(shape: tuple[int, ...], centre: tuple[float, ...], radius: float) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


@pytest.mark.parametrize("use_tree", [True, False])
def test_both_distance_paths_match_monai(monkeypatch, use_tree):
    """A smooth disk in a large image goes through the KD-tree, ragged noise through the distance transform."""
    rng = np.random.default_rng(3)
    if use_tree:
        pred, target = disk((300, 280), (150, 140), 90), disk((300, 280), (146, 147), 85)
    else:
        pred, target = rng.random((30, 24)) < 0.5, rng.random((30, 24)) < 0.5
    calls = []
    real_tree = surface_module.KDTree
    monkeypatch.setattr(surface_module, "KDTree", lambda *a, **k: calls.append(1) or real_tree(*a, **k))
    spacing = (0.7, 1.9)
    ref_hd, ref_nsd = monai_scores(pred, target, spacing, 1.5)
    assert hausdorff_distance(pred, target, spacing=spacing) == pytest.approx(ref_hd, rel=1e-5)
    assert normalized_surface_dice(pred, target, tolerance=1.5, spacing=spacing) == pytest.approx(ref_nsd, rel=1e-5)
    assert bool(calls) == use_tree


def test_hand_computed_anisotropic_square():
    target = np.zeros((5, 5), bool)
    target[1:4, 1:4] = True
    pred = np.roll(target, 1, axis=1)  # the same 3x3 square one column to the right
    # spacing (1, 2): a column step is 2 units. Borders are the 8 outer pixels of each square.
    # pred border (1,4), (2,4), (3,4) are 2 from target (., 3); (2,2) is 1 from (1,2) above it.
    d_pred, d_target = surface_distances(pred, target, spacing=(1.0, 2.0))
    np.testing.assert_allclose(d_pred, [0, 0, 2, 1, 2, 0, 0, 2])
    np.testing.assert_allclose(d_target, [2, 0, 0, 2, 1, 2, 0, 0])
    assert hausdorff_distance(pred, target, spacing=(1.0, 2.0), percentile=100) == 2.0
    # 95th percentile of [0,0,0,0,0,1,2,2] (sorted): index 6.65 -> 2.0
    assert hausdorff_distance(pred, target, spacing=(1.0, 2.0)) == 2.0
    # medians: pred side 0 (index 3.5 of the sorted list), target side [0,0,0,0,1,2,2,2] -> 0.5
    assert hausdorff_distance(pred, target, spacing=(1.0, 2.0), percentile=50) == 0.5
    # within 1: 5 of 8 on each side
    assert normalized_surface_dice(pred, target, tolerance=1.0, spacing=(1.0, 2.0)) == 10 / 16
    assert normalized_surface_dice(pred, target, tolerance=2.0, spacing=(1.0, 2.0)) == 1.0


def test_empty_masks_stated_results():
    empty, square = np.zeros((6, 6), bool), np.zeros((6, 6), bool)
    square[2:4, 2:4] = True  # 4 border pixels
    d_pred, d_target = surface_distances(empty, empty)
    assert d_pred.size == d_target.size == 0
    assert math.isnan(hausdorff_distance(empty, empty))
    assert math.isnan(normalized_surface_dice(empty, empty, tolerance=1.0))
    d_pred, d_target = surface_distances(square, empty)
    assert d_pred.tolist() == [math.inf] * 4 and d_target.size == 0
    d_pred, d_target = surface_distances(empty, square)
    assert d_pred.size == 0 and d_target.tolist() == [math.inf] * 4
    for pred, target in ((square, empty), (empty, square)):
        assert math.isnan(hausdorff_distance(pred, target))
        assert normalized_surface_dice(pred, target, tolerance=100.0) == 0.0


@settings(max_examples=30, deadline=None)
@given(masks, st.integers(0, 5), st.integers(0, 5))
def test_padding_does_not_change_distances(case, before, after):
    """The bounding-box crop is invisible: zero padding leaves every distance unchanged."""
    shape, pred_kind, target_kind, seed = case
    rng = np.random.default_rng(seed)
    pred, target = random_mask(rng, shape, pred_kind), random_mask(rng, shape, target_kind)
    spacing = (0.5, 1.5, 2.5)[: len(shape)]
    padded = [np.pad(m, [(before, after)] * m.ndim) for m in (pred, target)]
    for ours, ref in zip(surface_distances(*padded, spacing=spacing), surface_distances(pred, target, spacing=spacing)):
        np.testing.assert_array_equal(ours, ref)


def test_torch_masks_and_scalar_spacing():
    rng = np.random.default_rng(0)
    pred, target = rng.random((8, 7, 6)) < 0.4, rng.random((8, 7, 6)) < 0.4
    expected = hausdorff_distance(pred, target, spacing=(1.5, 1.5, 1.5))
    assert hausdorff_distance(torch.from_numpy(pred), torch.from_numpy(target), spacing=1.5) == expected


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: surface_distances(m.astype(np.uint8), m), "pred must be a boolean mask"),
        (lambda m: surface_distances(m, m[:, :3]), "same shape"),
        (lambda m: surface_distances(m[0], m[0]), r"2D \(H, W\) or 3D"),
        (lambda m: surface_distances(m, m, spacing=(1.0, 2.0, 3.0)), "spacing must be one number or 2 values"),
        (lambda m: surface_distances(m, m, spacing=(1.0, 0.0)), "spacing"),
        (lambda m: hausdorff_distance(m, m, percentile=101), "percentile must be"),
        (lambda m: normalized_surface_dice(m, m, tolerance=-1.0), "tolerance must be"),
        (lambda m: normalized_surface_dice(m, m, tolerance=math.inf), "tolerance must be"),
    ],
)
def test_invalid_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call(np.ones((4, 4), bool))
