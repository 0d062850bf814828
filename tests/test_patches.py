"""Patch sampling: class locations, exact crops and padding, determinism, and the sampling distributions."""

from __future__ import annotations

import pickle
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from torch.utils.data import DataLoader

from medbalance.data.patches import PatchDataset, _ItemDraws, class_locations, target_dtype

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _dataset(images, targets, **kwargs) -> PatchDataset:
    options = {"patch_size": 4, "num_classes": 3, "batch_size": 4, "samples_per_epoch": 8}
    return PatchDataset(images, targets, **{**options, **kwargs})


def _ramp(shape, channels=1) -> np.ndarray:
    """An image whose every voxel value is unique, so a crop identifies its position."""
    return np.arange(channels * np.prod(shape), dtype=np.float32).reshape(channels, *shape)


def _window(array: np.ndarray, start, patch, fill) -> np.ndarray:
    """Reference crop: pad the array on every side by the patch size, then slice."""
    spatial = array.ndim - len(patch)
    pad = [(0, 0)] * spatial + [(p, p) for p in patch]
    padded = np.pad(array, pad, constant_values=fill)
    return padded[(Ellipsis, *(slice(a + p, a + 2 * p) for a, p in zip(start, patch)))]


# ----------------------------------------------------------------------------- class_locations


@st.composite
def _label_maps(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=ndim, max_size=ndim)))
    num_classes = draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**16))
    target = np.random.default_rng(seed).integers(0, num_classes, shape).astype(np.uint8)
    return target, num_classes


@SETTINGS
@given(_label_maps(), st.sampled_from([None, 0, 1, 255]))
def test_class_locations_list_every_foreground_voxel(case, ignore_index):
    target, num_classes = case
    if ignore_index == 255:
        target = np.where(target == num_classes - 1, 255, target).astype(np.uint8)
    found = class_locations(target, num_classes, ignore_index=ignore_index)
    expected = {c for c in range(1, num_classes) if c != ignore_index and (target == c).any()}
    assert set(found) == expected
    for c, coords in found.items():
        assert coords.dtype == np.int32 and coords.shape[1] == target.ndim
        np.testing.assert_array_equal(coords, np.argwhere(target == c))


def test_class_locations_subsample_is_seeded_and_without_repeats():
    target = np.zeros((30, 40, 50), np.uint8)
    target[5:25, 10:30, 10:40] = 2  # 12,000 voxels
    target[0, 0, :7] = 1
    first = class_locations(target, 3, max_per_class=1000, seed=3)
    assert first[1].shape == (7, 3) and first[2].shape == (1000, 3)
    assert len({tuple(x) for x in first[2]}) == 1000
    assert (target[tuple(first[2].T)] == 2).all()
    np.testing.assert_array_equal(first[2], class_locations(target, 3, max_per_class=1000, seed=3)[2])
    assert not np.array_equal(first[2], class_locations(target, 3, max_per_class=1000, seed=4)[2])


def test_class_locations_subsample_is_uniform():
    # Each of 100 voxels is kept with probability 10/100; over 400 seeds the counts follow Binomial(400, 0.1).
    target = np.ones(100, np.uint8)
    kept = np.concatenate([class_locations(target, 2, max_per_class=10, seed=s)[1][:, 0] for s in range(400)])
    statistic = (((np.bincount(kept, minlength=100) - 40.0) ** 2) / 40.0).sum()
    assert statistic < stats.chi2.ppf(1 - 1e-6, 99)


def test_class_locations_reject_bad_labels_and_arguments():
    with pytest.raises(ValueError, match="target values"):
        class_locations(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="target values"):
        class_locations(np.array([0, -1]), 3)
    with pytest.raises(ValueError, match="integers"):
        class_locations(np.array([0.0, 1.0]), 3)
    with pytest.raises(ValueError, match="num_classes"):
        class_locations(np.array([0, 1]), 1)
    with pytest.raises(ValueError, match="max_per_class"):
        class_locations(np.array([0, 1]), 2, max_per_class=0)
    assert class_locations(np.array([0, -100, 1]), 2, ignore_index=-100)[1].tolist() == [[2]]
    assert class_locations(np.array([[False, True]]), 2)[1].tolist() == [[0, 1]]


# ----------------------------------------------------------------------------- crops and padding


def test_crop_content_matches_the_planned_window_2d_mixed_sizes():
    shapes = [(9, 11), (20, 6), (5, 5)]
    images = [_ramp(s, channels=2).astype(np.int16) for s in shapes]
    targets = [np.random.default_rng(i).integers(0, 3, s).astype(np.uint8) for i, s in enumerate(shapes)]
    instances = [np.arange(np.prod(s), dtype=np.uint16).reshape(s) + 1 for s in shapes]
    ds = _dataset(images, targets, patch_size=(6, 7), sampler="uniform", extras={"instance": instances})
    seen = set()
    for k in range(200):
        plan, item = ds.plan(k), ds[k]
        seen.add(plan.case)
        assert item["index"].item() == plan.case and item["index"].dtype == torch.int64
        assert item["image"].dtype == torch.float32 and tuple(item["image"].shape) == (2, 6, 7)
        assert item["target"].dtype == torch.uint8 and item["instance"].dtype == torch.int64  # 3 classes: uint8
        for name, array, fill in [("image", images, 0), ("target", targets, 0), ("instance", instances, 0)]:
            np.testing.assert_array_equal(item[name].numpy(), _window(array[plan.case], plan.start, (6, 7), fill))
        for a, s, p in zip(plan.start, shapes[plan.case], (6, 7)):
            # Long axes: the window stays inside; short axes: the window covers the whole axis.
            assert (0 <= a <= s - p) if s >= p else (s - p <= a <= 0)
    assert seen == {0, 1, 2}


@pytest.mark.parametrize(
    ("num_classes", "ignore_index", "stored", "expected"),
    [
        (2, None, np.int64, np.uint8),
        (3, 255, np.uint8, np.uint8),
        (256, None, np.int32, np.uint8),
        (257, None, np.int64, np.int16),
        (5, -100, np.int64, np.int16),
        (40_000, None, np.int64, np.int64),
    ],
)
def test_targets_are_cut_in_the_smallest_dtype_that_holds_every_label(num_classes, ignore_index, stored, expected):
    assert target_dtype(num_classes, ignore_index) == expected
    rng = np.random.default_rng(0)
    labels = [0, num_classes - 1] + ([] if ignore_index is None else [ignore_index])
    target = rng.choice(labels, (12, 10)).astype(stored)  # the extremes: a wrong dtype would wrap them
    ds = _dataset([_ramp((12, 10))], [target], num_classes=num_classes, ignore_index=ignore_index, patch_size=(7, 10))
    assert ds.target_dtype == expected
    for k in range(20):
        plan, item = ds.plan(k), ds[k]
        assert item["target"].numpy().dtype == expected
        np.testing.assert_array_equal(item["target"].long().numpy(), _window(target, plan.start, (7, 10), 0))


@pytest.mark.parametrize("dims", [2, 3])
def test_a_batch_is_its_items_collated(dims):
    """``batch(ks)`` writes straight into the batch arrays; it must equal ``default_collate`` of the
    items, padding (short cases), normalisation, extras and ignore_index fill included."""
    from torch.utils.data import default_collate

    rng = np.random.default_rng(3)
    shapes = [(9, 11), (4, 6), (12, 12)] if dims == 2 else [(5, 9, 7), (3, 4, 8), (6, 6, 6)]
    images = [rng.integers(-50, 50, (2, *s)).astype(np.int16) for s in shapes]
    targets = [rng.choice([0, 1, 2, 255], s).astype(np.uint8) for s in shapes]
    extras = {"instance": [rng.integers(0, 9, s).astype(np.uint16) for s in shapes]}
    extras["weight"] = [rng.random(s).astype(np.float32) for s in shapes]
    patch = (6, 7) if dims == 2 else (4, 5, 6)
    for normalize in (None, _Shift()):
        ds = _dataset(images, targets, patch_size=patch, ignore_index=255, normalize=normalize, extras=extras)
        ks = [3, 17, 4, 40, 41]
        batch, expected = ds.batch(ks), default_collate([ds[k] for k in ks])
        assert batch.keys() == expected.keys()
        for key in batch:
            assert batch[key].dtype == expected[key].dtype and torch.equal(batch[key], expected[key]), key
        # and the items themselves are the planned windows
        for k in ks:
            plan, item = ds.plan(k), ds[k]
            scaled = images[plan.case].astype(np.float32) + (0 if normalize is None else 5)
            np.testing.assert_array_equal(item["image"].numpy(), _window(scaled, plan.start, patch, 0))
            np.testing.assert_array_equal(item["target"].numpy(), _window(targets[plan.case], plan.start, patch, 255))
            for name in extras:
                np.testing.assert_array_equal(
                    item[name].numpy(), _window(extras[name][plan.case], plan.start, patch, 0)
                )
    with pytest.raises(ValueError, match="ks must name at least one item"):
        ds.batch([])


class _Shift:
    def __call__(self, case, patch):
        return patch + 5


def test_uniform_positions_cover_every_valid_start():
    ds = _dataset([_ramp((6, 9))], [np.zeros((6, 9), np.uint8)], patch_size=(4, 4), sampler="uniform")
    starts = Counter(ds.plan(k).start for k in range(1500))
    assert set(starts) == {(a, b) for a in range(3) for b in range(6)}
    assert stats.chisquare(list(starts.values())).pvalue > 1e-6


def test_padding_values_and_normalize_sees_only_image_voxels():
    seen_shapes = []

    def normalize(case, patch):
        seen_shapes.append(patch.shape)
        return patch + 5

    image, target = _ramp((3, 10)), np.ones((3, 10), np.uint8)
    for ignore_index, fill in [(None, 0), (255, 255)]:
        options = {"patch_size": (8, 4), "sampler": "uniform", "normalize": normalize}
        ds = _dataset([image], [target], ignore_index=ignore_index, **options)
        for k in range(30):
            plan, item = ds.plan(k), ds[k]
            np.testing.assert_array_equal(item["image"].numpy(), _window(image + 5, plan.start, (8, 4), 0))
            np.testing.assert_array_equal(item["target"].numpy(), _window(target, plan.start, (8, 4), fill))
            assert seen_shapes[-1] == (1, 3, 4)


def test_a_centred_patch_by_hand():
    # One vessel voxel at (1, 8) of a 10 x 10 case, patch 4 x 4: centred start (-1, 6) shifted inside to (0, 6).
    target = np.zeros((10, 10), np.uint8)
    target[1, 8] = 1
    image = _ramp((10, 10))
    ds = _dataset([image], [target], num_classes=2, batch_size=1, foreground_fraction=1.0)
    assert ds.plan(0) == (0, (0, 6), 1, (1, 8))
    item = ds[0]
    assert item["target"].nonzero().tolist() == [[1, 2]]
    assert item["image"][0, 0].tolist() == [6.0, 7.0, 8.0, 9.0] and item["image"][0, 3, 0].item() == 36.0


def test_3d_patches_and_a_case_smaller_than_the_patch():
    shapes = [(10, 12, 9), (3, 4, 5)]
    images = [_ramp(s).astype(np.uint8 if i else np.float32) for i, s in enumerate(shapes)]
    targets = [np.zeros(s, np.uint8) for s in shapes]
    targets[0][7, 1, 8] = 1
    targets[1][2, 3, 0] = 2
    ds = _dataset(images, targets, patch_size=(6, 6, 6), batch_size=2, foreground_fraction=0.5)
    for k in range(60):
        plan, item = ds.plan(k), ds[k]
        assert tuple(item["image"].shape) == (1, 6, 6, 6) and tuple(item["target"].shape) == (6, 6, 6)
        np.testing.assert_array_equal(item["image"].numpy(), _window(images[plan.case], plan.start, (6,) * 3, 0))
        np.testing.assert_array_equal(item["target"].numpy(), _window(targets[plan.case], plan.start, (6,) * 3, 0))
        if ds.is_forced(k):
            assert plan.location == {1: (7, 1, 8), 2: (2, 3, 0)}[plan.label]
            # Centred, then shifted to stay inside (long axes) or to cover the axis (short axes).
            expected = [np.clip(x - 3, min(0, s - 6), max(0, s - 6)) for x, s in zip(plan.location, shapes[plan.case])]
            assert list(plan.start) == expected


# ----------------------------------------------------------------------------- determinism


def _tiny():
    rng = np.random.default_rng(0)
    shapes = [(12, 10), (7, 15), (9, 9)]
    images = [rng.integers(0, 255, (1, *s)).astype(np.uint8) for s in shapes]
    targets = [rng.integers(0, 3, s).astype(np.uint8) for s in shapes]
    return images, targets


def test_items_are_a_deterministic_function_of_seed_and_k():
    images, targets = _tiny()
    a = _dataset(images, targets, patch_size=8, seed=7)
    b = pickle.loads(pickle.dumps(_dataset(images, targets, patch_size=8, seed=7)))
    for k in [0, 3, 8, 1234, 10**9]:
        x, y = a[k], b[k]
        assert x.keys() == y.keys() and all(torch.equal(x[n], y[n]) for n in x)
    other = _dataset(images, targets, patch_size=8, seed=8)
    assert any(a.plan(k) != other.plan(k) for k in range(8))


def test_item_draws_are_splitmix64():
    """The per-item generator against the reference outputs of Vigna's splitmix64.c (state 1234567)."""
    draws = _ItemDraws(0, 0)
    draws.state = 1234567
    assert [draws.next64() for _ in range(5)] == [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
        4593380528125082431,
        16408922859458223821,
    ]


def test_item_draws_are_uniform_and_independent_across_items():
    """Chi-square / KS tests of the draws a plan takes: first and second draw of consecutive
    items, bounded ints (an odd bound and a large one) and floats."""
    key = int(np.random.SeedSequence(3).generate_state(1, np.uint64)[0])
    items = [_ItemDraws(key, k) for k in range(20_000)]
    first = np.array([d.below(7) for d in items])
    second = np.array([d.below(7) for d in items])
    assert stats.chisquare(np.bincount(first, minlength=7)).pvalue > 1e-4
    # consecutive items and the two draws of one item: every pair of values equally likely
    for a, b in [(first[:-1], first[1:]), (first, second)]:
        assert stats.chisquare(np.bincount(7 * a + b, minlength=49)).pvalue > 1e-4
    big = np.array([d.below(10**6 + 3) for d in items])
    assert big.min() >= 0 and big.max() < 10**6 + 3
    assert stats.kstest(big / (10**6 + 3), "uniform").pvalue > 1e-4
    floats = np.array([d.random() for d in items])
    assert floats.min() >= 0.0 and floats.max() < 1.0 and stats.kstest(floats, "uniform").pvalue > 1e-4


def test_loader_batches_do_not_depend_on_the_number_of_workers():
    images, targets = _tiny()
    ds = _dataset(images, targets, patch_size=8, sampler="rare_class", samples_per_epoch=12)
    runs = []
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=4, sampler=ds.epoch_indices(1), num_workers=workers)
        runs.append(list(loader))
    assert len(runs[0]) == 3
    for x, y in zip(*runs):
        assert all(torch.equal(x[n], y[n]) for n in ("image", "target", "index"))
    assert torch.equal(runs[0][0]["image"], torch.stack([ds[k]["image"] for k in range(12, 16)]))


# ----------------------------------------------------------------------------- sampling rules


@pytest.mark.parametrize(
    ("batch_size", "fraction", "samples"), [(16, 0.33, 64), (2, 0.33, 10), (5, 0.5, 13), (4, 0, 8)]
)
def test_forced_count_per_batch_is_exact(batch_size, fraction, samples):
    images, targets = _tiny()
    ds = _dataset(images, targets, batch_size=batch_size, foreground_fraction=fraction, samples_per_epoch=samples)
    forced = batch_size - round(batch_size * (1 - fraction))
    for epoch in range(3):
        indices = list(ds.epoch_indices(epoch))
        for b in range(0, samples, batch_size):
            batch = indices[b : b + batch_size]
            flags = [ds.is_forced(k) for k in batch]
            assert flags == [j >= batch_size - forced for j in range(len(batch))]
            # Every case has foreground, so every forced item is centred on a class.
            assert all((ds.plan(k).label > 0) == f for k, f in zip(batch, flags))
    assert not any(_dataset(images, targets, sampler="uniform").is_forced(k) for k in range(40))


@st.composite
def _datasets(draw):
    """Small cases with random class content: some cases empty, some classes in no case."""
    num_classes = draw(st.integers(2, 6))
    n = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    targets = []
    for _ in range(n):
        shape = tuple(rng.integers(3, 12, 2))
        classes = rng.choice(np.arange(1, num_classes), rng.integers(0, num_classes), replace=False)
        target = np.zeros(shape, np.uint8)
        for c in classes:
            target[rng.random(shape) < rng.uniform(0.02, 0.3)] = c
        targets.append(target)
    return targets, num_classes


def _expected_joint(ds: PatchDataset, targets) -> dict[tuple[int, int], float]:
    """P(case, class) of a forced item re-derived from the rules; class -1: a uniform patch."""
    n, nc = len(targets), ds.num_classes
    present = [[c for c in range(1, nc) if (t == c).any()] for t in targets]
    joint = {}
    if ds.sampler == "foreground":
        for i, classes in enumerate(present):
            for c in classes or [-1]:
                joint[i, c] = 1 / (n * len(classes or [-1]))
        return joint
    totals = np.bincount(np.concatenate([t.ravel() for t in targets]), minlength=nc)[1:].astype(float)
    if totals.sum() == 0:
        return {(i, -1): 1 / n for i in range(n)}
    for c in np.flatnonzero(totals) + 1:
        p = (totals[c - 1] / totals.sum()) ** -ds.power / ((totals[totals > 0] / totals.sum()) ** -ds.power).sum()
        cases = [i for i in range(n) if c in present[i]]
        for i in cases:
            joint[i, int(c)] = p / len(cases)
    return joint


@SETTINGS
@given(_datasets(), st.sampled_from(["foreground", "rare_class"]), st.sampled_from([0.0, 0.5, 1.0, 2.0]))
def test_forced_draws_follow_class_probabilities(case, sampler, power):
    targets, num_classes = case
    images = [np.zeros((1, *t.shape), np.uint8) for t in targets]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        options = {"batch_size": 1, "foreground_fraction": 1.0, "patch_size": 5}  # every item forced
        ds = _dataset(images, targets, num_classes=num_classes, sampler=sampler, power=power, **options)
        draws = 2000
        plans = [ds.plan(k) for k in range(draws)]
    expected = _expected_joint(ds, targets)
    marginal = np.zeros(num_classes)
    for (_, c), p in expected.items():
        if c > 0:
            marginal[c] += p
    np.testing.assert_allclose(ds.class_probabilities, marginal, atol=1e-12)
    observed = Counter((p.case, p.label) for p in plans)
    assert set(observed) <= set(expected)
    keys = sorted(expected)
    statistic = sum((observed[key] - draws * expected[key]) ** 2 / (draws * expected[key]) for key in keys)
    assert statistic <= stats.chi2.ppf(1 - 1e-6, max(1, len(keys) - 1))
    for p in plans:
        if p.label > 0:
            assert targets[p.case][p.location] == p.label


def test_rare_class_probabilities_on_a_known_example():
    target = np.zeros((10, 10), np.uint8)
    target[:9] = 1  # 90 voxels of class 1
    target[9] = 2  # 10 of class 2; class 3 absent everywhere
    kwargs = {"num_classes": 4, "sampler": "rare_class"}
    probabilities = {
        power: _dataset([target[None]], [target], power=power, **kwargs).class_probabilities for power in (0, 1)
    }
    np.testing.assert_allclose(probabilities[0], [0, 0.5, 0.5, 0])
    np.testing.assert_allclose(probabilities[1], [0, 0.1, 0.9, 0])  # weights 1/0.9 and 1/0.1
    assert _dataset([target[None]], [target], sampler="uniform", **{"num_classes": 4}).class_probabilities.sum() == 0


def test_forced_patches_contain_their_class_at_the_centre():
    rng = np.random.default_rng(1)
    targets = [(rng.random((40, 50)) < 0.01).astype(np.uint8) * rng.integers(1, 3, (40, 50)).astype(np.uint8)]
    targets[0][20, 25] = 2
    ds = _dataset([np.zeros((1, 40, 50), np.uint8)], targets, patch_size=(9, 10), sampler="rare_class")
    centred = 0
    for k in range(400):
        plan, item = ds.plan(k), ds[k]
        if not ds.is_forced(k):
            assert plan.label == -1
            continue
        offset = tuple(x - a for x, a in zip(plan.location, plan.start))
        assert item["target"][offset].item() == plan.label
        if all(p // 2 <= x < s - (p - p // 2) + 1 for x, s, p in zip(plan.location, (40, 50), (9, 10))):
            assert offset == (4, 5)
            centred += 1
    assert centred > 50


@pytest.mark.parametrize("sampler", ["foreground", "rare_class"])
def test_all_background_and_absent_classes_neither_crash_nor_warn(sampler):
    images = [np.ones((1, 6, 6), np.float32), np.ones((1, 3, 8), np.float32)]
    empty = [np.zeros((6, 6), np.uint8), np.zeros((3, 8), np.uint8)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = _dataset(images, empty, num_classes=5, sampler=sampler, foreground_fraction=1.0)
        assert ds.class_probabilities.tolist() == [0.0] * 5
        batch = next(iter(DataLoader(ds, batch_size=4)))
        assert all(ds.plan(k).label == -1 for k in range(20))
        # One case with class 2 only: classes 1, 3, 4 (absent from every case) are never drawn.
        some = [empty[0], np.where(np.arange(24).reshape(3, 8) % 5 == 0, 2, 0).astype(np.uint8)]
        ds = _dataset(images, some, num_classes=5, sampler=sampler, foreground_fraction=1.0)
        labels = {ds.plan(k).label for k in range(200)}
    assert batch["target"].sum() == 0
    assert labels == ({2, -1} if sampler == "foreground" else {2})
    assert ds.class_probabilities[[0, 1, 3, 4]].tolist() == [0.0] * 4


@pytest.mark.parametrize("ignore_index", [1, 255])
def test_ignore_index_is_never_a_centre(ignore_index):
    rng = np.random.default_rng(2)
    targets = [
        rng.choice(np.array([0, 1, 2, 255], np.uint8), size=(12, 12), p=[0.4, 0.3, 0.05, 0.25]) for _ in range(3)
    ]
    if ignore_index == 1:
        targets = [np.where(t == 255, 0, t).astype(np.uint8) for t in targets]
    images = [np.zeros((1, 12, 12), np.uint8)] * 3
    for sampler in ("foreground", "rare_class"):
        ds = _dataset(images, targets, sampler=sampler, ignore_index=ignore_index, foreground_fraction=1.0)
        assert ds.class_probabilities[ignore_index if ignore_index == 1 else 0] == 0
        for k in range(300):
            plan = ds.plan(k)
            assert plan.label not in (0, ignore_index) and targets[plan.case][plan.location] == plan.label
        assert set(ds.locations[0]) == {c for c in (1, 2) if c != ignore_index}


def test_precomputed_locations_give_the_same_stream_and_are_checked():
    images, targets = _tiny()
    locations = [class_locations(t, 3, seed=[0, i]) for i, t in enumerate(targets)]
    a = _dataset(images, targets, patch_size=8)
    b = _dataset(images, targets, patch_size=8, locations=locations)
    assert all(a.plan(k) == b.plan(k) for k in range(50))
    with pytest.raises(ValueError, match=r"locations\[1\]"):
        _dataset(images, targets, locations=[locations[0], {1: locations[1][1]}, locations[2]])
    with pytest.raises(ValueError, match="one entry per case"):
        _dataset(images, targets, locations=locations[:2])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sampler": "balanced"}, "sampler"),
        ({"foreground_fraction": 1.5}, "foreground_fraction"),
        ({"power": -1.0}, "power"),
        ({"patch_size": (4, 4, 4)}, "patch_size"),
        ({"patch_size": (0, 4)}, "patch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"samples_per_epoch": 0}, "samples_per_epoch"),
        ({"seed": -1}, "seed"),
        ({"num_classes": 1}, "num_classes"),
        ({"extras": {"image": [np.zeros((12, 10))] * 3}}, "extras"),
        ({"extras": {"w": [np.zeros((12, 10))] * 3}}, r"extras\['w'\]\[1\]"),
    ],
)
def test_arguments_are_validated(kwargs, match):
    images, targets = _tiny()
    with pytest.raises(ValueError, match=match):
        _dataset(images, targets, **kwargs)


def test_mismatched_cases_are_rejected():
    images, targets = _tiny()
    with pytest.raises(ValueError, match="case 1"):
        _dataset(images, [targets[0], targets[0], targets[2]])
    with pytest.raises(ValueError, match="equally long"):
        _dataset(images, targets[:2])
    for k in (-1, 2**64, 1.0):
        with pytest.raises(ValueError, match=r"k must be an int in \[0, 2\*\*64\)"):
            _dataset(images, targets).plan(k)
    assert _dataset(images, targets).plan(2**64 - 1).case in (0, 1, 2)
