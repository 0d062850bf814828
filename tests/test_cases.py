"""CaseTable: hand-computed cases, MONAI / torchmetrics references, ignore_index, empty policies, files."""

from __future__ import annotations

import csv
import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou, compute_surface_dice
from torchmetrics.functional.classification import multiclass_f1_score, multiclass_precision, multiclass_recall

from medbalance.metrics import CaseTable, confusion_matrix, segmentation_scores

IGNORE = 255


def by_class(rows: list[dict]) -> dict[int, dict]:
    return {row["class_index"]: row for row in rows}


def assert_same(ours: float, ref: float, rel: float = 1e-5) -> None:
    if math.isnan(ref):
        assert math.isnan(ours)
    else:
        assert ours == pytest.approx(ref, rel=rel, abs=1e-9)


# --------------------------------------------------------------------------- hand-computed


def test_hand_computed_three_classes():
    target = np.array(
        [
            [0, 0, 1, 1],
            [0, 0, 1, 1],
            [2, 2, 0, 0],
            [2, 2, 0, 0],
        ]
    )
    labels = np.array(
        [
            [0, 1, 1, 1],
            [0, 0, 1, 0],
            [2, 0, 0, 0],
            [2, 2, 2, 0],
        ]
    )
    rows = by_class(CaseTable(3, class_names=["bg", "a", "b"], tolerance=1.0).update("x", labels, target))
    assert list(rows) == [1, 2]  # background not scored
    # class 1: target 4 px, pred 4 px, TP 3 -> dice 6/8, iou 3/5, precision 3/4, recall 3/4
    a = rows[1]
    assert (a["class"], a["target_pixels"], a["pred_pixels"]) == ("a", 4, 4)
    assert (a["dice"], a["iou"], a["precision"], a["recall"]) == pytest.approx((0.75, 0.6, 0.75, 0.75))
    # class 2: target 4 px, pred 4 px ((2,0), (3,0), (3,1), (3,2)), TP 3
    assert (rows[2]["dice"], rows[2]["iou"]) == pytest.approx((0.75, 0.6))
    # borders of class 1: every pixel of both masks. Target {(0,2),(0,3),(1,2),(1,3)}, pred
    # {(0,1),(0,2),(0,3),(1,2)}: pred (0,1) is 1 from (0,2), the rest 0; target (1,3) is 1 from
    # (0,3) / (1,2), the rest 0. Sorted [0,0,0,1] -> 95th percentile 0.85 on both sides.
    assert a["hd95"] == pytest.approx(0.85)
    assert a["nsd"] == 1.0
    # tolerance 0.5: 6 of the 8 border pixels lie on the other border
    table = CaseTable(3, tolerance=0.5)
    assert by_class(table.update("x", labels, target))[1]["nsd"] == 6 / 8


# --------------------------------------------------------------------------- references


def random_case(rng: np.random.Generator, shape: tuple[int, ...], num_classes: int, *, absent: int | None):
    """Blocky target (so surfaces are not pure noise) and a prediction that is right ~70% of the time."""
    coarse = rng.integers(0, num_classes, size=tuple(max(s // 3, 1) for s in shape))
    target = coarse
    for axis, size in enumerate(shape):
        target = np.repeat(target, 3, axis=axis).take(range(size), axis=axis, mode="clip")
    if absent is not None:
        target = np.where(target == absent, 0, target)
    labels = np.where(rng.random(shape) < 0.7, target, rng.integers(0, num_classes, size=shape))
    if rng.random() < 0.3 and absent is not None:
        labels = np.where(labels == absent, 0, labels)  # sometimes the absent class is not predicted either
    return labels, target


def monai_reference(labels, target, num_classes, *, ignore_index, spacing, tolerance, ignore_empty):
    """MONAI's per-class Dice, IoU, HD95 and NSD on one-hot maps with ignored pixels cleared from both."""
    valid = torch.from_numpy(np.ones(target.shape, bool) if ignore_index is None else target != ignore_index)
    safe_target = torch.from_numpy(np.where(valid.numpy(), target, 0))

    def one_hot(x: torch.Tensor) -> torch.Tensor:
        hot = F.one_hot(x.long(), num_classes).movedim(-1, 0) * valid
        return hot[None].float()

    p, t = one_hot(torch.from_numpy(labels)), one_hot(safe_target)
    spacing = list(spacing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = {"include_background": True}
        return {
            "dice": compute_dice(p, t, ignore_empty=ignore_empty, **kw)[0],
            "iou": compute_iou(p, t, ignore_empty=ignore_empty, **kw)[0],
            "hd95": compute_hausdorff_distance(p, t, percentile=95, spacing=spacing, **kw)[0],
            "nsd": compute_surface_dice(p, t, [tolerance] * num_classes, spacing=spacing, **kw)[0],
        }


@settings(max_examples=12, deadline=None)
@example((9, 10, 8), IGNORE, "skip", 922)  # HD95 1.2e-5 from MONAI's float32 percentile (below)
@given(
    st.sampled_from([(20, 17), (9, 10, 8)]),
    st.sampled_from([None, IGNORE]),
    st.sampled_from(["skip", "one"]),
    st.integers(0, 2**32 - 1),
)
def test_rows_match_monai_and_torchmetrics(shape, ignore_index, empty, seed):
    rng = np.random.default_rng(seed)
    num_classes = 4
    labels, target = random_case(rng, shape, num_classes, absent=3)
    if ignore_index is not None:
        target = np.where(rng.random(shape) < 0.15, ignore_index, target)
    spacing = tuple(rng.uniform(0.3, 2.5, size=len(shape)))
    tolerance = float(rng.uniform(0.5, 3.0))
    table = CaseTable(num_classes, include_background=True, ignore_index=ignore_index, tolerance=tolerance, empty=empty)
    rows = by_class(table.update("c", labels, target, spacing=spacing))
    ref = monai_reference(
        labels,
        target,
        num_classes,
        ignore_index=ignore_index,
        spacing=spacing,
        tolerance=tolerance,
        ignore_empty=empty == "skip",
    )
    flat = {"preds": torch.from_numpy(labels).flatten(), "target": torch.from_numpy(target).flatten()}
    tm = {"num_classes": num_classes, "average": None, "ignore_index": ignore_index}
    f1, precision, recall = (fn(**flat, **tm) for fn in (multiclass_f1_score, multiclass_precision, multiclass_recall))
    for c, row in rows.items():
        assert_same(row["dice"], float(ref["dice"][c]))
        assert_same(row["iou"], float(ref["iou"][c]))
        if row["target_pixels"] > 0:
            assert_same(row["dice"], float(f1[c]))
            assert_same(row["precision"], float(precision[c]))
            assert_same(row["recall"], float(recall[c]))
            assert_same(row["nsd"], float(ref["nsd"][c]))
            # MONAI takes the 95th percentile with torch.quantile in float32, whose interpolation
            # position 0.95 (n - 1) is rounded to float32: up to ~1e-5 relative where the percentile
            # falls between two far-apart distances (seed 922, (9, 10, 8): 1.2e-5; exact in float64)
            assert_same(row["hd95"], float(ref["hd95"][c]), rel=1e-4)
        else:
            assert math.isnan(row["hd95"])
            # MONAI's NSD of an empty pair is NaN (both empty) or 0 (predicted): our "one" policy is 1 / 0
            expected = {"skip": math.nan, "one": float(row["pred_pixels"] == 0)}[empty]
            assert_same(row["nsd"], expected)
            assert_same(row["precision"], expected)
            assert_same(row["recall"], expected)


def test_torch_input_equals_numpy_input():
    rng = np.random.default_rng(1)
    labels, target = random_case(rng, (12, 14), 3, absent=None)
    from_numpy = CaseTable(3).update("a", labels, target, spacing=(0.5, 2.0))
    from_torch = CaseTable(3).update("a", torch.from_numpy(labels), torch.from_numpy(target), spacing=(0.5, 2.0))
    assert from_numpy == from_torch
    flipped = CaseTable(3).update("a", np.flip(labels, 0), np.flip(target, 0), spacing=(0.5, 2.0))
    assert [row["dice"] for row in flipped] == [row["dice"] for row in from_numpy]


# --------------------------------------------------------------------------- ignore_index


def test_ignored_pixels_change_nothing():
    """Whatever is predicted where the target is ignore_index, every row is the same."""
    rng = np.random.default_rng(2)
    labels, target = random_case(rng, (24, 21), 3, absent=None)
    fov = np.zeros(target.shape, bool)
    fov[3:20, 2:18] = True  # a field of view
    target = np.where(fov, target, IGNORE)
    noisy = np.where(fov, labels, rng.integers(0, 3, size=labels.shape))
    zeros = np.where(fov, labels, 0)
    twos = np.where(fov, labels, 2)
    tables = [CaseTable(3, include_background=True, ignore_index=IGNORE) for _ in range(3)]
    rows = [t.update("a", x, target, spacing=(1.0, 0.7)) for t, x in zip(tables, (noisy, zeros, twos))]
    assert rows[0] == rows[1] == rows[2]
    # and the pixel counts are those inside the field of view
    for row in rows[0]:
        assert row["pred_pixels"] == int((zeros[fov] == row["class_index"]).sum())


def test_ignore_index_that_is_a_class_is_not_scored():
    table = CaseTable(3, include_background=True, ignore_index=1)
    rows = table.update("a", np.array([[0, 1], [2, 2]]), np.array([[0, 1], [2, 1]]))
    assert [row["class_index"] for row in rows] == [0, 2]
    assert by_class(rows)[2]["precision"] == 1.0  # the predicted 2 at the ignored pixel does not count


# --------------------------------------------------------------------------- empty policy


def two_cases_with_an_empty_class():
    """Class 2 is absent from case b's target; c has it absent and predicted."""
    target_a = np.array([[0, 1, 1, 0], [0, 2, 2, 0]])
    target_b = np.array([[0, 1, 1, 0], [0, 0, 0, 0]])
    labels_a = np.array([[0, 1, 1, 0], [0, 2, 0, 0]])  # class 2: dice 2/3
    labels_b = target_b.copy()  # class 2 not predicted: both empty
    labels_c = np.array([[0, 1, 1, 0], [0, 0, 0, 2]])  # class 2 predicted on an empty target
    return [("a", labels_a, target_a), ("b", labels_b, target_b), ("c", labels_c, target_b)]


@pytest.mark.parametrize(
    ("empty", "b_value", "c_value", "mean"),
    [("skip", math.nan, math.nan, 2 / 3), ("one", 1.0, 0.0, (2 / 3 + 1.0 + 0.0) / 3), ("zero", 0.0, 0.0, 2 / 9)],
)
def test_empty_policies(empty, b_value, c_value, mean):
    table = CaseTable(3, empty=empty)
    for case in two_cases_with_an_empty_class():
        table.update(*case)
    rows = {(row["case"], row["class_index"]): row for row in table.rows}
    assert rows["a", 2]["dice"] == pytest.approx(2 / 3)
    for case, value in (("b", b_value), ("c", c_value)):
        for metric in ("dice", "iou", "precision", "recall", "nsd"):
            assert_same(rows[case, 2][metric], value)
        assert math.isnan(rows[case, 2]["hd95"])
    summary = table.summary()
    stats = summary["per_class"]["2"]
    assert stats["dice"] == pytest.approx(mean)
    assert stats["dice_n"] == (1 if empty == "skip" else 3)
    assert stats["hd95_n"] == 1
    assert (stats["empty_pairs"], stats["empty_pairs_predicted"]) == (2, 1)
    assert (summary["empty_pairs"], summary["empty_pairs_predicted"], summary["missed_pairs"]) == (2, 1, 0)
    assert summary["per_class"]["1"]["dice"] == 1.0 and summary["per_class"]["1"]["dice_std"] == 0.0


def test_missed_class_scores_zero_and_undefined_hd95():
    table = CaseTable(2, empty="one")
    row = table.update("a", np.zeros((5, 5), int), np.eye(5, dtype=int))[0]
    assert (row["dice"], row["iou"], row["precision"], row["recall"], row["nsd"]) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert math.isnan(row["hd95"])
    summary = table.summary()
    assert summary["missed_pairs"] == 1 and summary["per_class"]["1"]["hd95_n"] == 0
    assert math.isnan(summary["per_class"]["1"]["hd95"]) and math.isnan(summary["mean"]["hd95"])


# --------------------------------------------------------------------------- pooled vs mean


def test_pooled_versus_mean_over_cases():
    big_t, big_p = np.zeros((10, 10), int), np.zeros((10, 10), int)
    big_t[:8, :8], big_p[:8, :6] = 1, 1  # 64 target, 48 predicted, TP 48: dice 96/112
    small_t, small_p = np.zeros((10, 10), int), np.zeros((10, 10), int)
    small_t[0, :2], small_p[0, 1:3] = 1, 1  # 2 target, 2 predicted, TP 1: dice 2/4
    table = CaseTable(2, surface=False)
    table.update("big", big_p, big_t)
    table.update("small", small_p, small_t)
    summary = table.summary()
    assert summary["per_class"]["1"]["dice"] == pytest.approx((96 / 112 + 0.5) / 2)
    assert summary["per_class"]["1"]["dice_std"] == pytest.approx(abs(96 / 112 - 0.5) / 2)
    assert summary["pooled"]["1"]["dice"] == pytest.approx(2 * 49 / (66 + 50))
    assert summary["pooled"]["1"]["precision"] == pytest.approx(49 / 50)
    # pooled = torchmetrics on every pixel of the dataset, and segmentation_scores of the summed matrix
    preds, target = torch.from_numpy(np.stack([big_p, small_p])), torch.from_numpy(np.stack([big_t, small_t]))
    tm_dice = multiclass_f1_score(preds.flatten(), target.flatten(), num_classes=2, average=None)
    assert summary["pooled"]["1"]["dice"] == pytest.approx(float(tm_dice[1]))
    pooled_iou = segmentation_scores(confusion_matrix(preds, target, 2))["iou"][1]
    assert summary["pooled"]["1"]["iou"] == pytest.approx(pooled_iou)
    assert summary["pooled_mean"]["dice"] == summary["pooled"]["1"]["dice"]
    assert summary["mean"]["dice"] == summary["per_class"]["1"]["dice"]
    assert "hd95" not in summary["mean"] and "hd95" not in table.rows[0]


def test_pooled_class_absent_everywhere_follows_the_policy():
    target = np.array([[0, 1], [1, 0]])
    for empty, expected in (("skip", math.nan), ("one", 1.0), ("zero", 0.0)):
        table = CaseTable(3, empty=empty, surface=False)
        table.update("a", target, target)
        assert_same(table.summary()["pooled"]["2"]["dice"], expected)
        assert table.summary()["pooled_mean"]["dice"] == (1.0 if empty == "skip" else (1.0 + expected) / 2)


# --------------------------------------------------------------------------- files


def test_write_csv_and_json(tmp_path):
    table = CaseTable(3, class_names=["bg", "vessel", "lesion"], tolerance=1.5)
    for case in two_cases_with_an_empty_class():
        table.update(*case, spacing=(0.8, 1.2))
    csv_path, json_path = table.write(tmp_path / "evaluations" / "run1")
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    assert list(rows[0]) == ["case", "class_index", "class", "target_pixels", "pred_pixels", *table.metrics]
    assert table.metrics == ("dice", "iou", "precision", "recall", "hd95", "nsd")
    for read, row in zip(rows, table.rows):
        assert read["case"] == row["case"] and read["class"] == row["class"]
        assert int(read["target_pixels"]) == row["target_pixels"]
        for metric in table.metrics:
            assert_same(float(read[metric]), row[metric], rel=1e-12)

    def no_nan(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    document = json.loads(json_path.read_text(), parse_constant=no_nan)
    assert len(document["rows"]) == 6 and document["rows"][1]["case"] == "a"
    assert document["rows"][3]["dice"] is None  # case b, lesion: skipped empty pair
    assert document["summary"]["empty_pairs"] == 2
    lesion = table.summary()["per_class"]["lesion"]
    assert document["summary"]["per_class"]["lesion"]["dice"] == pytest.approx(lesion["dice"])


def test_write_never_overwrites(tmp_path):
    table = CaseTable(2, surface=False)
    table.update("a", np.eye(3, dtype=int), np.eye(3, dtype=int))
    (tmp_path / "cases.json").write_text("{}")
    with pytest.raises(FileExistsError, match="cases.json"):
        table.write(tmp_path)
    assert not (tmp_path / "cases.csv").exists()  # nothing written when one file is there
    (tmp_path / "cases.json").unlink()
    table.write(tmp_path)
    with pytest.raises(FileExistsError, match="cases.csv"):
        table.write(tmp_path)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"empty": "nan"}, "empty must be one of"),
        ({"class_names": ["a"]}, "class_names must list 2 names"),
        ({"tolerance": -1.0}, "tolerance must be"),
        ({"ignore_index": 1.5}, "ignore_index must be"),
    ],
)
def test_invalid_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CaseTable(2, **kwargs)


def test_invalid_updates():
    table = CaseTable(3, ignore_index=IGNORE)
    ok = np.zeros((4, 4), int)
    table.update("a", ok, ok)
    with pytest.raises(ValueError, match="case 'a' twice"):
        table.update("a", ok, ok)
    with pytest.raises(ValueError, match="labels must hold integer"):
        table.update("b", ok.astype(float), ok)
    with pytest.raises(ValueError, match="same shape"):
        table.update("b", ok, ok[:3])
    with pytest.raises(ValueError, match=r"one case, 2D \(H, W\) or 3D"):
        table.update("b", ok[None, None], ok[None, None])
    with pytest.raises(ValueError, match="case 'b': preds has label 3"):
        table.update("b", ok + 3, ok)
    with pytest.raises(ValueError, match="no pixel outside ignore_index"):
        table.update("b", ok, ok + IGNORE)
    with pytest.raises(ValueError, match="spacing"):
        table.update("b", ok, ok, spacing=(1.0, 1.0, 1.0))
    assert [row["case"] for row in table.rows] == ["a", "a"]  # failed updates add nothing
    with pytest.raises(ValueError, match="CaseTable is empty"):
        CaseTable(2).summary()


# --------------------------------------------------------------------------- real data


@pytest.mark.data
def test_drive_second_observer_inside_the_field_of_view(shared_data):
    """DRIVE test image 01: the second observer scored against the first, outside the FOV ignored."""
    from PIL import Image

    root = shared_data / "drive" / "DRIVE" / "test"
    first, second, fov = (
        np.asarray(Image.open(root / sub / name)) > 0
        for sub, name in (
            ("1st_manual", "01_manual1.gif"),
            ("2nd_manual", "01_manual2.gif"),
            ("mask", "01_test_mask.gif"),
        )
    )
    target = np.where(fov, first.astype(np.int64), IGNORE)
    labels = second.astype(np.int64)
    labels[~fov] = 1  # vessels drawn outside the FOV must not count
    table = CaseTable(2, class_names=["background", "vessel"], ignore_index=IGNORE, tolerance=2.0)
    row = table.update("01", labels, target)[0]
    ref = monai_reference(labels, target, 2, ignore_index=IGNORE, spacing=(1.0, 1.0), tolerance=2.0, ignore_empty=True)
    for metric in ("dice", "iou", "hd95", "nsd"):
        assert_same(row[metric], float(ref[metric][1]))
    assert row["target_pixels"] == int((first & fov).sum()) and row["pred_pixels"] == int((second & fov).sum())
    assert 0.6 < row["dice"] < 0.95  # two human observers agree well but not perfectly
