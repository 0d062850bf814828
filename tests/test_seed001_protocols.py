"""Seed 001's data protocols (section 4.2) as reader options, on tiny trees in the published layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch.utils.data import default_collate

from medbalance.config import BreakhisData, ChestXrayData, ConfigError, dump_config, parse_config
from medbalance.data.augment import Augment
from medbalance.data.longtail import longtail_targets
from medbalance.data.readers.classification import (
    BREAKHIS_CLASSES,
    build_breakhis,
    build_chestxray,
    seed001_breakhis_shape,
    seed001_chestxray,
)
from medbalance.errors import DataError

# Images per BreaKHis type in the tiny tree: with 1 per class for test and validation, the
# training set keeps 1, 4, 1, 2, 10, 2, 3, 2 (IR 10).
_COUNTS = (3, 6, 3, 4, 12, 4, 5, 4)
_CODES = ("A", "F", "PT", "TA", "DC", "LC", "MC", "PC")


def _breakhis_png(path: Path, label: int, index: int) -> None:
    """A 700 x 460 image (the BreaKHis size): red = column // 2 (so a 1/2 bilinear scaling gives
    exactly column j -> j), green = row // 2, blue = the class."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cols, rows = np.meshgrid(np.arange(700) // 2 % 256, np.arange(460) // 2, indexing="xy")
    image = np.stack([cols, rows, np.full_like(cols, 20 * label + index % 10)], axis=-1).astype(np.uint8)
    Image.fromarray(image, "RGB").save(path)


@pytest.fixture(scope="module")
def breakhis_tree(tmp_path_factory) -> Path:
    breast = tmp_path_factory.mktemp("bh") / "BreaKHis_v1" / "histology_slides" / "breast"
    for label, ((kind, tumour), code, n) in enumerate(zip(BREAKHIS_CLASSES, _CODES, _COUNTS)):
        for i in range(n):
            patient = f"{10 + label}-{1000 + i % 3}{code}"
            folder = breast / kind / "SOB" / tumour / f"SOB_{kind[0].upper()}_{code}_{patient}" / "40X"
            _breakhis_png(folder / f"SOB_{kind[0].upper()}_{code}-{patient}-40-{i + 1:03d}.png", label, i)
    return breast


@pytest.fixture(scope="module")
def breakhis(breakhis_tree) -> Path:
    return build_breakhis(BreakhisData(path=str(breakhis_tree), protocol="seed001", eval_per_class=1))


def test_breakhis_seed001_geometry_and_splits(breakhis):
    splits = breakhis
    train, val, test = splits.train, splits.val, splits.test
    assert train.images.shape[1:] == (3, 230, 350) and train.images.dtype == np.uint8
    assert val.images.shape[1:] == test.images.shape[1:] == (3, 224, 224)
    assert np.bincount(val.target).tolist() == np.bincount(test.target).tolist() == [1] * 8
    assert np.bincount(train.target).tolist() == [n - 2 for n in _COUNTS]  # the original sizes ("IR 10")
    names = [set(d.names) for d in (train, val, test)]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    info = splits.info["protocol"]
    assert info["imbalance_ratio_reached"] == 10 and len(info["test_files"]) == 8
    # 350 x 230 by a 1/2 bilinear scaling: column j holds j, row i holds i; the centre 224 x 224
    # starts at row (230 - 224) // 2 = 3 and column (350 - 224) // 2 = 63.
    assert np.array_equal(train.images[0, 0, 0], np.arange(350) % 256)
    assert np.array_equal(train.images[0, 1, :, 0], np.arange(230))
    assert np.array_equal(val.images[0, 0, 0], np.arange(63, 287) % 256)
    assert np.array_equal(val.images[0, 1, :, 0], np.arange(3, 227))
    # stored 8-bit, read as x / 255 like the default path
    assert torch.equal(train[0]["image"], torch.from_numpy(train.images[0] / np.float32(255)))


def test_breakhis_seed001_imbalance_ratios(breakhis_tree, breakhis):
    def counts(ratio):
        data = BreakhisData(path=str(breakhis_tree), protocol="seed001", eval_per_class=1, imbalance_ratio=ratio)
        return build_breakhis(data)

    original = breakhis
    ten = counts(10)
    assert ten.train.names == original.train.names  # IR 10 is the original set, no subsample
    assert ten.info["protocol"]["imbalance_ratio"] == 10
    fifty = counts(50)
    pool = [n - 2 for n in _COUNTS]
    assert np.bincount(fifty.train.target).tolist() == longtail_targets(pool, 50)
    assert fifty.info["protocol"]["train_counts"] == longtail_targets(pool, 50)
    assert set(fifty.train.names) <= set(original.train.names) and fifty.test.names == original.test.names
    with pytest.raises(DataError, match=r"class\(es\) adenosis \(3\), phyllodes_tumor \(3\), tubular_adenoma \(4\),"):
        build_breakhis(BreakhisData(path=str(breakhis_tree), protocol="seed001", eval_per_class=2))


def test_random_crop_per_sample_is_a_window_and_deterministic(breakhis):
    train = breakhis.train
    batch = default_collate([train[i] for i in range(8)])
    aug = Augment(crop=224)
    out = aug(batch, torch.Generator().manual_seed(3))
    assert out["image"].shape == (8, 3, 224, 224) and torch.equal(out["target"], batch["target"])
    offsets = set()
    for crop, full in zip(out["image"], batch["image"]):
        left, top = round(float(crop[0, 0, 0]) * 255), round(float(crop[1, 0, 0]) * 255)
        assert 0 <= left <= 126 and 0 <= top <= 6
        assert torch.equal(crop, full[:, top : top + 224, left : left + 224])
        offsets.add((top, left))
    assert len(offsets) > 1  # drawn per sample
    again = aug(batch, torch.Generator().manual_seed(3))["image"]
    other = aug(batch, torch.Generator().manual_seed(4))["image"]
    assert torch.equal(again, out["image"]) and not torch.equal(other, out["image"])


def test_crop_moves_label_maps_and_refuses_a_larger_crop():
    image = torch.arange(2 * 10 * 12, dtype=torch.float32).reshape(2, 1, 10, 12)
    batch = {"image": image, "target": image[:, 0].long()}
    out = Augment(crop=[4, 6], flip=True)(batch, torch.Generator().manual_seed(0))
    assert out["image"].shape == (2, 1, 4, 6) and torch.equal(out["image"][:, 0].long(), out["target"])
    with pytest.raises(ValueError, match=r"augment.crop 11 does not fit the training images of shape \(10, 12\)"):
        Augment(crop=11)(batch, torch.Generator())
    with pytest.raises(ValueError, match=r"augment.crop \[4, 4, 4\] does not fit"):
        Augment(crop=[4, 4, 4])(batch, torch.Generator())


def test_config_seed001_defaults_and_errors(tmp_path):
    raw = {"data": {"kind": "breakhis", "path": str(tmp_path), "protocol": "seed001"}, "model": {"name": "resnet32"}}
    cfg = parse_config(raw)
    assert cfg.data.size == 224 and cfg.data.eval_per_class == 80 and cfg.augment.crop == 224
    again = parse_config(yaml.safe_load(dump_config(cfg)))  # the resolved config.yaml reads back the same
    assert again.augment == cfg.augment and again.data == cfg.data
    small = parse_config({**raw, "data": {**raw["data"], "size": 112}, "augment": {"flip": True}})
    assert small.augment.crop == 112 and small.augment.flip
    assert parse_config({**raw, "augment": {"crop": None}}).augment.crop is None  # asked for: no crop
    assert parse_config({**raw, "data": {**raw["data"], "protocol": "default"}}).augment.crop is None  # unchanged
    chest = parse_config({**raw, "data": {"kind": "chestxray", "path": "x", "protocol": "seed001"}})
    assert chest.data.size == 224 and chest.augment.crop is None  # the seed crops chest X-rays at their centre only
    assert BreakhisData(path="x").size == 64 and BreakhisData(path="x").protocol == "default"  # defaults unchanged
    with pytest.raises(ConfigError, match=r"unknown key 'protocl' under 'data' in config \(did you mean 'protocol'"):
        parse_config({"data": {"kind": "breakhis", "path": "x", "protocl": "seed001"}})
    with pytest.raises(ConfigError, match=r"'data.protocol' in config: input should be 'default' or 'seed001'"):
        parse_config({"data": {"kind": "chestxray", "path": "x", "protocol": "seed01"}})
    with pytest.raises(ConfigError, match="eval_per_class applies to protocol 'seed001' only"):
        parse_config({"data": {"kind": "breakhis", "path": "x", "eval_per_class": 10}})
    with pytest.raises(ConfigError, match=r"'augment.crop' in config: value error, expected a size >= 1 .*found 0"):
        parse_config({**raw, "augment": {"crop": 0}})


def _chest_png(path: Path, value: int, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, np.uint8), "L").save(path)


def test_chestxray_seed001_keeps_the_official_test_split(tmp_path):
    root = tmp_path / "chest_xray"
    layout = {"train": (6, 14), "val": (2, 2), "test": (3, 5)}  # the real test split is 234 / 390
    for split, counts in layout.items():
        for cls, n in zip(("NORMAL", "PNEUMONIA"), counts):
            for i in range(n):
                _chest_png(root / split / cls / f"person{i}_{cls.lower()}.jpeg", 30 + 7 * i, (96 + 4 * i, 72))
    data = ChestXrayData(path=str(tmp_path), protocol="seed001", eval_per_class=1, size=8)
    splits = build_chestxray(data)
    counts = [np.bincount(d.target).tolist() for d in (splits.train, splits.val, splits.test)]
    assert counts == [[7, 15], [1, 1], [3, 5]]
    assert splits.train.images.shape[1:] == (1, 8, 8) and splits.test.images.dtype == np.uint8
    assert all(n.startswith("test/") for n in splits.test.names)
    assert not set(splits.val.names) & set(splits.train.names)
    lt = build_chestxray(data.model_copy(update={"imbalance_ratio": 7}))
    assert np.bincount(lt.train.target).tolist() == [2, 15] == lt.info["protocol"]["train_counts"]
    assert np.bincount(lt.test.target).tolist() == [3, 5]  # not balanced, unlike the default protocol
    with pytest.raises(DataError, match=r"normal \(8\) have no more"):
        build_chestxray(data.model_copy(update={"eval_per_class": 8}))


def test_seed001_chestxray_geometry():
    # 2400 x 2000 -> 1/4: 600 x 500 -> centre 448 x 448 (rows 76..523, columns 26..473, i.e. the
    # source's rows 304..2095 and columns 104..1895) -> 1/2: 224 x 224.
    image = np.zeros((1, 2400, 2000), np.float32)
    image[:, 300:2100, 100:1900] = 200 / 255
    out = seed001_chestxray(image)
    assert out.shape == (1, 224, 224) and out.dtype == np.uint8 and (out == 200).all()
    inner = np.zeros_like(image)
    inner[:, 340:2060, 140:1860] = 1.0  # 9 quarter-scale pixels inside the crop on every side
    out = seed001_chestxray(inner)
    assert (out[0, :4] == 0).all() and (out[0, :, :4] == 0).all() and (out[0, 6:-6, 6:-6] == 255).all()
    # a quarter image smaller than 448: its largest centred square
    assert seed001_chestxray(np.ones((1, 1200, 1000), np.float32), 224).shape == (1, 224, 224)
    assert seed001_breakhis_shape(224) == (230, 350)


class _Recorder(torch.nn.Module):
    """A stand-in network: keeps its input, answers class 0."""

    def forward(self, x):
        self.seen = x
        return torch.zeros(len(x), 8)


def test_predict_sees_the_validation_geometry(breakhis_tree, breakhis):
    from medbalance.config import RunConfig
    from medbalance.data.io import read_image
    from medbalance.engine.run import LoadedRun, predict_arrays
    from medbalance.engine.tasks import make_task

    data = BreakhisData(path=str(breakhis_tree), protocol="seed001", eval_per_class=1)
    path = next(p for p in breakhis_tree.rglob("*.png") if p.stem == breakhis.val.names[0])
    net = _Recorder()
    run = LoadedRun(RunConfig(data=data), net, make_task("classification", 8), {})
    predict_arrays(run, read_image(path, channels=3)[None])
    assert torch.equal(net.seen[0], breakhis.val[0]["image"])  # as the run was scored, not squashed to 224
