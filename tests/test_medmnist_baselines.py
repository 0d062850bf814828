"""The MedMNIST baselines of issue 22: ResNet-18's small-image stem, the built-in recipes
``pneumoniamnist`` / ``breastmnist``, and ``data.balanced_test``."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn

import medbalance
from medbalance.config import load_config, parse_config
from medbalance.configs import BUILTIN_CONFIGS, config_path
from medbalance.data.build import build_splits
from medbalance.errors import ConfigError
from medbalance.nets.backbones import ResNetEncoder
from medbalance.nets.classifiers import ResNet18


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_small_stem_is_a_3x3_stride_1_conv_without_max_pool():
    enc = ResNetEncoder(1, layout="resnet18", base_channels=8, stem="small")
    shapes = [tuple(f.shape[1:]) for f in enc(torch.randn(1, 1, 28, 28))]
    # MedMNIST v2's ResNet-18 (28): 28 -> 28 (stem, stage 1) -> 14 -> 7 -> 4
    assert shapes == [(8, 28, 28), (8, 28, 28), (16, 14, 14), (32, 7, 7), (64, 4, 4)]
    assert enc.reductions == (1, 1, 2, 4, 8) and isinstance(enc.pool, nn.Identity)
    conv = next(m for m in enc.stem.modules() if isinstance(m, nn.Conv2d))
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
    # only the stem's kernel differs from the ImageNet layout: (7 * 7 - 3 * 3) * in * base weights
    small, imagenet = ResNet18(3, 2, base_channels=64, stem="small"), ResNet18(3, 2, base_channels=64)
    assert _params(imagenet) - _params(small) == (49 - 9) * 3 * 64
    assert ResNet18(1, 2, base_channels=4, stem="small")(torch.randn(2, 1, 28, 28)).shape == (2, 2)
    with pytest.raises(ValueError, match="stem"):
        ResNetEncoder(1, stem="cifar")


@pytest.mark.parametrize("name", ["pneumoniamnist", "breastmnist"])
def test_recipes_are_builtin_and_follow_medmnist_v2(name):
    assert name in BUILTIN_CONFIGS
    cfg = load_config(config_path(name))
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.monitor) == ("adam", 0.001, 128, "auc")
    assert cfg.model.name == "resnet18" and cfg.model.model_extra["stem"] == "small"
    assert cfg.data.kind == "shared" and cfg.data.name == name and cfg.loss == "ce"


def _npz(path, side=28):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 24), ("val", 10), ("test", 10)):
        labels = np.arange(n) % 2
        images = rng.integers(0, 100, (n, side, side)) + 120 * labels[:, None, None]
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images.astype(np.uint8), labels[:, None]
    np.savez(path, **arrays)
    return path


def test_recipe_trains_selects_on_validation_auc_and_reports_test_auc(tmp_path, one_thread):
    data = _npz(tmp_path / "toy.npz")
    sets = [f"data={{kind: medmnist, path: {data}}}", "epochs=2", "batch_size=8", "model.base_channels=4"]
    result = medbalance.train("pneumoniamnist", overrides=[*sets, "progress=false"], out=tmp_path / "out")
    metrics = result.metrics
    assert metrics["monitor"] == "auc" and 0.0 <= metrics["test"]["auc"] <= 1.0
    with open(result.run_dir / "history.csv", newline="") as fh:
        aucs = [float(row["val_auc"]) for row in csv.DictReader(fh)]
    assert len(aucs) == 2 and metrics["best_epoch"] == 1 + int(np.argmax(aucs))


def test_balanced_test_false_keeps_the_whole_test_split(tmp_path):
    data = str(_npz(tmp_path / "toy.npz", side=8))
    base = {"model": {"name": "resnet32"}, "loss": "ce"}
    section = {"kind": "medmnist", "path": data, "imbalance_ratio": 4, "seed": 1}
    balanced = build_splits(parse_config({**base, "data": section}))
    whole = build_splits(parse_config({**base, "data": {**section, "balanced_test": False}}))
    assert whole.info["longtail"]["train_counts"] == balanced.info["longtail"]["train_counts"] == [12, 3]
    assert np.bincount(balanced.test.target).tolist() == [5, 5] and len(whole.test) == 10
    assert whole.test.names == [f"test_{i:05d}" for i in range(10)] and "test_indices" not in whole.info["longtail"]
    assert whole.val.names == balanced.val.names  # validation stays balanced
    with pytest.raises(ConfigError, match="did you mean 'balanced_test'"):
        parse_config({**base, "data": {**section, "balanced_tests": False}}, source="c.yaml")


def test_recipes_read_the_shared_sets(shared_data, monkeypatch):
    monkeypatch.setenv("MEDBALANCE_DATA", str(shared_data))
    for name, counts in (("pneumoniamnist", [1214, 3494]), ("breastmnist", [147, 399])):
        splits = build_splits(load_config(config_path(name)))
        assert np.bincount(splits.train.target).tolist() == counts
        assert splits.train.images.shape[1:] == (1, 28, 28)
