"""Tests for the embedded-default phantoms (``medbalance.data.phantoms``)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medbalance.data import phantoms
from medbalance.data.phantoms import (
    CONIC_CLASS_NAMES,
    CONIC_FRACTIONS,
    LONGTAIL_PATTERNS,
    PhantomSet,
    intraclass_phantoms,
    longtail_counts,
    longtail_phantoms,
    nuclei_phantoms,
)

GENERATORS = {
    "intraclass": lambda n, size, seed: intraclass_phantoms(n, size=size, seed=seed),
    "nuclei": lambda n, size, seed: nuclei_phantoms(n, size=size, seed=seed),
    "longtail": lambda n, size, seed: longtail_phantoms([n - n // 3, n // 3], size=size, seed=seed),
}


def _assert_same(a: PhantomSet, b: PhantomSet) -> None:
    assert a.images.tobytes() == b.images.tobytes()
    assert a.target.tobytes() == b.target.tobytes()
    assert a.class_names == b.class_names
    assert (a.regions is None) == (b.regions is None)
    if a.regions is not None:
        assert a.regions.tobytes() == b.regions.tobytes()


# ----------------------------------------------------------------------------- common contract


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("size", [32, (40, 56)])
def test_shapes_dtypes_ranges(name: str, size: int | tuple[int, int]) -> None:
    ps = GENERATORS[name](6, size, 0)
    h, w = (size, size) if isinstance(size, int) else size
    c_in = 3 if name == "nuclei" else 1
    assert len(ps) == 6
    assert ps.images.shape == (6, c_in, h, w) and ps.images.dtype == np.float32
    assert 0.0 <= ps.images.min() and ps.images.max() <= 1.0
    assert np.isfinite(ps.images).all()
    if name == "longtail":
        assert ps.target.shape == (6,) and ps.target.dtype == np.int64
    else:
        assert ps.target.shape == (6, h, w) and ps.target.dtype == np.uint8
    assert ps.target.min() >= 0 and ps.target.max() < len(ps.class_names)
    assert (ps.regions is not None) == (name == "intraclass")


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_deterministic_in_seed(name: str) -> None:
    make = GENERATORS[name]
    _assert_same(make(6, 32, 7), make(6, 32, 7))
    assert make(6, 32, 7).images.tobytes() != make(6, 32, 8).images.tobytes()


@pytest.mark.parametrize("name", ["intraclass", "nuclei"])
def test_prefix_property(name: str) -> None:
    # 70 images span two internal chunks: image i must depend only on (seed, i).
    make = GENERATORS[name]
    small, large = make(5, 32, 3), make(70, 32, 3)
    assert small.images.tobytes() == large.images[:5].tobytes()
    assert small.target.tobytes() == large.target[:5].tobytes()


def test_empty_set() -> None:
    ps = intraclass_phantoms(0, size=16)
    assert len(ps) == 0 and ps.images.shape == (0, 1, 16, 16) and ps.regions.shape == (0, 16, 16)
    assert nuclei_phantoms(0, size=16).images.shape == (0, 3, 16, 16)


def test_module_is_numpy_only() -> None:
    tree = ast.parse(Path(phantoms.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
    assert roots <= {"__future__", "collections", "dataclasses", "functools", "numpy"}


# ----------------------------------------------------------------------------- (a) intra-class


def test_intraclass_regions_partition_the_target() -> None:
    ps = intraclass_phantoms(8, size=48, seed=1)
    assert ps.class_names == ("background", "target")
    assert set(np.unique(ps.target)) == {0, 1}
    assert set(np.unique(ps.regions)) == {0, 1, 2}
    np.testing.assert_array_equal(ps.regions > 0, ps.target == 1)
    assert ps.regions.dtype == np.uint8


def test_intraclass_minority_fraction_and_contrast() -> None:
    ps = intraclass_phantoms(200, size=64, seed=0)
    img, reg = ps.images[:, 0], ps.regions
    fraction = (reg == 2).sum((1, 2)) / (reg > 0).sum((1, 2))
    # docs/phantoms.md: about 20% of the target on average, 10-25% documented range.
    assert 0.10 <= fraction.mean() <= 0.25
    assert (fraction > 0).all()

    def mean_of(k: int) -> np.ndarray:
        return np.array([i[r == k].mean() for i, r in zip(img, reg)])

    bg, majority, minority = mean_of(0), mean_of(1), mean_of(2)
    assert (majority - bg).mean() > 0.25  # the majority is clearly visible
    # The dropout keeps only a small part of the contrast (minority_contrast=0.1, then blurred).
    ratio = (minority - bg) / (majority - bg)
    assert np.median(ratio) < 0.35
    assert (ratio < 0.6).mean() > 0.95


def test_intraclass_minority_contrast_parameter() -> None:
    full = intraclass_phantoms(20, size=48, seed=2, minority_contrast=1.0)
    faded = intraclass_phantoms(20, size=48, seed=2, minority_contrast=0.0)
    np.testing.assert_array_equal(full.regions, faded.regions)
    m = full.regions == 2
    assert faded.images[:, 0][m].mean() < full.images[:, 0][m].mean() - 0.2


def test_intraclass_sector_controls_minority_size() -> None:
    small = intraclass_phantoms(30, size=48, minority_sector=(0.1, 0.1), minority_band=0.2)
    large = intraclass_phantoms(30, size=48, minority_sector=(0.5, 0.5), minority_band=0.4)
    assert (small.regions == 2).sum() * 3 < (large.regions == 2).sum()


# ----------------------------------------------------------------------------- (b) nuclei


@pytest.fixture(scope="module")
def nuclei300() -> PhantomSet:
    return nuclei_phantoms(300, size=128, seed=0)


def test_nuclei_class_fractions_match_conic(nuclei300: PhantomSet) -> None:
    assert nuclei300.class_names == CONIC_CLASS_NAMES
    measured = np.bincount(nuclei300.target.ravel(), minlength=7) / nuclei300.target.size
    assert abs(measured[0] - CONIC_FRACTIONS[0]) < 0.03
    for c in range(1, 7):
        assert measured[c] > 0, CONIC_CLASS_NAMES[c]
        assert abs(measured[c] / CONIC_FRACTIONS[c] - 1) < 0.35, (CONIC_CLASS_NAMES[c], measured[c])


def test_nuclei_classes_differ_in_look(nuclei300: PhantomSet) -> None:
    rgb = nuclei300.images.transpose(0, 2, 3, 1)
    t = nuclei300.target
    mean = {c: rgb[t == c].mean(0) for c in range(7)}
    assert mean[0].sum() > mean[2].sum() > mean[3].sum()  # pink stroma > pale epithelial > dense lymphocyte
    assert mean[5][0] - mean[5][2] > mean[2][0] - mean[2][2]  # eosinophil redder than epithelial


def test_nuclei_sizes_and_elongation(nuclei300: PhantomSet) -> None:
    objects = {c: [o for img in nuclei300.target[:30] for o in _components(img == c)] for c in (2, 3, 6)}
    area = {c: np.median([len(ys) for ys, _ in objects[c]]) for c in objects}
    assert area[2] > 1.5 * area[3]  # epithelial nuclei are larger than lymphocytes
    elongation = []
    for ys, xs in objects[6]:
        if len(ys) >= 20:  # skip nuclei cut by the border
            ev = np.linalg.eigvalsh(np.cov(np.stack([ys, xs]).astype(float)))
            elongation.append(np.sqrt(ev[1] / ev[0]))
    assert np.median(elongation) > 2.5  # connective nuclei are spindles


def _components(mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """4-connected components by flood fill (test helper; masks are small)."""
    seen = np.zeros_like(mask)
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack, pts = [(y0, x0)], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            pts.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        arr = np.array(pts)
        out.append((arr[:, 0], arr[:, 1]))
    return out


# ----------------------------------------------------------------------------- (c) long tail


def test_longtail_counts_known_values() -> None:
    assert longtail_counts(5, 1000, 100) == [1000, 316, 100, 32, 10]
    assert longtail_counts(10, 5000, 100) == [5000, 2997, 1797, 1077, 646, 387, 232, 139, 83, 50]
    assert longtail_counts(2, 100, 10) == [100, 10]
    assert longtail_counts(2, 100, 50.0) == [100, 2]
    assert longtail_counts(4, 7, 1) == [7, 7, 7, 7]
    assert longtail_counts(3, 5, 1000) == [5, 1, 1]  # at least one image per class


@settings(max_examples=25, deadline=None)
@given(
    c=st.integers(2, 20),
    n_max=st.integers(1, 10_000),
    ir=st.floats(1.0, 500.0, allow_nan=False),
)
def test_longtail_counts_properties(c: int, n_max: int, ir: float) -> None:
    counts = longtail_counts(c, n_max, ir)
    assert len(counts) == c and counts[0] == n_max
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    assert min(counts) >= 1
    expected = n_max * ir ** (-np.arange(c) / (c - 1))
    assert np.all(np.abs(np.array(counts) - np.maximum(1, expected)) <= 0.5 + 1e-9)


def test_longtail_phantoms_labels() -> None:
    counts = longtail_counts(len(LONGTAIL_PATTERNS), 30, 10)
    ps = longtail_phantoms(counts, size=24, seed=5)
    assert ps.class_names == LONGTAIL_PATTERNS
    assert np.bincount(ps.target, minlength=len(counts)).tolist() == counts
    assert ps.target.dtype == np.int64
    assert not np.all(np.diff(ps.target) >= 0)  # shuffled
    balanced = longtail_phantoms([4] * 3, size=24, seed=6)
    assert np.bincount(balanced.target).tolist() == [4, 4, 4]
    assert balanced.class_names == LONGTAIL_PATTERNS[:3]


def test_longtail_patterns_are_learnable() -> None:
    # A nearest-centroid classifier on a rotation-tolerant spectrum feature beats chance (1/12)
    # by far, while the task stays far from trivial for it (it reaches ~0.4).
    train = longtail_phantoms([40] * len(LONGTAIL_PATTERNS), size=32, seed=1)
    test = longtail_phantoms([20] * len(LONGTAIL_PATTERNS), size=32, seed=2)
    f_train, f_test = _radial_profiles(train.images[:, 0]), _radial_profiles(test.images[:, 0])
    centroids = np.stack([f_train[train.target == c].mean(0) for c in range(len(LONGTAIL_PATTERNS))])
    pred = np.argmin(((f_test[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == test.target).mean() > 3 / len(LONGTAIL_PATTERNS)


def _radial_profiles(images: np.ndarray) -> np.ndarray:
    """Per-image radially summed amplitude spectrum, unit norm (rotation- and shift-tolerant)."""
    spec = np.abs(np.fft.fftshift(np.fft.fft2(images - images.mean((1, 2), keepdims=True)), axes=(1, 2)))
    h, w = images.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - h // 2, xx - w // 2).astype(int)
    f = np.stack([np.bincount(r.ravel(), s.ravel())[: h // 2] for s in spec])
    return f / np.linalg.norm(f, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: intraclass_phantoms(-1), "n must be"),
        (lambda: intraclass_phantoms(2.5), "n must be"),
        (lambda: intraclass_phantoms(2, size=8), "size must be"),
        (lambda: intraclass_phantoms(2, size=(32, 32, 3)), "size must be"),
        (lambda: intraclass_phantoms(2, seed=-1), "seed must be"),
        (lambda: intraclass_phantoms(2, minority_contrast=1.5), "minority_contrast must be"),
        (lambda: intraclass_phantoms(2, minority_sector=(0.5, 0.2)), "minority_sector must be"),
        (lambda: intraclass_phantoms(2, minority_band=0.0), "minority_band must be"),
        (lambda: intraclass_phantoms(2, speckle=-0.1), "speckle must be"),
        (lambda: nuclei_phantoms(2, size=0), "size must be"),
        (lambda: nuclei_phantoms(True), "n must be"),
        (lambda: longtail_counts(1, 10, 10), "num_classes must be"),
        (lambda: longtail_counts(3, 0, 10), "n_max must be"),
        (lambda: longtail_counts(3, 10, 0.5), "imbalance_ratio must be"),
        (lambda: longtail_counts(3, 10, float("nan")), "imbalance_ratio must be"),
        (lambda: longtail_phantoms([5]), "counts must have 2 to 12"),
        (lambda: longtail_phantoms([1] * 13), "counts must have 2 to 12"),
        (lambda: longtail_phantoms([3, -1]), "counts must be non-negative"),
        (lambda: longtail_phantoms([3, 2], size=4), "size must be"),
    ],
)
def test_bad_arguments_raise(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
