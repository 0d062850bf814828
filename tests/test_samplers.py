"""Batch samplers: the distributions they promise, determinism, and their use by the engine."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from medbalance.config import parse_config
from medbalance.data import samplers
from medbalance.data.datasets import ArrayDataset
from medbalance.engine.engine import Engine, Stage, _RankBatches
from medbalance.engine.tasks import ClassificationTask, SegmentationTask
from medbalance.losses import CrossEntropyLoss, DiceCELoss
from medbalance.nets import ResNet32, UNet


def _classification(counts) -> ArrayDataset:
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return ArrayDataset(np.zeros((len(labels), 1, 4, 4), np.float32), labels, num_classes=len(counts))


def _segmentation() -> ArrayDataset:
    target = np.zeros((10, 4, 4), np.int64)
    target[0, 0, 0] = 2  # class 2 in image 0 only
    target[1:4, 1, 1] = 1  # class 1 in images 1-3; images 4-9 are empty
    return ArrayDataset(np.zeros((10, 1, 4, 4), np.float32), target, num_classes=3)


def _draw(factory, data, batch_size=64, seed=0):
    return list(factory(data, batch_size, torch.Generator().manual_seed(seed)))


def _label_shares(batches, labels, num_classes):
    counts = Counter(int(labels[i]) for b in batches for i in b)
    total = sum(counts.values())
    return np.array([counts[c] / total for c in range(num_classes)])


def test_class_presence_for_labels_and_maps():
    assert samplers.class_presence(_classification([2, 1])).tolist() == [[True, False]] * 2 + [[False, True]]
    presence = samplers.class_presence(_segmentation())
    assert presence[:, 0].all() and presence[:, 2].tolist() == [True] + [False] * 9
    assert presence[:, 1].sum() == 3


def test_uniform_is_a_permutation_per_epoch_with_the_last_partial_batch_dropped():
    data = _classification([7, 3])
    batches = _draw(samplers.uniform, data, batch_size=3)
    assert len(batches) == 3 == len(samplers.uniform(data, 3, torch.Generator()))
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == 9  # no repeats
    assert len(_draw(samplers.uniform, data, batch_size=50)) == 1  # fewer samples than a batch: one batch


@pytest.mark.parametrize("counts", [[400, 100, 20, 5], [50, 50]])
def test_class_balanced_draws_classes_uniformly(counts):
    data = _classification(counts)
    batches = [b for s in range(8) for b in _draw(samplers.class_balanced, data, batch_size=64, seed=s)]
    shares = _label_shares(batches, data.target, len(counts))
    assert np.allclose(shares, 1 / len(counts), atol=0.05)


def test_reversed_draws_class_i_in_proportion_to_nmax_over_ni():
    counts = [400, 100, 20, 5]
    data = _classification(counts)
    batches = [b for s in range(8) for b in _draw(samplers.reversed_sampler, data, seed=s)]
    expected = (max(counts) / np.array(counts)) / (max(counts) / np.array(counts)).sum()
    assert np.allclose(_label_shares(batches, data.target, 4), expected, atol=0.03)


def test_foreground_forces_the_last_third_of_each_batch_to_hold_a_foreground_class():
    data = _segmentation()
    presence = samplers.class_presence(data)
    batches = [b for s in range(30) for b in _draw(samplers.foreground(0.33), data, batch_size=6, seed=s)]
    forced = [i for b in batches for i in b[-2:]]  # round(0.33 * 6) = 2
    assert all(presence[i, 1:].any() for i in forced)
    # The class is drawn first: class 2 lives in one image yet gets about half the forced slots.
    assert 0.35 < np.mean([i == 0 for i in forced]) < 0.65
    one = _draw(samplers.foreground(0.1), data, batch_size=4)
    assert all(presence[b[-1], 1:].any() for b in one)  # at least one forced item
    assert [len(b) for b in one] == [4, 4]
    with pytest.raises(ValueError, match="segmentation label maps"):
        _draw(samplers.foreground(), _classification([3, 3]), batch_size=2)
    with pytest.raises(ValueError, match="fraction"):
        samplers.foreground(1.5)


def test_bilateral_yields_one_batch_of_each_sampler():
    data = _classification([400, 100, 20, 5])
    batches = _draw(samplers.bilateral(samplers.uniform, samplers.reversed_sampler), data, batch_size=32)
    assert len(batches) == len(data) // 32 and all(len(b) == 64 for b in batches)
    first = _label_shares([b[:32] for b in batches], data.target, 4)
    second = _label_shares([b[32:] for b in batches], data.target, 4)
    assert first[0] > 0.7 and second[3] > 0.5  # instance-balanced head vs reversed tail


@pytest.mark.parametrize("name", sorted(samplers.SAMPLERS))
def test_same_generator_seed_same_batches(name):
    data = _segmentation() if name == "foreground" else _classification([20, 5, 3])
    factory = samplers.SAMPLERS[name]
    assert _draw(factory, data, batch_size=4, seed=3) == _draw(factory, data, batch_size=4, seed=3)
    assert _draw(factory, data, batch_size=4, seed=3) != _draw(factory, data, batch_size=4, seed=4)


def test_rank_batches_split_one_batch_list_between_processes():
    inner = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]

    class _Fixed(list):
        pass

    shards = [list(_RankBatches(_Fixed(inner), rank, 2)) for rank in (0, 1)]
    chunks = [list(_RankBatches(_Fixed(inner), rank, 2, chunk=1)) for rank in (0, 1)]
    assert chunks == [[[0], [2], [4], [6], [8]], [[1], [3], [5], [7], [9]]]
    assert shards == [[[0, 1], [4, 5]], [[2, 3], [6, 7]]]  # equal step counts on every rank


def test_engine_trains_each_stage_with_its_own_sampler():
    seen = []

    def recording(dataset, batch_size, generator):
        inner = samplers.class_balanced(dataset, batch_size, generator)

        class _Record:
            def __len__(self):
                return len(inner)

            def __iter__(self):
                for b in inner:
                    seen.append(b)
                    yield b

        return _Record()

    data = _classification([30, 6, 2])
    data.images = np.random.default_rng(0).standard_normal(data.images.shape).astype(np.float32)
    cfg = parse_config({"progress": False, "batch_size": 8})
    engine = Engine(ResNet32(1, 3), ClassificationTask(3), cfg)
    rows = engine.fit(
        [Stage("plain", 1, CrossEntropyLoss()), Stage("balanced", 1, CrossEntropyLoss(), sampler=recording)], data, data
    )
    assert [r["stage"] for r in rows] == ["plain", "balanced"]
    assert len(seen) == len(data) // 8  # only the second stage used it


def test_engine_with_foreground_sampler_is_deterministic():
    from medbalance.data.phantoms import nuclei_phantoms

    ps = nuclei_phantoms(8, size=32)
    data = ArrayDataset(ps.images, ps.target, num_classes=7)
    cfg = parse_config({"progress": False, "batch_size": 4})
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        engine = Engine(UNet(3, 7, base_channels=4, depth=2), SegmentationTask(7), cfg)
        rows = engine.fit([Stage("fg", 2, DiceCELoss(), sampler=samplers.foreground())], data, data)
        losses.append([r["train_loss"] for r in rows])
    assert losses[0] == losses[1]
