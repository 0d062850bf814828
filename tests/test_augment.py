"""Batch augmentation on tensors (``medbalance.data.augment``): geometry, labels, seeding, DDP slices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from medbalance.config import ConfigError, parse_config
from medbalance.data.augment import Augment, _grid, _resample_nearest
from medbalance.data.datasets import ArrayDataset
from medbalance.engine import Engine, SegmentationTask, Stage
from medbalance.losses import build_loss
from medbalance.nets import UNet

SPATIAL = [Augment(flip=True), Augment(rot90=True), Augment(rotate=40, scale=0.3, affine_p=1.0)]
INTENSITY = Augment(brightness=0.2, contrast=0.3, gamma=0.4, noise=0.1, intensity_p=1.0)


def _labels(shape, seed=0, classes=4):
    g = torch.Generator().manual_seed(seed)
    # blocky labels, so nearest and bilinear resampling agree away from block borders
    small = torch.randint(0, classes, (shape[0], *[s // 4 for s in shape[1:]]), generator=g)
    for axis in range(1, len(shape)):
        small = small.repeat_interleave(4, dim=axis)
    return small


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_off_by_default_returns_the_batch_untouched():
    batch = {"image": torch.rand(2, 1, 8, 8), "target": torch.zeros(2, 8, 8, dtype=torch.long)}
    assert not Augment().enabled and Augment()(batch, _gen()) is batch
    assert not Augment(rotate=10, affine_p=0.0).enabled and not Augment(noise=0.1, intensity_p=0).enabled


@pytest.mark.parametrize("aug", SPATIAL[:2], ids=["flip", "rot90"])
@pytest.mark.parametrize("shape", [(6, 16, 16), (6, 12, 20), (6, 8, 12, 12)], ids=["square", "wide", "3d"])
def test_flips_and_turns_move_image_and_every_spatial_entry_together(aug, shape):
    target = _labels(shape)
    weights = target.float() * 0.5  # a float map with the target's geometry (e.g. dual-path's weights)
    batch = {"image": target[:, None].float(), "target": target, "weights": weights, "index": torch.arange(6)}
    out = aug(batch, _gen())
    assert torch.equal(out["image"][:, 0].long(), out["target"]) and torch.equal(out["weights"], out["target"] * 0.5)
    assert out["target"].dtype == torch.long and torch.equal(out["index"], batch["index"])
    assert not torch.equal(out["target"], target)  # something moved (6 samples, p = 0.5 each)
    # each sample is an exact symmetry of its input: same label histogram
    for a, b in zip(out["target"], target):
        assert torch.equal(torch.bincount(a.flatten(), minlength=4), torch.bincount(b.flatten(), minlength=4))
    if shape[-1] != shape[-2] and aug.rot90:  # a wide image only turns by 0 or 180 degrees
        for a, b in zip(out["target"], target):
            assert torch.equal(a, b) or torch.equal(a, b.flip(-1).flip(-2))


@pytest.mark.parametrize("shape", [(4, 32, 32), (4, 24, 40), (2, 8, 32, 32)], ids=["square", "wide", "3d"])
def test_rotation_and_zoom_keep_labels_aligned_with_the_image(shape):
    target = _labels(shape, classes=3)
    target[0, 0, 0] = 255  # an ignore_index value survives nearest resampling
    batch = {"image": target[:, None].float(), "target": target}
    out = SPATIAL[2](batch, _gen())
    values = set(out["target"].unique().tolist())
    assert values <= {0, 1, 2, 255} and out["target"].dtype == torch.long
    # where the bilinear image is not between two classes, it equals the nearest label
    image = out["image"][:, 0]
    settled = (image - image.round()).abs() < 1e-4
    agree = (image.round().long() == out["target"])[settled & (out["target"] != 255)]
    assert agree.float().mean() > 0.97
    assert not torch.equal(out["target"], target)


def test_samples_without_a_rotation_keep_their_exact_values():
    batch = {"image": torch.rand(8, 1, 16, 16), "target": _labels((8, 16, 16))}
    out = Augment(rotate=30, affine_p=0.5)(batch, _gen(1))
    same = [torch.equal(a, b) for a, b in zip(out["image"], batch["image"])]
    assert 0 < sum(same) < 8  # some were rotated, the others are bit-identical
    assert all(torch.equal(a, b) for a, b, kept in zip(out["target"], batch["target"], same) if kept)


def test_pixels_from_outside_the_image_take_the_outside_label():
    target = torch.ones(2, 16, 16, dtype=torch.long)
    batch = {"image": torch.ones(2, 1, 16, 16), "target": target, "weights": torch.ones(2, 16, 16)}
    out = Augment(rotate=45, affine_p=1.0, scale=0.5, outside_label=255)(batch, _gen())
    outside = out["target"] == 255
    assert outside.any() and set(out["target"].unique().tolist()) == {1, 255}
    assert torch.equal(out["weights"] == 0, outside)  # float maps get 0 there
    default = Augment(rotate=45, affine_p=1.0, scale=0.5)(batch, _gen())
    assert torch.equal(default["target"] == 0, outside)


def test_the_grid_rotates_in_pixels_not_in_stretched_coordinates():
    # a 1-pixel horizontal bar of 17 pixels through the centre of a wide image, turned by 90 degrees
    image = torch.zeros(1, 1, 41, 81)
    image[0, 0, 20, 32:49] = 1.0
    grid = _grid(torch.tensor([math.pi / 2]), torch.tensor([1.0]), image)
    turned = _resample_nearest(image, grid, 2)[0, 0]
    rows, cols = turned.nonzero().unbind(1)
    assert set(cols.tolist()) == {40} and rows.min() == 12 and rows.max() == 28  # vertical, 17 long
    # zoom 2 shows the centre twice as large; angle 0 and zoom 1 is the identity
    grid = _grid(torch.tensor([0.0]), torch.tensor([2.0]), image)
    zoomed = _resample_nearest(image, grid, 2)[0, 0]
    assert abs(zoomed[20].sum().item() - 34) <= 1  # 17 pixels shown twice as large, up to rounding
    grid = _grid(torch.tensor([0.0]), torch.tensor([1.0]), image)
    assert torch.equal(_resample_nearest(image, grid, 2), image)


def test_intensity_transforms_touch_the_image_only_and_stay_finite():
    torch.manual_seed(0)
    batch = {"image": torch.rand(8, 2, 16, 16), "target": torch.randint(0, 2, (8, 16, 16))}
    out = INTENSITY(batch, _gen())
    assert torch.equal(out["target"], batch["target"]) and torch.isfinite(out["image"]).all()
    assert not torch.allclose(out["image"], batch["image"])
    # gamma alone keeps every sample's range
    gammaed = Augment(gamma=0.5, intensity_p=1.0)(batch, _gen())["image"]
    for a, b in zip(gammaed, batch["image"]):
        assert torch.isclose(a.min(), b.min(), atol=1e-6) and torch.isclose(a.max(), b.max(), atol=1e-6)
    # brightness with probability 0.5 shifts about half the samples by a constant each
    shifted = Augment(brightness=0.3, intensity_p=0.5)(batch, _gen(3))["image"] - batch["image"]
    per_sample = shifted.flatten(1)
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample), atol=1e-6)
    moved = (per_sample[:, 0].abs() > 0).sum().item()
    assert 1 <= moved <= 7 and per_sample.abs().max() <= 0.3 + 1e-6


def test_same_seed_same_augmentation_and_a_new_seed_another():
    aug = Augment(flip=True, rot90=True, rotate=30, scale=0.2, affine_p=0.5, brightness=0.1, noise=0.1, intensity_p=0.5)
    batch = {"image": torch.rand(6, 1, 16, 16), "target": _labels((6, 16, 16))}
    a, b, c = aug(batch, _gen(1)), aug(batch, _gen(1)), aug(batch, _gen(2))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    assert not torch.equal(a["image"], c["image"])


def test_process_slices_of_a_global_batch_augment_like_one_process():
    aug = Augment(flip=True, rot90=True, rotate=30, scale=0.2, affine_p=0.5, brightness=0.1, gamma=0.3, intensity_p=0.5)
    batch = {"image": torch.rand(8, 1, 16, 16), "target": _labels((8, 16, 16))}
    whole = aug(batch, _gen(5))
    for rank in range(2):
        half = {k: v[rank * 4 : (rank + 1) * 4] for k, v in batch.items()}
        part = aug(half, _gen(5), share=(rank, 2))
        for key in batch:
            assert torch.equal(part[key], whole[key][rank * 4 : (rank + 1) * 4]), key


def test_bad_strengths_and_keys_get_one_line_errors():
    with pytest.raises(ValidationError):
        Augment(scale=1.0)
    with pytest.raises(ConfigError, match=r"invalid value for 'augment.contrast' in config: .*got 1.5"):
        parse_config({"augment": {"contrast": 1.5}})
    with pytest.raises(
        ConfigError, match=r"unknown key 'rotation' under 'augment' in config \(did you mean 'rotate'\?\)"
    ):
        parse_config({"augment": {"rotation": 10}})
    with pytest.raises(ValueError, match=r"augment: expected a float image batch .* got torch.int64"):
        Augment(flip=True)({"image": torch.zeros(2, 1, 4, 4, dtype=torch.long)}, _gen())


def test_the_engine_augments_training_batches_only():
    rng = np.random.default_rng(0)
    images = rng.random((8, 1, 16, 16), dtype=np.float32)
    data = ArrayDataset(images, (images[:, 0] > 0.6).astype(np.int64), num_classes=2)
    seen = {}

    class Spy(Engine):
        def forward(self, module, batch):
            seen.setdefault("train" if module.training else "eval", []).append(batch["image"].clone())
            return super().forward(module, batch)

    weights = []
    for augment in ({}, {"flip": True, "rotate": 45, "affine_p": 1.0}):
        seen.clear()
        cfg = parse_config({"epochs": 1, "batch_size": 4, "progress": False, "augment": augment})
        torch.manual_seed(0)
        engine = Spy(UNet(1, 1, base_channels=4, depth=2), SegmentationTask(2), cfg)
        engine.fit([Stage("train", 1, build_loss("dice_ce"))], data, data)
        train_images = torch.cat(seen["train"])
        assert torch.equal(torch.cat(seen["eval"]), torch.from_numpy(images))  # validation is never augmented
        weights.append(engine.model.state_dict())
        if augment:
            assert not any(torch.equal(x, torch.from_numpy(im)) for x in train_images for im in images)
    assert not all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
