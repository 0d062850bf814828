"""One evaluation pass, one Evaluation: matrices equal torchmetrics', the run's matrix equals its
written predictions', and the datasets' extra scorers (the intra-class phantom's region recall)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.functional.classification import multiclass_confusion_matrix

from medbalance.config import parse_config
from medbalance.data.build import build_splits, collapse_foreground
from medbalance.data.datasets import ArrayDataset
from medbalance.data.folds import cv_pool
from medbalance.data.spacing import resample_dataset
from medbalance.engine import ClassificationTask, Engine, SegmentationTask, train
from medbalance.engine.run import PredictionWriter
from medbalance.metrics import expected_calibration_error, segmentation_scores
from medbalance.metrics.evaluation import Evaluation, Evaluator, RegionRecall, evaluate_labels
from medbalance.nets import UNet
from tests._reference.metrics_numpy import segmentation_scores_np

IGNORE = 255


def _labels(seed: int, shape: tuple[int, ...], num_classes: int, *, ignore: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    preds = torch.randint(0, num_classes, shape, generator=g)
    target = torch.randint(0, num_classes, shape, generator=g)
    if ignore:
        target[torch.rand(shape, generator=g) < 0.2] = IGNORE
    return preds, target


def _torchmetrics(preds: torch.Tensor, target: torch.Tensor, num_classes: int, ignore: bool) -> torch.Tensor:
    return multiclass_confusion_matrix(preds, target, num_classes, ignore_index=IGNORE if ignore else None)


@pytest.mark.parametrize("shape", [(5, 7, 6), (3, 4, 5, 6)], ids=["2d", "3d"])
@pytest.mark.parametrize("ignore", [False, True], ids=["all", "ignore_index"])
@pytest.mark.parametrize("seed", [0, 1])
def test_segmentation_matrices_equal_torchmetrics_per_image_and_pooled(shape, ignore, seed):
    num_classes = 4
    preds, target = _labels(seed, shape, num_classes, ignore=ignore)
    evaluator = Evaluator(num_classes, per_image=True, ignore_index=IGNORE if ignore else None)
    for part in (slice(0, 2), slice(2, None)):  # two batches
        evaluator.update(preds[part], {"target": target[part]})
    ev = evaluator.compute()
    want = torch.stack([_torchmetrics(p, t, num_classes, ignore) for p, t in zip(preds, target)])
    assert ev.cases.dtype == ev.confusion.dtype == torch.int64
    assert torch.equal(ev.cases, want)
    assert torch.equal(ev.confusion, _torchmetrics(preds, target, num_classes, ignore))
    assert ev.unit == "pixels"
    ignore_index = IGNORE if ignore else None
    ref = segmentation_scores_np(preds.numpy(), target.numpy(), num_classes, per_image=True, ignore_index=ignore_index)
    assert ev.scores["mean_dice_fg"] == pytest.approx(ref["mean_dice_fg"], abs=1e-12)
    # the functional core gives the same Evaluation in one call
    once = evaluate_labels(preds, target, num_classes, ignore_index=ignore_index)
    assert torch.equal(once.cases, ev.cases) and once.scores == ev.scores


@pytest.mark.parametrize("seed", [0, 1])
def test_classification_matrix_equals_torchmetrics_and_the_ece_its_probabilities(seed):
    g = torch.Generator().manual_seed(seed)
    logits, target = torch.randn(23, 5, generator=g), torch.randint(0, 5, (23,), generator=g)
    task = ClassificationTask(5)
    evaluator = task.evaluator()
    for part in (slice(0, 10), slice(10, None)):
        evaluator.update(task.predict(logits[part]), {"target": target[part]}, logits[part])
    ev = evaluator.compute()
    assert ev.cases is None and ev.unit == "samples"
    assert torch.equal(ev.confusion, multiclass_confusion_matrix(logits.argmax(1), target, 5))
    assert ev.scores["ece"] == expected_calibration_error(torch.softmax(logits, 1), target)
    assert ev.scores["accuracy"] == pytest.approx((logits.argmax(1) == target).double().mean().item())


def test_pooled_scores_are_the_dataset_level_scores():
    preds, target = _labels(3, (4, 6, 6), 3, ignore=True)
    ev = evaluate_labels(preds, target, 3, ignore_index=IGNORE)
    ref = segmentation_scores_np(preds.numpy(), target.numpy(), 3, per_image=False, ignore_index=IGNORE)
    assert ev.pooled_scores()["dice"] == pytest.approx(ref["dice"], abs=1e-12)


def test_region_recall_counts_foreground_predictions_in_each_region():
    rng = np.random.default_rng(0)
    regions = rng.integers(0, 3, (6, 8, 8))
    preds = rng.integers(0, 3, (6, 8, 8))
    scorer = RegionRecall()
    for part in (slice(0, 4), slice(4, None)):
        scorer.update(torch.from_numpy(preds[part]), {"regions": torch.from_numpy(regions[part])})
    got = scorer.compute()
    for r, name in ((1, "majority"), (2, "minority")):
        assert got[f"recall_{name}"] == ((preds > 0) & (regions == r)).sum() / (regions == r).sum()
    empty = RegionRecall(("a", "b", "c"))
    empty.update(torch.ones(1, 2, 2, dtype=torch.long), {"regions": torch.ones(1, 2, 2, dtype=torch.long)})
    assert empty.compute()["recall_a"] == 1.0 and np.isnan(empty.compute()["recall_c"])


def _phantom_cfg(**kw):
    return parse_config(
        {
            "epochs": 1,
            "batch_size": 2,
            "steps_per_epoch": 2,
            "progress": False,
            "data": {"kind": "intraclass_phantom", "size": 16, "n_train": 4, "n_val": 2, "n_test": 3},
            "model": {"name": "unet", "base_channels": 4, "depth": 2},
            "loss": "dice_ce",
            **kw,
        }
    )


def test_the_phantom_declares_its_region_recall_and_copies_keep_it():
    splits = build_splits(_phantom_cfg())
    assert splits.test.scorers == (RegionRecall,)
    assert splits.test.subset([0]).scorers == (RegionRecall,)
    assert splits.test.with_normalization(None).scorers == (RegionRecall,)
    assert resample_dataset(splits.test, (0.5, 0.5)).scorers == (RegionRecall,)
    assert cv_pool(splits)[0].scorers == (RegionRecall,)
    assert collapse_foreground(splits.test).scorers == (RegionRecall,)
    nuclei = build_splits(parse_config({"data": {"kind": "nuclei_phantom", "size": 16, "n_train": 2, "n_val": 1}}))
    assert nuclei.val.scorers == ()


def test_engine_returns_the_evaluation_of_the_pass_with_the_datasets_scorers():
    data = build_splits(_phantom_cfg()).test
    torch.manual_seed(0)
    engine = Engine(UNet(1, 1, base_channels=4, depth=2), SegmentationTask(2), _phantom_cfg())
    seen = []
    ev = engine.evaluate(data, full=True, on_batch=lambda batch, logits, labels: seen.append(labels))
    assert isinstance(ev, Evaluation)
    assert engine.evaluate(data) == ev.scores  # the plain call returns the scores dict
    labels = torch.cat(seen).numpy()
    regions = data.extras["regions"]
    for r, name in ((1, "majority"), (2, "minority")):
        assert ev.scores[f"recall_{name}"] == ((labels > 0) & (regions == r)).sum() / (regions == r).sum()
    regional = {k: ev.scores[k] for k in ("recall_majority", "recall_minority")}
    assert ev.scores == {**segmentation_scores(ev.cases), **regional}
    # a dataset without scorers: no region keys, even with regions in its batches
    plain = ArrayDataset(data.images, data.target, num_classes=2, extras=data.extras)
    assert "recall_minority" not in engine.evaluate(plain)


def test_the_run_matrix_equals_its_written_predictions_and_the_phantom_keeps_its_scores(tmp_path):
    cfg = _phantom_cfg()
    result = train(cfg, out=tmp_path)
    test = build_splits(cfg).test
    preds = np.stack([np.asarray(Image.open(result.run_dir / "predictions" / f"{n}.png")) > 0 for n in test.names])
    want = np.bincount((test.target * 2 + preds).ravel(), minlength=4).reshape(2, 2)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["confusion"] == {"split": "test", "unit": "pixels", "matrix": want.tolist()}
    regions = test.extras["regions"]
    assert metrics["test"]["recall_minority"] == ((preds > 0) & (regions == 2)).sum() / (regions == 2).sum()
    assert "recall_majority" in metrics["val"]


def test_prediction_writer_masks_give_the_evaluations_matrix_with_ignore_index(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((5, 1, 12, 12), dtype=np.float32)
    target = rng.integers(0, 3, (5, 12, 12))
    target[rng.random(target.shape) < 0.3] = IGNORE
    data = ArrayDataset(images, target, num_classes=3, ignore_index=IGNORE)
    task = SegmentationTask(3, ignore_index=IGNORE)
    torch.manual_seed(0)
    cfg = parse_config({"batch_size": 2, "progress": False})
    engine = Engine(UNet(1, 3, base_channels=4, depth=2), task, cfg)
    writer = PredictionWriter(data, task, tmp_path / "predictions")
    ev = engine.evaluate(data, on_batch=writer, full=True)
    preds = np.stack([np.asarray(Image.open(tmp_path / "predictions" / f"{n}.png")) for n in data.names])
    kept = target != IGNORE
    want = np.bincount((target[kept] * 3 + preds[kept]).ravel(), minlength=9).reshape(3, 3)
    assert ev.confusion.tolist() == want.tolist()
