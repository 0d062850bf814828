"""Tests for medbalance.metrics against torchmetrics and a loop-based numpy reference."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_jaccard_index,
    multiclass_precision,
    multiclass_recall,
)

from medbalance.metrics import ConfusionMatrix, classification_scores, confusion_matrix, segmentation_scores
from tests._reference.metrics_numpy import (
    classification_scores_np,
    confusion_matrix_np,
    segmentation_scores_np,
)

SHAPES = [(64,), (3, 12, 12), (2, 5, 6, 6)]  # classification, 2D, 3D
IGNORE = 255


def make_labels(
    shape: tuple[int, ...],
    num_classes: int,
    seed: int,
    *,
    target_classes: list[int] | None = None,
    pred_classes: list[int] | None = None,
    ignore_index: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Imbalanced target and a noisy prediction; classes can be kept out of either side."""
    g = torch.Generator().manual_seed(seed)
    target_classes = list(range(num_classes)) if target_classes is None else target_classes
    pred_classes = list(range(num_classes)) if pred_classes is None else pred_classes
    weights = torch.tensor([2.0**-i for i in range(len(target_classes))])  # head-to-tail
    target = torch.tensor(target_classes)[torch.multinomial(weights, math.prod(shape), True, generator=g)]
    target = target.view(shape)
    noise = torch.tensor(pred_classes)[torch.randint(len(pred_classes), shape, generator=g)]
    keep_right = (torch.rand(shape, generator=g) < 0.6) & torch.isin(target, torch.tensor(pred_classes))
    preds = torch.where(keep_right, target, noise)
    if ignore_index is not None:
        target = torch.where(torch.rand(shape, generator=g) < 0.1, torch.tensor(ignore_index), target)
    return preds, target


def assert_scores_equal(ours: dict, ref: dict) -> None:
    assert ours.keys() == ref.keys()
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key


def tm_kwargs(num_classes: int, ignore_index: int | None) -> dict:
    return {"num_classes": num_classes, "ignore_index": ignore_index}


# --------------------------------------------------------------------------- confusion matrix


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("num_classes", [2, 5])
@pytest.mark.parametrize("ignore_index", [None, IGNORE, -1])
def test_confusion_matrix_matches_torchmetrics_and_numpy(shape, num_classes, ignore_index):
    preds, target = make_labels(shape, num_classes, seed=num_classes, ignore_index=ignore_index)
    cm = confusion_matrix(preds, target, num_classes, ignore_index=ignore_index)
    assert cm.dtype == torch.int64 and cm.shape == (num_classes, num_classes)
    expected = multiclass_confusion_matrix(preds, target, **tm_kwargs(num_classes, ignore_index))
    torch.testing.assert_close(cm, expected.long())
    np.testing.assert_array_equal(cm.numpy(), confusion_matrix_np(preds, target, num_classes, ignore_index))


def test_confusion_matrix_rows_are_target_columns_are_preds():
    cm = confusion_matrix(torch.tensor([2, 2, 0]), torch.tensor([1, 2, 0]), 3)
    assert cm[1, 2] == 1 and cm[2, 1] == 0


def test_ignore_index_inside_label_range_drops_that_row():
    preds, target = make_labels((2, 8, 8), 3, seed=4)
    cm = confusion_matrix(preds, target, 3, ignore_index=0)
    assert cm[0].sum() == 0
    torch.testing.assert_close(cm, multiclass_confusion_matrix(preds, target, 3, ignore_index=0).long())


def test_ignored_positions_may_hold_any_prediction():
    target = torch.tensor([[0, 1, IGNORE]])
    preds = torch.tensor([[0, 1, 99]])
    assert confusion_matrix(preds, target, 2, ignore_index=IGNORE).sum() == 2


@pytest.mark.parametrize("shape", SHAPES)
def test_per_image_matrices_are_slices_and_sum_to_the_total(shape):
    preds, target = make_labels(shape, 4, seed=1, ignore_index=IGNORE)
    per_image = confusion_matrix(preds, target, 4, ignore_index=IGNORE, per_image=True)
    assert per_image.shape == (shape[0], 4, 4)
    torch.testing.assert_close(per_image.sum(0), confusion_matrix(preds, target, 4, ignore_index=IGNORE))
    for i in range(shape[0]):
        single = confusion_matrix(preds[i : i + 1], target[i : i + 1], 4, ignore_index=IGNORE)
        torch.testing.assert_close(per_image[i], single)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.bool])
def test_integer_and_bool_label_dtypes(dtype):
    preds, target = make_labels((2, 6, 6), 2, seed=3)
    cm = confusion_matrix(preds.to(dtype), target.to(dtype), 2)
    torch.testing.assert_close(cm, confusion_matrix(preds, target, 2))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("preds", "target", "kwargs", "message"),
    [
        (
            torch.zeros(2, 4, 4, dtype=torch.long),
            torch.zeros(2, 1, 4, 4, dtype=torch.long),
            {},
            r"same shape, found preds \(2, 4, 4\) and target \(2, 1, 4, 4\)",
        ),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), {}, r"preds must hold integer .*torch.float32"),
        (
            torch.zeros(2, 3, dtype=torch.long),
            torch.zeros(2, 3, dtype=torch.float16),
            {},
            r"target must hold integer .*torch.float16",
        ),
        (
            torch.zeros(4, dtype=torch.long),
            torch.tensor([0, 1, 7, 2]),
            {},
            r"target has label 7 but num_classes is 7 \(expected values in \[0, 7\)\)",
        ),
        (torch.tensor([0, -1, 2, 2]), torch.zeros(4, dtype=torch.long), {}, r"preds has label -1 but num_classes is 7"),
        (
            torch.zeros(3, dtype=torch.long),
            torch.tensor([0, 255, 9]),
            {"ignore_index": 255},
            r"target has label 9 .*\[0, 7\) or ignore_index=255",
        ),
        (
            torch.zeros(3, dtype=torch.long),
            torch.zeros(3, dtype=torch.long),
            {"ignore_index": 1.5},
            r"ignore_index must be an int or None, found 1.5",
        ),
        (np.zeros(3, dtype=np.int64), torch.zeros(3, dtype=torch.long), {}, r"preds must be a torch.Tensor .*ndarray"),
        (torch.tensor(1), torch.tensor(1), {}, r"preds must have shape \(N,\) or \(N, \*spatial\)"),
    ],
)
def test_confusion_matrix_rejects_bad_input(preds, target, kwargs, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(preds, target, 7, **kwargs)


@pytest.mark.parametrize("num_classes", [1, 0, 2.0, True])
def test_num_classes_must_be_int_at_least_two(num_classes):
    labels = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"num_classes must be an int >= 2"):
        confusion_matrix(labels, labels, num_classes)
    with pytest.raises(ValueError, match=r"num_classes must be an int >= 2"):
        ConfusionMatrix(num_classes)


@pytest.mark.parametrize(
    ("cm", "message"),
    [
        (torch.ones(3, 4, dtype=torch.long), r"shape \(C, C\) or \(N, C, C\) with C >= 2, found \(3, 4\)"),
        (torch.ones(1, 1, dtype=torch.long), r"found \(1, 1\)"),
        (torch.ones(2, 2, 2, 2, dtype=torch.long), r"found \(2, 2, 2, 2\)"),
        (torch.zeros(3, 3, dtype=torch.long), r"cm is empty"),
        (torch.zeros(0, 3, 3, dtype=torch.long), r"cm is empty"),
        (torch.tensor([[1.0, -1.0], [0.0, 2.0]]), r"non-negative"),
        (torch.tensor([[1.0, float("nan")], [0.0, 2.0]]), r"non-finite"),
        (torch.ones(2, 2, dtype=torch.bool), r"dtype torch.bool"),
        ([[1, 0], [0, 1]], r"cm must be a torch.Tensor .*list"),
    ],
)
def test_segmentation_scores_rejects_bad_cm(cm, message):
    with pytest.raises(ValueError, match=message):
        segmentation_scores(cm)


def test_classification_scores_rejects_per_image_cm():
    with pytest.raises(ValueError, match=r"shape \(C, C\) .*found \(2, 3, 3\) \(sum a per-image matrix"):
        classification_scores(torch.ones(2, 3, 3, dtype=torch.long))


# --------------------------------------------------------------------------- segmentation


SCENARIOS = {
    "all_present": {},
    # class 3 absent from both sides, class 2 only predicted, class 1 only in the target
    "absent": {"target_classes": [0, 1, 4], "pred_classes": [0, 2, 4]},
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("ignore_index", [None, IGNORE])
def test_dataset_level_segmentation_scores(shape, scenario, ignore_index):
    preds, target = make_labels(shape, 5, seed=7, ignore_index=ignore_index, **SCENARIOS[scenario])
    scores = segmentation_scores(confusion_matrix(preds, target, 5, ignore_index=ignore_index))
    assert_scores_equal(scores, segmentation_scores_np(preds, target, 5, per_image=False, ignore_index=ignore_index))

    # torchmetrics' macro average also skips classes absent from both sides: the means agree.
    kw = tm_kwargs(5, ignore_index)
    for ours, tm in [
        ("dice", multiclass_f1_score),
        ("iou", multiclass_jaccard_index),
        ("precision", multiclass_precision),
        ("recall", multiclass_recall),
    ]:
        assert scores[f"mean_{ours}"] == pytest.approx(float(tm(preds, target, average="macro", **kw)), abs=1e-6)
        per_class = tm(preds, target, average="none", **kw)
        for c in range(5):
            if c not in scores["absent_classes"]:
                assert scores[ours][c] == pytest.approx(float(per_class[c]), abs=1e-6), (ours, c)
    accuracy = multiclass_accuracy(preds, target, average="micro", **kw)
    assert scores["pixel_accuracy"] == pytest.approx(float(accuracy), abs=1e-6)


def test_absent_classes_follow_the_empty_pair_definition():
    """Class 3 absent from both sides: 1.0 and skipped (torchmetrics: 0.0 in average='none')."""
    preds, target = make_labels((2, 10, 10), 5, seed=2, **SCENARIOS["absent"])
    scores = segmentation_scores(confusion_matrix(preds, target, 5))
    tm_dice = multiclass_f1_score(preds, target, 5, average="none")
    assert tm_dice[3] == 0.0
    for name in ("dice", "iou", "precision", "recall"):
        assert scores[name][3] == 1.0
        assert scores[f"mean_{name}"] == pytest.approx(np.mean([scores[name][c] for c in (0, 1, 2, 4)]))
        assert scores[f"mean_{name}_fg"] == pytest.approx(np.mean([scores[name][c] for c in (1, 2, 4)]))
    # class 2 is predicted but absent from the target; class 1 is never predicted (missed)
    assert scores["dice"][2] == scores["iou"][2] == scores["precision"][2] == scores["recall"][2] == 0.0
    assert scores["dice"][1] == scores["iou"][1] == scores["precision"][1] == scores["recall"][1] == 0.0
    assert scores["empty_pairs"] == 1 and scores["empty_per_class"] == [0, 0, 0, 1, 0]
    assert scores["absent_classes"] == [3]
    assert "num_images" not in scores


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("ignore_index", [None, IGNORE])
def test_per_image_segmentation_scores(shape, scenario, ignore_index):
    preds, target = make_labels(shape, 5, seed=11, ignore_index=ignore_index, **SCENARIOS[scenario])
    scores = segmentation_scores(confusion_matrix(preds, target, 5, ignore_index=ignore_index, per_image=True))
    assert_scores_equal(scores, segmentation_scores_np(preds, target, 5, per_image=True, ignore_index=ignore_index))
    assert scores["num_images"] == shape[0]
    if len(shape) == 1:
        return  # torchmetrics' samplewise mode needs spatial dims

    # torchmetrics scores every (image, class) pair (0.0 when empty); we average over present pairs
    kept = torch.ones(shape, dtype=torch.bool) if ignore_index is None else target != ignore_index
    present = torch.stack([((target == c) | (preds == c)) & kept for c in range(5)], 1).flatten(2).any(-1)
    kw = {"average": "none", "multidim_average": "samplewise", **tm_kwargs(5, ignore_index)}
    for ours, tm in [("dice", multiclass_f1_score), ("precision", multiclass_precision), ("recall", multiclass_recall)]:
        pairs = tm(preds, target, **kw)  # (N, C)
        for c in range(5):
            expected = pairs[present[:, c], c].mean().item() if present[:, c].any() else 1.0
            assert scores[ours][c] == pytest.approx(expected, abs=1e-6), (ours, c)


def test_binary_empty_masks_per_image_vs_summed():
    """SPEC 10: an empty prediction of an empty mask is 1.0 for the pair and skipped from means."""
    target = torch.zeros(3, 4, 4, dtype=torch.long)
    preds = torch.zeros(3, 4, 4, dtype=torch.long)
    target[0, :2, :2] = 1  # 4 foreground pixels
    preds[0, :2, :1] = 1  # 2 of them found
    preds[1, 3, 3] = 1  # a false positive on an image with an empty mask
    # image 2: empty mask, empty prediction
    per_image = segmentation_scores(confusion_matrix(preds, target, 2, per_image=True))
    assert per_image["mean_dice_fg"] == pytest.approx((2 * 2 / 6 + 0.0) / 2)  # image 2 skipped
    assert per_image["mean_iou_fg"] == pytest.approx((2 / 4 + 0.0) / 2)
    assert per_image["empty_pairs"] == 1 and per_image["empty_per_class"] == [0, 1]
    summed = segmentation_scores(confusion_matrix(preds, target, 2))
    assert summed["mean_dice_fg"] == pytest.approx(2 * 2 / (4 + 3))
    assert summed["empty_pairs"] == 0


def test_all_masks_empty_and_predicted_empty_scores_one():
    labels = torch.zeros(4, 8, 8, dtype=torch.long)
    for per_image in (False, True):
        scores = segmentation_scores(confusion_matrix(labels, labels, 2, per_image=per_image))
        assert scores["mean_dice_fg"] == scores["mean_iou_fg"] == scores["dice"][1] == 1.0
        assert scores["mean_dice"] == 1.0 and scores["absent_classes"] == [1]
        assert scores["empty_pairs"] == (4 if per_image else 1)


def test_per_image_skips_fully_ignored_images_from_pixel_accuracy():
    target = torch.tensor([[0, 1], [IGNORE, IGNORE]])
    preds = torch.tensor([[0, 0], [1, 1]])
    scores = segmentation_scores(confusion_matrix(preds, target, 2, ignore_index=IGNORE, per_image=True))
    assert scores["pixel_accuracy"] == 0.5
    assert scores["empty_pairs"] == 2  # both classes of the fully ignored image


def test_float_cm_after_all_reduce_gives_the_same_scores():
    preds, target = make_labels((3, 8, 8), 4, seed=5)
    for per_image in (False, True):
        cm = confusion_matrix(preds, target, 4, per_image=per_image)
        from_float, from_int = segmentation_scores(cm.float()), segmentation_scores(cm)
        assert from_float.keys() == from_int.keys()
        for key, value in from_int.items():  # pytest.approx compares flat values only (pytest >= 9.2)
            assert from_float[key] == (pytest.approx(value) if isinstance(value, (float, list)) else value), key


# --------------------------------------------------------------------------- classification


def test_classification_scores_match_torchmetrics_when_all_classes_present():
    preds, target = make_labels((500,), 6, seed=9)
    scores = classification_scores(confusion_matrix(preds, target, 6))
    assert_scores_equal(scores, classification_scores_np(preds, target, 6))
    assert scores["accuracy"] == pytest.approx(float(multiclass_accuracy(preds, target, 6, average="micro")))
    for ours, tm in [("precision", multiclass_precision), ("recall", multiclass_recall), ("f1", multiclass_f1_score)]:
        assert scores[f"macro_{ours}"] == pytest.approx(float(tm(preds, target, 6, average="macro")))
        assert scores[ours] == pytest.approx(tm(preds, target, 6, average="none").tolist())
    balanced = multiclass_accuracy(preds, target, 6, average="macro")
    assert scores["macro_recall"] == pytest.approx(float(balanced))
    assert scores["support"] == torch.bincount(target, minlength=6).tolist()


def test_classification_macro_means_skip_classes_absent_from_target():
    """torchmetrics keeps a predicted-but-absent class in its macro mean (as 0); we skip it."""
    target = torch.tensor([0, 0, 0, 1, 1, 1])
    preds = torch.tensor([0, 0, 2, 1, 1, 0])  # class 2 predicted, never true; class 3 nowhere
    scores = classification_scores(confusion_matrix(preds, target, 4))
    assert_scores_equal(scores, classification_scores_np(preds, target, 4))
    assert scores["absent_classes"] == [2, 3]
    assert scores["precision"][2] == scores["recall"][2] == scores["f1"][2] == 0.0
    assert scores["macro_recall"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert float(multiclass_recall(preds, target, 4, average="macro")) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert scores["macro_precision"] == pytest.approx((2 / 3 + 1.0) / 2)


def test_classification_class_never_predicted_has_precision_zero():
    target = torch.tensor([0, 1, 2, 2])
    preds = torch.tensor([0, 1, 1, 1])
    scores = classification_scores(confusion_matrix(preds, target, 3))
    assert scores["precision"][2] == 0.0 and scores["recall"][2] == 0.0
    assert scores["macro_precision"] == pytest.approx((1.0 + 1 / 3 + 0.0) / 3)


# --------------------------------------------------------------------------- properties


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    num_classes=st.integers(2, 5),
    shape=st.sampled_from([(7,), (2, 3, 4), (3, 2, 2, 3)]),
    target_drop=st.integers(0, 3),
    pred_drop=st.integers(0, 3),
    ignore_index=st.sampled_from([None, IGNORE]),
    per_image=st.booleans(),
)
def test_segmentation_scores_match_numpy_reference(
    seed, num_classes, shape, target_drop, pred_drop, ignore_index, per_image
):
    target_classes = list(range(num_classes))[: max(1, num_classes - target_drop)]
    pred_classes = list(range(num_classes))[max(0, min(pred_drop, num_classes - 1)) :]
    preds, target = make_labels(
        shape, num_classes, seed, target_classes=target_classes, pred_classes=pred_classes, ignore_index=ignore_index
    )
    if ignore_index is not None and bool((target == ignore_index).all()):
        return  # nothing counted: an error, tested above
    cm = confusion_matrix(preds, target, num_classes, ignore_index=ignore_index, per_image=per_image)
    scores = segmentation_scores(cm)
    ref = segmentation_scores_np(preds, target, num_classes, per_image=per_image, ignore_index=ignore_index)
    assert_scores_equal(scores, ref)
    json.dumps(scores, allow_nan=False)
    for name in ("dice", "iou", "precision", "recall"):
        assert all(0.0 <= v <= 1.0 for v in scores[name])
    if per_image:
        summed = confusion_matrix(preds, target, num_classes, ignore_index=ignore_index)
        torch.testing.assert_close(cm.sum(0), summed)
    classification = classification_scores(cm.sum(0) if per_image else cm)
    assert_scores_equal(
        classification,
        classification_scores_np(
            preds[target != ignore_index] if ignore_index is not None else preds,
            target[target != ignore_index] if ignore_index is not None else target,
            num_classes,
        ),
    )
    json.dumps(classification, allow_nan=False)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), num_classes=st.integers(2, 6), per_image=st.booleans())
def test_perfect_prediction_scores_one(seed, num_classes, per_image):
    _, target = make_labels((3, 5, 5), num_classes, seed)
    scores = segmentation_scores(confusion_matrix(target, target, num_classes, per_image=per_image))
    for name in ("dice", "iou", "precision", "recall"):
        assert scores[f"mean_{name}"] == scores[f"mean_{name}_fg"] == 1.0
        assert scores[name] == [1.0] * num_classes
    assert scores["pixel_accuracy"] == 1.0


# --------------------------------------------------------------------------- stateful wrapper


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("ignore_index", [None, IGNORE])
def test_stateful_updates_equal_functional_on_concatenation(per_image, ignore_index):
    batches = [make_labels((n, 6, 6), 3, seed=n, ignore_index=ignore_index) for n in (2, 3, 1)]
    metric = ConfusionMatrix(3, ignore_index=ignore_index, per_image=per_image)
    for preds, target in batches:
        metric.update(preds, target)
    preds = torch.cat([p for p, _ in batches])
    target = torch.cat([t for _, t in batches])
    expected = confusion_matrix(preds, target, 3, ignore_index=ignore_index, per_image=per_image)
    torch.testing.assert_close(metric.compute(), expected)
    assert metric.cm.dtype == torch.int64
    assert segmentation_scores(metric.compute()) == segmentation_scores(expected)


def test_stateful_reset_and_compute_returns_a_copy():
    metric = ConfusionMatrix(2, per_image=True)
    assert metric.cm.shape == (0, 2, 2)
    metric.update(torch.tensor([[0, 1]]), torch.tensor([[1, 1]]))
    result = metric.compute()
    result.zero_()
    assert metric.cm.sum() == 2
    metric.reset()
    assert metric.cm.shape == (0, 2, 2)
    summed = ConfusionMatrix(2)
    summed.update(torch.tensor([0, 1]), torch.tensor([1, 1]))
    summed.reset()
    torch.testing.assert_close(summed.cm, torch.zeros(2, 2, dtype=torch.int64))
    assert "per_image=False" in repr(summed)


@pytest.mark.parametrize("per_image", [False, True])
def test_stateful_empty_batch_changes_nothing(per_image):
    metric = ConfusionMatrix(3, per_image=per_image)
    metric.update(torch.tensor([[0, 2]]), torch.tensor([[0, 1]]))
    before = metric.compute()
    empty = torch.zeros(0, 2, dtype=torch.long)
    metric.update(empty, empty)
    torch.testing.assert_close(metric.compute(), before)


def test_stateful_update_validates_like_functional():
    metric = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"target has label 3 but num_classes is 3"):
        metric.update(torch.tensor([0, 1]), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"ignore_index must be an int or None"):
        ConfusionMatrix(3, ignore_index="255")
