"""Issue 18, the Python API: train / load_run / predict / evaluate, with datasets of pairs or MONAI dicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medbalance
from medbalance.data.datasets import ArrayDataset, as_dataset
from medbalance.engine.run import evaluate_run
from medbalance.errors import ConfigError

RECIPE = {"epochs": 1, "batch_size": 4, "progress": False, "model": {"name": "unet", "base_channels": 4, "depth": 2}}


def _pairs(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image = rng.integers(0, 100, (1, 20 + i % 3, 24), dtype=np.uint8)
        mask = np.zeros(image.shape[1:], np.uint8)
        mask[4:12, 5:15] = 1
        image[0][mask > 0] += 120
        out.append((image, mask))
    return out


def test_train_on_pairs_then_predict_and_evaluate_monai_dicts(tmp_path, one_thread):
    train, val, test = _pairs(8, 0), _pairs(3, 1), _pairs(3, 2)
    result = medbalance.train(RECIPE, data=(train, val, test), out=tmp_path)
    assert (result.run_dir / "metrics.json").is_file() and "test" in result.metrics
    run = medbalance.load_run(result.run_dir)
    assert run.cfg.data.kind == "python" and run.cfg.data.task == "segmentation"
    probs, labels = medbalance.predict(run, test[0][0])
    assert probs.shape == (1, *test[0][1].shape) and labels.shape == test[0][1].shape

    monai = [{"image": torch.from_numpy(im), "label": torch.from_numpy(m)[None]} for im, m in test]
    scores = medbalance.evaluate(run, monai)
    reference = evaluate_run(run, ArrayDataset([im for im, _ in test], [m for _, m in test], num_classes=2))
    assert scores["mean_dice_fg"] == pytest.approx(reference["mean_dice_fg"])
    assert scores["cases"]["mean"] == pytest.approx(reference["cases"]["mean"])

    (result.run_dir / "metrics.json").unlink()  # as if killed before the end
    with pytest.raises(ConfigError, match="given in Python"):  # a resume needs the data again
        medbalance.train(resume=result.run_dir)
    again = medbalance.train(resume=result.run_dir, data=(train, val, test))
    assert again.metrics["test"]["mean_dice_fg"] == pytest.approx(result.metrics["test"]["mean_dice_fg"])


def test_train_a_builtin_recipe_by_name_with_overrides(tmp_path, one_thread):
    sets = ["epochs=1", "data.size=16", "data.num_classes=3", "data.n_max=8", "data.imbalance_ratio=2"]
    sets += ["data.n_val_per_class=2", "data.n_test_per_class=2", "model.widths=[4, 8]", "model.blocks_per_stage=1"]
    result = medbalance.train("bbn", overrides=[*sets, "progress=false", "batch_size=4"], out=tmp_path)
    assert result.metrics["train_counts"] == [8, 6, 4]
    assert medbalance.load_run(result.run_dir).cfg.method.name == "bilateral"


def test_as_dataset_reads_pairs_dicts_and_classes():
    pairs = [(np.zeros((1, 4, 5), np.float32), np.ones((4, 5), np.int64)) for _ in range(2)]
    ds = as_dataset(pairs)
    assert len(ds) == 2 and ds.num_classes == 2 and ds.shape(0) == (4, 5) and ds.images.dtype == np.float32
    cls = as_dataset([(np.full((3, 8, 8), 255, np.uint8), 2), (np.zeros((3, 8, 8), np.uint8), 0)])
    assert cls.num_classes == 3 and cls.target.tolist() == [2, 0] and float(cls[0]["image"].max()) == 1.0
    with pytest.raises(ValueError, match=r"sample 0: image \(1, 4, 5\).*label map is \(4, 4\)"):
        as_dataset([(np.zeros((1, 4, 5)), np.zeros((4, 4)))])
    with pytest.raises(ValueError, match="sample 0 is a dict without 'image' and 'label'"):
        as_dataset([{"img": 1}])
