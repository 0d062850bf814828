"""``medbalance experiment loss-study`` (seed 002 chapter 4): loss specs, hard_num scaling,
pooled scores and hard-pixel counts against numpy re-derivations, option checks, and the
smoke scale end to end (tables, shared runs trained once, resume)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from medbalance.errors import ConfigError
from medbalance.experiments import run_experiment
from medbalance.experiments.seed002.loss_study import (
    CATALOGUE_LOSSES,
    SEED_HARD_NUMS,
    SEED_LOSSES,
    EvalPass,
    loss_spec,
    scaled_hard_nums,
    table_scores,
)
from medbalance.losses import build_loss
from tests._reference.metrics_numpy import confusion_matrix_np, segmentation_scores_np
from tests._reference.pixel_numpy import hard_pixel_selection

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: a second thread only adds synchronisation


# ----------------------------------------------------------------------------- loss specs


def test_loss_spec_single_and_compound_terms():
    assert loss_spec("dice", hard_num=8) == {"name": "dice"}
    assert loss_spec("focal", hard_num=8, focal_weight="exp_decreasing_fg") == {
        "name": "focal",
        "gamma": 2.0,
        "class_weight": "exp_decreasing_fg",
    }
    assert loss_spec("dice+focal+ob", hard_num=64) == [
        {"name": "dice"},
        {"name": "focal", "gamma": 2.0, "class_weight": "inverse"},
        {"name": "ob", "hard_num": 64},
    ]


@pytest.mark.parametrize(
    ("loss", "message"),
    [("dise", "unknown term 'dise' (did you mean 'dice'?"), ("dice+dice", "repeats a term"), ("", "unknown term ''")],
)
def test_loss_spec_refuses_unknown_or_repeated_terms(loss, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        loss_spec(loss, hard_num=8)


@pytest.mark.parametrize("loss", (*SEED_LOSSES, *CATALOGUE_LOSSES, "dice_ce"))
def test_every_study_loss_builds_and_gives_a_finite_loss(loss):
    counts = torch.tensor([800.0, 1, 100, 20, 5, 1, 30])
    fn = build_loss(loss_spec(loss, hard_num=16), class_counts=counts)
    logits = torch.randn(2, 7, 8, 8, requires_grad=True)
    value = fn(logits, torch.randint(0, 7, (2, 8, 8)))
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value) and torch.isfinite(logits.grad).all()


# ----------------------------------------------------------------------------- hard_num scaling


def test_scaled_hard_nums_keep_the_seed_values_at_256_and_scale_by_area():
    assert scaled_hard_nums(256 * 256) == list(SEED_HARD_NUMS[:-1])  # 65536 keeps every pixel: plain CE
    assert scaled_hard_nums(64 * 64) == [32, 64, 128, 256, 512, 1024, 2048]
    with pytest.raises(ValueError, match="pixels must be >= 1"):
        scaled_hard_nums(0)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 1024 * 1024))
def test_scaled_hard_nums_are_increasing_positive_and_at_most_half_an_image(pixels):
    values = scaled_hard_nums(pixels)
    assert all(1 <= v <= max(1, pixels // 2) for v in values)
    assert values == sorted(set(values))


# ----------------------------------------------------------------------------- scores and hard pixels


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 5))
def test_table_scores_match_a_numpy_rederivation_of_the_pooled_scores(seed, num_classes):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, num_classes, (3, 6, 5))
    preds = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, num_classes, target.shape))
    cm = torch.from_numpy(confusion_matrix_np(preds, target, num_classes))
    got = table_scores(cm)
    want = segmentation_scores_np(preds, target, num_classes, per_image=False)
    for label, key in (
        ("Dice", "mean_dice"),
        ("mIoU", "mean_iou"),
        ("mAP", "mean_precision"),
        ("mIoU fg", "mean_iou_fg"),
    ):
        assert got[label] == pytest.approx(want[key])
    assert got["iou"] == pytest.approx(want["iou"])
    assert got["absent"] == want["absent_classes"]
    for share, values in (("predicted_share", preds), ("true_share", target)):
        assert got[share] == pytest.approx(np.bincount(values.ravel(), minlength=num_classes) / values.size)


def test_eval_pass_counts_the_hard_pixels_of_each_class_over_batches():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, 6, 6)
    target = torch.randint(0, 4, (5, 6, 6))
    labels = logits.argmax(1)
    scores = EvalPass(4, hard_num=7)
    for part in (slice(0, 2), slice(2, 5)):  # two batches
        scores({"target": target[part]}, logits[part], labels[part])
    keep = hard_pixel_selection(logits.numpy(), target.numpy(), hard_num=7)
    want = np.bincount(target.numpy()[keep], minlength=4)
    assert scores.selected.tolist() == pytest.approx(want.tolist())
    assert scores.selected.sum().item() == pytest.approx(5 * 7)


def test_eval_pass_keeps_the_predictions_asked_for():
    labels = torch.arange(4).view(4, 1, 1).expand(4, 2, 2)
    scores = EvalPass(4, keep=[1, 3])
    scores({"target": labels, "index": torch.arange(4)}, torch.zeros(4, 4, 2, 2), labels)
    assert sorted(scores.kept) == [1, 3] and (scores.kept[3] == 3).all()


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("nets=unet,unnet", "option 'nets' has 'unnet' (did you mean 'unet'?"),
        ("losses=dice+focul", "option 'losses': loss 'dice+focul' has unknown term 'focul'"),
        ("parts=grid,weight", "option 'parts' has 'weight' (did you mean 'weights'?"),
        ("hard_nums=64,many", "option 'hard_nums' expects integers"),
        ("weight_functions=4", "option 'weight_functions' has 4"),
        ("focal_weight=balanced", "option 'focal_weight' is 'balanced'"),
        ("sweep_net=deeplab", "option 'sweep_net' has 'deeplab' (did you mean 'deeplabv3plus'?"),
        ("epochs=-1", "option 'epochs' must be >= 0"),
    ],
)
def test_bad_options_are_refused_before_training(tmp_path, option, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_experiment("loss-study", scale="smoke", options=[option], out=tmp_path, progress=False)
    assert not list(tmp_path.glob("*/runs"))


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return run_experiment("loss-study", scale="smoke", out=tmp_path_factory.mktemp("study"), progress=False)


def test_smoke_scale_writes_every_table_of_the_study(smoke):
    content = json.loads((smoke.run_dir / "results.json").read_text())
    titles = [t["title"] for t in content["tables"]]
    for words in (
        "networks x losses",
        "Per-class IoU",
        "table 4.11",
        "table 4.12",
        "table 4.13",
        "table 4.14",
        "OB selects",
    ):
        assert any(words in t for t in titles), words
    grid = content["tables"][0]["rows"]
    assert list(grid) == [
        "U-Net / ce",
        "U-Net / dice",
        "nnU-Net style: U-Net+DS / dice_ce / fg sampler",
        "U-Net+DS / dice_ce",
        "U-Net / dice_ce / fg sampler",
        "U-Net / dice_ce",
    ]
    assert all(0.0 <= cell["mean"] <= 1.0 for row in grid.values() for m, cell in row.items() if m != "train s")
    weights = next(t for t in content["tables"] if "table 4.11" in t["title"])["rows"]
    assert sum(weights["5 exp_decreasing_fg"][c]["mean"] for c in weights["5 exp_decreasing_fg"]) == pytest.approx(1.0)
    hard = next(t for t in content["tables"] if "table 4.14" in t["title"])["rows"]
    # 32 x 32 images: hard_num x 64 at 256 x 256
    assert list(hard) == ["32 scaled (2048 at 256 x 256)", "128 scaled (8192 at 256 x 256)"]
    assert all(sum(c["mean"] for c in row.values()) == pytest.approx(100.0) for row in hard.values())
    assert set(smoke.results["findings"]) == {"grid", "weights", "hard_num"}
    for name in ("results.md", "results.html"):
        assert "networks x losses" in (smoke.run_dir / name).read_text()


def test_figures_show_each_run_on_the_same_test_images(smoke):
    figures = smoke.results["figures"]
    assert figures == ["artefacts/predictions/grid_unet_seed0.png", "artefacts/predictions/weights_unet_seed0.png"]
    with Image.open(smoke.run_dir / figures[0]) as im:
        # 2 test images (rows) x image, ground truth, ce, dice; 32 px panels enlarged 3x
        assert im.size == (4 * (96 + 4), 14 + 2 * (96 + 4))


def test_nnunet_rows_train_unet_with_dice_ce_with_and_without_deep_supervision(smoke):
    cfg = yaml.safe_load((smoke.run_dir / "runs" / "unet-ds" / "dice_ce-fg" / "seed0" / "config.yaml").read_text())
    assert cfg["model"]["name"] == "unet" and cfg["model"]["deep_supervision"] is True
    assert cfg["loss"] == {"name": "dice_ce"}
    plain = yaml.safe_load((smoke.run_dir / "runs" / "unet" / "dice_ce" / "seed0" / "config.yaml").read_text())
    assert "deep_supervision" not in plain["model"]


def test_runs_shared_by_parts_are_trained_once_and_resume_retrains_nothing(tmp_path):
    # The grid's Focal (function 2, inverse) is the weight part's function 2; the grid's OB
    # (the seed's 512 scaled) is the sweep's first hard_num.
    options = ["parts=grid,weights,hard_num", "losses=focal,ob", "weight_functions=2", "hard_nums=8"]
    first = run_experiment("loss-study", scale="smoke", options=options, out=tmp_path, progress=False)
    runs = sorted(p.parent.relative_to(first.run_dir / "runs").as_posix() for p in first.run_dir.rglob("metrics.json"))
    assert runs == ["unet/focal-winverse/seed0", "unet/ob-h8/seed0"]
    stamps = {p: p.stat().st_mtime_ns for p in first.run_dir.rglob("best.pt")}
    again = run_experiment("loss-study", resume=first.run_dir, progress=False)
    assert {p: p.stat().st_mtime_ns for p in first.run_dir.rglob("best.pt")} == stamps
    assert again.results["tables"] == first.results["tables"]
