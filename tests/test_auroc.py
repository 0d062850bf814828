"""AUROC (binary and one-vs-rest macro) against torchmetrics and scipy's Mann-Whitney U (issue 22)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu
from torchmetrics.functional.classification import binary_auroc as tm_binary_auroc
from torchmetrics.functional.classification import multiclass_auroc as tm_multiclass_auroc

from medbalance.engine.tasks import ClassificationTask
from medbalance.metrics import auroc, binary_auroc, class_aurocs, evaluate_labels


def _rounded_probs(g: torch.Generator, n: int, c: int) -> torch.Tensor:
    # two decimals: many tied scores, within a class and across the classes
    return torch.softmax(3 * torch.randn(n, c, generator=g), 1).mul(100).round().div(100)


@pytest.mark.parametrize("seed", range(4))
def test_binary_equals_torchmetrics_and_mann_whitney_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 6, (40,), generator=g).double() / 5  # six values: ties everywhere
    target = torch.randint(0, 2, (40,), generator=g)
    ours = binary_auroc(scores, target)
    assert ours == pytest.approx(tm_binary_auroc(scores, target).item(), abs=1e-6)
    pos, neg = scores[target == 1].numpy(), scores[target == 0].numpy()
    assert ours == pytest.approx(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_one_vs_rest_macro_equals_torchmetrics(seed):
    g = torch.Generator().manual_seed(seed)
    probs, target = _rounded_probs(g, 50, 4), torch.randint(0, 4, (50,), generator=g)
    expected = tm_multiclass_auroc(probs, target, num_classes=4, average=None, thresholds=None)
    assert class_aurocs(probs, target) == pytest.approx(expected.tolist(), abs=1e-6)
    assert auroc(probs, target) == pytest.approx(expected.mean().item(), abs=1e-6)


def test_absent_class_is_left_out_of_the_macro_mean():
    g = torch.Generator().manual_seed(5)
    probs = _rounded_probs(g, 30, 3)
    target = torch.randint(0, 2, (30,), generator=g)  # class 2 never occurs
    per_class = class_aurocs(probs, target)
    assert math.isnan(per_class[2])
    expected = tm_multiclass_auroc(probs, target, num_classes=3, average=None, thresholds=None)
    assert per_class[:2] == pytest.approx(expected[:2].tolist(), abs=1e-6)
    assert auroc(probs, target) == pytest.approx(float(np.mean(per_class[:2])), abs=1e-12)
    # one class only: no ROC curve at all
    assert math.isnan(auroc(probs, torch.zeros(30, dtype=torch.long)))


def test_two_classes_give_the_binary_auc_and_known_values():
    p = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.8])
    target = torch.tensor([0, 0, 1, 1, 0])
    # pairs (pos, neg): 0.35 beats 0.1 only; 0.8 beats 0.1, 0.4 and ties 0.8 -> (1 + 2.5) / 6
    assert binary_auroc(p, target) == pytest.approx(3.5 / 6)
    assert auroc(torch.stack([1 - p, p], 1), target) == pytest.approx(3.5 / 6)
    assert binary_auroc(torch.tensor([1.0, 2.0]), torch.tensor([1, 0])) == 0.0


def test_evaluation_reports_auc_when_probabilities_are_seen():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(23, 3, generator=g), torch.randint(0, 3, (23,), generator=g)
    task = ClassificationTask(3)
    evaluator = task.evaluator()
    for part in (slice(0, 10), slice(10, None)):
        evaluator.update(task.predict(logits[part]), {"target": target[part]}, logits[part])
    scores = evaluator.compute().scores
    assert scores["auc"] == auroc(torch.softmax(logits, 1), target)
    assert "auc" not in evaluate_labels(logits.argmax(1), target, 3, per_image=False).scores


@pytest.mark.parametrize(
    ("probs", "target", "message"),
    [
        (torch.ones(3), torch.zeros(3, dtype=torch.long), "probs must be"),
        (torch.ones(3, 2), torch.zeros(2, dtype=torch.long), "target must be"),
        (torch.ones(3, 2), torch.tensor([0, 1, 2]), r"labels in \[0, 2\)"),
    ],
)
def test_bad_inputs_fail_with_one_line(probs, target, message):
    with pytest.raises(ValueError, match=message):
        auroc(probs, target)
