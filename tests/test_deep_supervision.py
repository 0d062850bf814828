"""Deep supervision: scale weights, target resizing, and the engine handling tuple outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medbalance.config import parse_config
from medbalance.data.datasets import ArrayDataset
from medbalance.engine import Engine, SegmentationTask, Stage
from medbalance.errors import TrainingError
from medbalance.losses import DiceCELoss, DiceLoss
from medbalance.losses.deep_supervision import (
    DeepSupervisionLoss,
    deep_supervision_loss,
    deep_supervision_weights,
    resize_target,
)


def test_weights_halve_and_sum_to_one():
    w = deep_supervision_weights(4)
    assert sum(w) == pytest.approx(1.0)
    assert all(a == pytest.approx(2 * b) for a, b in zip(w, w[1:]))
    with pytest.raises(ValueError, match="at least one output"):
        deep_supervision_weights(0)


@pytest.mark.parametrize("channel_dim", [False, True])
def test_label_targets_keep_their_labels(channel_dim):
    target = torch.randint(0, 5, (2, 16, 12))
    target = target.unsqueeze(1) if channel_dim else target
    small = resize_target(target, (4, 3))
    assert small.dtype == target.dtype and small.shape[-2:] == (4, 3) and small.ndim == target.ndim
    assert set(small.unique().tolist()) <= set(target.unique().tolist())
    assert resize_target(target, tuple(target.shape[-2:])) is target


def test_soft_targets_are_area_averaged_3d():
    soft = torch.softmax(torch.randn(2, 3, 8, 8, 8), dim=1)
    small = resize_target(soft, (4, 4, 4))
    torch.testing.assert_close(small, F.avg_pool3d(soft, 2))
    torch.testing.assert_close(small.sum(1), torch.ones(2, 4, 4, 4))


def test_loss_is_the_weighted_sum_over_scales():
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 16, 16))
    outputs = (torch.randn(2, 3, 16, 16), torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4))
    loss = DiceCELoss()
    expected = sum(w * loss(o, resize_target(target, o.shape[2:])) for w, o in zip([4 / 7, 2 / 7, 1 / 7], outputs))
    torch.testing.assert_close(deep_supervision_loss(loss, outputs, target), expected)
    custom = deep_supervision_loss(loss, outputs, target, weights=[1.0, 0.0, 0.0])
    torch.testing.assert_close(custom, loss(outputs[0], target))


def test_module_passes_plain_tensors_through():
    target = torch.randint(0, 2, (2, 8, 8))
    logits = torch.randn(2, 2, 8, 8)
    torch.testing.assert_close(DeepSupervisionLoss(DiceLoss())(logits, target), DiceLoss()(logits, target))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"outputs": ()}, "non-empty sequence"),
        ({"weights": [1.0]}, "2 outputs but 1 weights"),
        ({"weights": [0.0, 0.0]}, "every deep supervision weight is zero"),
        ({"weights": [1.0, -1.0]}, "deep supervision weight 1"),
        ({"target": {"target": 0}}, "needs a tensor target"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = {"outputs": (torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, 2)), "target": torch.zeros(1, 4, 4).long()}
    with pytest.raises(ValueError, match=message):
        deep_supervision_loss(DiceLoss(), **{**args, **kwargs})


class _TwoScaleNet(nn.Module):
    """Returns (main, half-resolution aux) in training mode and main only in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(1, 4, 3, padding=1)
        self.main = nn.Conv2d(4, 1, 1)
        self.aux = nn.Conv2d(4, 1, 1)
        self.aux_calls = 0

    def forward(self, x):
        h = torch.relu(self.body(x))
        if not self.training:
            return self.main(h)
        self.aux_calls += 1
        return self.main(h), self.aux(F.avg_pool2d(h, 2))


def test_engine_trains_a_deep_supervised_net_and_evaluates_its_main_output(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((12, 1, 16, 16), dtype=np.float32)
    data = ArrayDataset(images, (images[:, 0] > 0.5).astype(np.int64), num_classes=2)
    cfg = parse_config({"epochs": 2, "batch_size": 4, "progress": False, "lr": 1e-2})
    model = _TwoScaleNet()
    before = model.aux.weight.detach().clone()
    engine = Engine(model, SegmentationTask(2), cfg, run_dir=None)
    with pytest.raises(TrainingError, match="wrap it in DeepSupervisionLoss"):
        engine.fit([Stage("train", 2, DiceCELoss())], data, data)
    rows = engine.fit([Stage("train", 2, DeepSupervisionLoss(DiceCELoss()))], data, data)
    assert model.aux_calls == 7 and not torch.equal(before, model.aux.weight)  # the aux head trained
    assert len(rows) == 2 and 0.0 <= rows[-1]["val_mean_dice_fg"] <= 1.0
