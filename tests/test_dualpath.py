"""Dual-path framework (seed 000, SPEC section 5): weight maps, model, losses, the three stages
through the one engine, and the ``medbalance experiment dualpath`` smoke run."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from medbalance.cli.main import main
from medbalance.config import parse_config
from medbalance.data.datasets import ArrayDataset
from medbalance.engine import Engine, SegmentationTask
from medbalance.experiments.seed000 import OPTIONS, SCALES, run
from medbalance.methods.dualpath import (
    ABLATION_ROWS,
    DualPathLoss,
    DualPathNet,
    ablation_labels,
    dualpath_loss,
    dualpath_stages,
    kfold_indices,
    split_mac_mic,
    weight_maps,
)
from tests._reference import dualpath_numpy as ref


# ----------------------------------------------------------------------------- weight maps
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    alpha=st.floats(0.01, 0.99),
    threshold=st.floats(0.05, 0.95),
)
def test_split_and_weight_maps_match_the_numpy_reference(seed, alpha, threshold):
    rng = np.random.default_rng(seed)
    prob = rng.random((2, 5, 6)).astype(np.float32)
    gt = (rng.random((2, 5, 6)) < 0.5).astype(np.int64)
    mac, mic = split_mac_mic(torch.from_numpy(prob), torch.from_numpy(gt), threshold=threshold)
    mac_np, mic_np = ref.split_mac_mic_np(prob, gt, threshold)
    np.testing.assert_array_equal(mac.numpy(), mac_np)
    np.testing.assert_array_equal(mic.numpy(), mic_np)
    # a partition of the target: MaC + MiC = GT, disjoint; false positives stay background
    np.testing.assert_array_equal((mac + mic).numpy(), gt)
    w_mac, w_mic = weight_maps(mac, mic, alpha=alpha)
    w_mac_np, w_mic_np = ref.weight_maps_np(mac_np, mic_np, alpha)
    np.testing.assert_allclose(w_mac.numpy(), w_mac_np, rtol=1e-6)
    np.testing.assert_allclose(w_mic.numpy(), w_mic_np, rtol=1e-6)
    assert w_mac.dtype == torch.float32 and w_mac.shape == (2, 5, 6)


def test_split_accepts_a_channel_axis_and_a_memorising_discriminator_leaves_mic_empty():
    gt = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    gt[..., 1:3, 1:3] = 1
    mac, mic = split_mac_mic(gt.float(), gt)  # a perfect (memorised) prediction
    assert mac.shape == (1, 4, 4) and mac.sum() == 4 and mic.sum() == 0


_LONG = torch.long


@pytest.mark.parametrize(
    ("prob", "target", "kwargs", "error", "match"),
    [
        (torch.rand(2, 4, 4), torch.zeros(2, 4, 5, dtype=_LONG), {}, ValueError, r"has shape \(2, 4, 4\) but target"),
        (torch.rand(2, 4, 4) * 3, torch.zeros(2, 4, 4, dtype=_LONG), {}, ValueError, r"probabilities in \[0, 1\]"),
        (torch.rand(2, 4, 4), torch.full((2, 4, 4), 2), {}, ValueError, "target must be binary .* found label 2"),
        (torch.rand(2, 4, 4), torch.zeros(2, 4, 4), {}, TypeError, "target must be an integer or bool label map"),
        (torch.zeros(2, 4, 4, dtype=_LONG), torch.zeros(2, 4, 4, dtype=_LONG), {}, TypeError, "must be a float"),
        (torch.rand(2, 4, 4), torch.zeros(2, 4, 4, dtype=_LONG), {"threshold": 1.0}, ValueError, r"threshold must"),
        (torch.rand(4, 4), torch.zeros(4, 4, dtype=_LONG), {}, ValueError, r"must have shape \(N, H, W\)"),
    ],
)
def test_split_mac_mic_rejects_bad_input(prob, target, kwargs, error, match):
    with pytest.raises(error, match=match):
        split_mac_mic(prob, target, **kwargs)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.5, 1.5])
def test_weight_maps_alpha_must_be_strictly_between_0_and_1(alpha):
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
        weight_maps(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), alpha=alpha)


def test_weight_maps_reject_overlapping_or_soft_maps():
    ones = torch.ones(1, 2, 2)
    with pytest.raises(ValueError, match="overlap"):
        weight_maps(ones, ones)
    with pytest.raises(ValueError, match=r"binary maps with values in \{0, 1\}"):
        weight_maps(ones * 0.5, torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"mac has shape \(1, 2, 2\) but mic has \(1, 2, 3\)"):
        weight_maps(ones, torch.zeros(1, 2, 3))


def test_kfold_indices_partition_the_training_set():
    folds = kfold_indices(23, 5, seed=4)
    joined = np.concatenate(folds)
    assert sorted(joined.tolist()) == list(range(23)) and max(map(len, folds)) - min(map(len, folds)) <= 1
    assert [f.tolist() for f in folds] == [f.tolist() for f in kfold_indices(23, 5, seed=4)]
    with pytest.raises(ValueError, match=r"folds must be in \[2, 3\]"):
        kfold_indices(3, 5, seed=0)


# ----------------------------------------------------------------------------- model and losses
def test_dualpath_net_outputs_fusion_of_the_summed_path_probabilities():
    torch.manual_seed(0)
    net = DualPathNet(1, base_channels=4, depth=2, fusion_channels=4).eval()
    x = torch.randn(2, 1, 20, 28)
    out = net(x)
    assert out.shape == (2, 3, 20, 28)
    with torch.no_grad():
        mac, mic = net.mac(x), net.mic(x)
        torch.testing.assert_close(out[:, 1:2], mac)
        torch.testing.assert_close(out[:, 2:3], mic)
        torch.testing.assert_close(out[:, 0:1], net.fusion(torch.sigmoid(mac) + torch.sigmoid(mic)))
    prefixes = {name.split(".")[0] for name, _ in net.named_parameters()}
    assert prefixes == {"mac", "mic", "fusion"}
    # fusion: two Conv-BN-ReLU groups and a 1x1 conv to one channel
    layers = [type(m).__name__ for m in net.fusion.modules() if not list(m.children())]
    assert layers == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "Conv2d"]


def test_dualpath_loss_is_bce_on_soft_targets_and_on_the_ground_truth():
    rng = np.random.default_rng(1)
    outputs = torch.from_numpy(rng.normal(size=(2, 3, 3, 4)).astype(np.float32))
    gt = (rng.random((2, 3, 4)) < 0.5).astype(np.int64)
    w_mac, w_mic = ref.weight_maps_np(*ref.split_mac_mic_np(rng.random((2, 3, 4)), gt), 0.3)
    batch = {
        "target": torch.from_numpy(gt),
        "w_mac": torch.from_numpy(w_mac).float(),
        "w_mic": torch.from_numpy(w_mic).float(),
    }
    l1 = ref.bce_np(outputs[:, 1].numpy(), w_mac) + ref.bce_np(outputs[:, 2].numpy(), w_mic)
    l2 = ref.bce_np(outputs[:, 0].numpy(), gt)
    assert float(dualpath_loss(outputs, batch, fusion=False)) == pytest.approx(l1, rel=1e-5)
    assert float(dualpath_loss(outputs, batch, paths=False)) == pytest.approx(l2, rel=1e-5)
    assert float(DualPathLoss()(outputs, batch)) == pytest.approx(l1 + l2, rel=1e-5)


def test_dualpath_loss_errors_name_the_problem():
    outputs = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match="the batch has no 'w_mac' entry"):
        dualpath_loss(outputs, {"target": torch.zeros(1, 2, 2, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"DualPathNet logits \(N, 3, H, W\).*found \(1, 1, 2, 2\)"):
        dualpath_loss(torch.zeros(1, 1, 2, 2), {})
    with pytest.raises(ValueError, match="paths=True, fusion=True or both"):
        DualPathLoss(paths=False, fusion=False)


def test_ablation_labels_threshold_each_row():
    logits = torch.full((1, 3, 1, 2), -10.0)
    logits[0, 1, 0, 0] = 10.0  # MaC finds pixel 0
    logits[0, 1, 0, 1] = logits[0, 2, 0, 1] = -0.5  # sigmoid 0.38 each: only their sum passes 0.5
    rows = ablation_labels(logits)
    assert list(rows) == list(ABLATION_ROWS)
    assert rows["MaC"].tolist() == [[[1, 0]]] and rows["MaC+MiC"].tolist() == [[[1, 1]]]
    assert rows["MaC+MiC+Fusion"].tolist() == [[[0, 0]]]


def test_dualpath_stages_follow_the_paper():
    stages = dualpath_stages()
    assert [(s.name, s.epochs) for s in stages] == [("paths", 200), ("fusion", 200), ("finetune", 50)]
    assert stages[0].frozen == ("fusion",) and stages[1].frozen == ("mac", "mic") and stages[2].frozen == ()
    assert all(s.target_key is None for s in stages)
    with pytest.raises(ValueError, match="three non-negative step lengths"):
        dualpath_stages((1, 2))


def _state(net, prefix):
    return {k: v.clone() for k, v in net.state_dict().items() if k.startswith(prefix)}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_three_steps_through_the_engine_keep_frozen_parts_frozen():
    """Weights and BatchNorm statistics of the frozen part never move; it never gets a gradient."""
    rng = np.random.default_rng(0)
    n, size = 8, 16
    images = rng.random((n, 1, size, size)).astype(np.float32)
    target = (images[:, 0] > 0.6).astype(np.int64)
    mac, mic = split_mac_mic(torch.from_numpy(images[:, 0]).clamp(0, 1), torch.from_numpy(target), threshold=0.8)
    w_mac, w_mic = weight_maps(mac, mic)
    data = ArrayDataset(images, target, num_classes=2, extras={"w_mac": w_mac.numpy(), "w_mic": w_mic.numpy()})
    torch.manual_seed(0)
    net = DualPathNet(1, base_channels=4, depth=2, fusion_channels=4)
    cfg = parse_config({"progress": False, "batch_size": 4, "lr": 1e-2})
    engine = Engine(net, SegmentationTask(2), cfg)
    paths, fusion, finetune = dualpath_stages((2, 1, 1))

    before = {p: _state(net, p) for p in ("mac", "mic", "fusion")}
    rows = engine.fit([replace(paths, select_best=True)], data, data)  # alone, it may select
    assert [r["stage"] for r in rows] == ["paths", "paths"] and np.isfinite(rows[-1]["val_loss"])
    assert _same(before["fusion"], _state(net, "fusion"))  # incl. running_mean / running_var
    assert not _same(before["mac"], _state(net, "mac")) and not _same(before["mic"], _state(net, "mic"))
    assert all(p.grad is None for p in net.fusion.parameters())

    before = {p: _state(net, p) for p in ("mac", "mic", "fusion")}
    engine.fit([fusion], data, data)
    assert _same(before["mac"], _state(net, "mac")) and _same(before["mic"], _state(net, "mic"))
    assert not _same(before["fusion"], _state(net, "fusion"))
    assert all(p.grad is None for p in [*net.mac.parameters(), *net.mic.parameters()])

    before = {p: _state(net, p) for p in ("mac", "mic", "fusion")}
    engine.fit([finetune], data, data)
    assert all(not _same(before[p], _state(net, p)) for p in before)


# ----------------------------------------------------------------------------- the experiment
def test_experiment_options_and_scales():
    # issue 19 item 3: the paper's maps (the discriminator on its own training set) by default
    assert OPTIONS["weight_maps"] == "train" and OPTIONS["alpha"] == 0.5 and callable(run)
    assert set(SCALES) == {"smoke", "small", "paper"}
    assert SCALES["paper"]["epochs"] == 200 and SCALES["paper"]["lr"] == 1e-4 and SCALES["paper"]["folds"] == 5


def test_smoke_experiment_writes_both_tables_and_the_artefacts(tmp_path):
    assert main(["experiment", "dualpath", "--scale", "smoke", "--out", str(tmp_path), "-q"]) == 0
    (exp,) = tmp_path.iterdir()
    results = json.loads((exp / "results.json").read_text())
    tables = {t["title"].split(" (")[0]: t for t in results["tables"]}
    comparison = tables["Comparison with other methods"]
    assert list(comparison["rows"]) == [
        "U-Net", "U-Net++", "CE-Net", "nnU-Net-style", "Dual-path", "Dual-path (out-of-fold maps)"
    ]  # fmt: skip
    assert comparison["metrics"] == ["Dice", "IoU", "minority recall"]
    ablation = tables["Ablation"]
    assert list(ablation["rows"]) == ["U-Net", "MaC", "MaC+MiC", "MaC+MiC+Fusion"]
    # the fused row of the ablation is the dual-path row of the comparison, the U-Net rows agree
    assert ablation["rows"]["MaC+MiC+Fusion"]["Dice"]["mean"] == comparison["rows"]["Dual-path"]["Dice"]["mean"]
    assert ablation["rows"]["U-Net"]["IoU"]["mean"] == comparison["rows"]["U-Net"]["IoU"]["mean"]
    for row in (*comparison["rows"].values(), *ablation["rows"].values()):
        assert 0.0 <= row["Dice"]["mean"] <= 1.0 and row["IoU"]["mean"] <= row["Dice"]["mean"] + 1e-9
    # per-case test Dice of every row that is a run folder, from its own cases.json (issue 22)
    assert set(comparison["per_case"]) == {"U-Net", "U-Net++", "CE-Net", "nnU-Net-style", "Dual-path"}
    unet = json.loads((exp / "runs" / "unet" / "seed0" / "evaluations" / "test" / "cases.json").read_text())["rows"]
    assert comparison["per_case"]["U-Net"]["0"]["mean_fg"] == [r["dice"] for r in unet]
    assert np.mean([r["dice"] for r in unet]) == pytest.approx(comparison["rows"]["U-Net"]["Dice"]["mean"])
    assert list(tables["Alpha sweep"]["rows"]) == ["0.1", "0.3", "0.5", "0.7", "0.9"]
    assert set(tables["Weight maps from the training set"]["rows"]) == {"train", "oof"}
    assert "| Dual-path |" in (exp / "results.md").read_text() and (exp / "results.html").is_file()

    images = sorted((exp / "artefacts" / "test").iterdir())
    assert len(images) == SCALES["smoke"]["n_test"]
    overlays = {f"overlay_{m}.png" for m in ("unet", "unetpp", "cenet", "nnunetstyle", "dualpath")}
    expected = {
        "image.png", "mac_mic_split.png", "weight_map_mac.png", "weight_map_mic.png",
        "pred_mac.png", "pred_mac_mic.png", "pred_mac_mic_fusion.png", *overlays,
    }  # fmt: skip
    for folder in images:
        assert {p.name for p in folder.iterdir()} == expected
    with Image.open(images[0] / "weight_map_mac.png") as w:
        assert set(np.unique(np.asarray(w))) <= {0, 128, 255}  # 0 background, alpha 0.5, 1
    with Image.open(images[0] / "overlay_dualpath.png") as o:
        assert o.mode == "RGB"
    for figure in results["figures"]:
        assert (exp / figure).is_file()
    # every model trained once, by train(), in its own resumable run folder: the U-Net row is the
    # discriminator of the 'train' maps; the out-of-fold discriminators are parts of the oof run
    paper = exp / "runs" / "dualpath" / "train" / "alpha0.5" / "seed0"
    oof = exp / "runs" / "dualpath" / "oof" / "alpha0.5" / "seed0"
    assert (paper / "metrics.json").is_file() and not (paper / "parts").exists()
    assert yaml.safe_load((paper / "config.yaml").read_text())["method"]["discriminator"].endswith("unet/seed0")
    assert len(list((oof / "parts").glob("fold*/metrics.json"))) == 2
    # the bug that opened issue 18: predict on the dual-path run and on its U-Net run, through the CLI
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 36), dtype=np.uint8)).save(images / "a.png")
    for trained in (paper, exp / "runs" / "unet" / "seed0"):
        out = tmp_path / f"pred-{trained.parent.name}"
        assert main(["predict", str(trained), "--input", str(images), "--out", str(out), "-q"]) == 0
        assert np.asarray(Image.open(out / "a.png")).shape == (40, 36)


def test_bad_option_is_a_one_line_error(tmp_path, capsys):
    args = ["experiment", "dualpath", "--scale", "smoke", "--set", "weight_maps=both", "--out", str(tmp_path)]
    assert main(args) == 2
    assert "weight_maps" in capsys.readouterr().err
