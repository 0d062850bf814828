"""Multi-class dual-path (SPEC 5.9): the per-class MaC/MiC split, C-class paths and fusion, the
C-class loss and ablation rows, a train step through the one engine and the experiment's smoke run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medbalance.cli.main import main
from medbalance.config import parse_config
from medbalance.data.datasets import ArrayDataset
from medbalance.engine import Engine, SegmentationTask
from medbalance.methods.dualpath import (
    ABLATION_ROWS,
    DualPathNet,
    FusionModule,
    ablation_labels,
    dualpath_loss,
    dualpath_stages,
    split_mac_mic,
    split_outputs,
    weight_maps,
)
from tests._reference import dualpath_numpy as ref


def _softmax_np(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def _case(seed: int, classes: int, shape=(2, 5, 6)):
    """Random softmax probabilities ``(N, C, H, W)`` and labels ``(N, H, W)``; labels often agree with
    the argmax so that both MaC and MiC are populated."""
    rng = np.random.default_rng(seed)
    n, h, w = shape
    prob = _softmax_np(rng.normal(scale=2.0, size=(n, classes, h, w)))
    gt = rng.integers(0, classes, size=shape)
    agree = rng.random(shape) < 0.5
    gt[agree] = prob.argmax(1)[agree]
    return prob, gt.astype(np.int64)


# ----------------------------------------------------------------------------- split and weight maps
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), classes=st.integers(3, 6), alpha=st.floats(0.01, 0.99))
def test_per_class_split_and_weight_maps_match_the_numpy_reference(seed, classes, alpha):
    prob, gt = _case(seed, classes)
    mac, mic = split_mac_mic(torch.from_numpy(prob), torch.from_numpy(gt))
    mac_np, mic_np = ref.split_per_class_np(prob, gt)
    np.testing.assert_array_equal(mac.numpy(), mac_np)
    np.testing.assert_array_equal(mic.numpy(), mic_np)
    assert mac.shape == (2, classes, 5, 6) and mac.dtype == torch.float32
    # disjoint, one split per foreground class summing to that class's GT, background split into nothing
    assert not (mac * mic).any() and not mac[:, 0].any() and not mic[:, 0].any()
    for c in range(1, classes):
        np.testing.assert_array_equal((mac[:, c] + mic[:, c]).numpy(), (gt == c).astype(np.float32))
    w_mac, w_mic = weight_maps(mac, mic, alpha=alpha)
    w_mac_np, w_mic_np = ref.weight_maps_np(mac_np, mic_np, alpha)
    np.testing.assert_allclose(w_mac.numpy(), w_mac_np, rtol=1e-6)
    np.testing.assert_allclose(w_mic.numpy(), w_mic_np, rtol=1e-6)


def test_a_pixel_given_to_another_foreground_class_is_minority_of_its_own_class():
    prob = torch.zeros(1, 3, 1, 3)
    prob[0, [2, 1, 0], 0, [0, 1, 2]] = 1.0  # predicted labels [2, 1, 0]
    mac, mic = split_mac_mic(prob, torch.tensor([[[2, 2, 1]]]))
    assert mac[0, 2, 0].tolist() == [1, 0, 0] and mic[0, 2, 0].tolist() == [0, 1, 0]
    assert mic[0, 1, 0].tolist() == [0, 0, 1] and mac[0, 1].sum() == 0  # class 1 missed to background
    # a (N, 1, H, W) target and a perfect discriminator: MiC empty
    gt = torch.tensor([[[0, 1, 2, 3]]])
    perfect = torch.nn.functional.one_hot(gt, 4).permute(0, 3, 1, 2).float()
    mac, mic = split_mac_mic(perfect, gt.unsqueeze(1))
    assert mic.sum() == 0 and mac.sum() == 3


_P3 = torch.full((2, 3, 4, 4), 1 / 3)
_L = torch.long


@pytest.mark.parametrize(
    ("prob", "target", "kwargs", "error", "match"),
    [
        (_P3, torch.full((2, 4, 4), 3), {}, ValueError, r"target must hold the 3 classes .* \[0, 3\)\), found label 3"),
        (_P3, torch.zeros(2, 4, 5, dtype=_L), {}, ValueError, r"pred_prob has shape \(2, 3, 4, 4\) but target has"),
        (_P3, torch.zeros(2, 4, 4, dtype=_L), {"threshold": 0.3}, ValueError, "threshold applies to a binary"),
        (_P3 * 4, torch.zeros(2, 4, 4, dtype=_L), {}, ValueError, "apply a softmax over the channels"),
        (_P3, torch.zeros(2, 4, 4), {}, TypeError, "target must be an integer or bool label map"),
        (torch.rand(2, 2, 4, 4), torch.zeros(2, 4, 4, dtype=_L), {}, ValueError, "pred_prob has 2 channels"),
    ],
)
def test_per_class_split_rejects_bad_input(prob, target, kwargs, error, match):
    with pytest.raises(error, match=match):
        split_mac_mic(prob, target, **kwargs)


# ----------------------------------------------------------------------------- model
def test_multiclass_net_has_c_channel_paths_and_fuses_their_softmax_sum():
    torch.manual_seed(0)
    net = DualPathNet(3, num_classes=5, base_channels=4, depth=2, fusion_channels=4).eval()
    x = torch.randn(2, 3, 16, 20)
    out = net(x)
    assert out.shape == (2, 15, 16, 20) and net.out_channels == 5
    fused, mac, mic = split_outputs(out)
    with torch.no_grad():
        torch.testing.assert_close(mac, net.mac(x))
        torch.testing.assert_close(mic, net.mic(x))
        torch.testing.assert_close(fused, net.fusion(torch.softmax(mac, 1) + torch.softmax(mic, 1)))
    convs = [m for m in net.fusion.modules() if isinstance(m, torch.nn.Conv2d)]
    assert (convs[0].in_channels, convs[-1].out_channels) == (5, 5)
    # a SegmentationTask of 5 classes scores the fused map: the first 5 channels
    task = SegmentationTask(5)
    assert torch.equal(task.predict(out), fused.argmax(1))
    torch.testing.assert_close(task.probabilities(out), torch.softmax(fused, 1))
    # the binary net is unchanged: one channel per output, a one-channel fusion
    binary = DualPathNet(1, base_channels=4, depth=2)
    assert binary.out_channels == 1 and next(FusionModule().parameters()).shape[1] == 1
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        DualPathNet(1, num_classes=1)


# ----------------------------------------------------------------------------- loss
def _batch(seed: int, classes: int, alpha: float = 0.5):
    prob, gt = _case(seed, classes)
    mac, mic = split_mac_mic(torch.from_numpy(prob), torch.from_numpy(gt))
    w_mac, w_mic = weight_maps(mac, mic, alpha=alpha)
    return {"target": torch.from_numpy(gt), "w_mac": w_mac, "w_mic": w_mic}


def test_multiclass_loss_is_softmax_ce_on_per_class_soft_targets():
    classes = 4
    batch = _batch(3, classes, alpha=0.3)
    outputs = torch.from_numpy(np.random.default_rng(4).normal(size=(2, 3 * classes, 5, 6)).astype(np.float32))
    fused, mac, mic = (x.numpy() for x in split_outputs(outputs))
    l1 = ref.soft_ce_np(mac, ref.path_target_np(batch["w_mac"].numpy())) + ref.soft_ce_np(
        mic, ref.path_target_np(batch["w_mic"].numpy())
    )
    onehot = np.eye(classes)[batch["target"].numpy()].transpose(0, 3, 1, 2)
    l2 = ref.soft_ce_np(fused, onehot)
    assert float(dualpath_loss(outputs, batch, fusion=False)) == pytest.approx(l1, rel=1e-5)
    assert float(dualpath_loss(outputs, batch, paths=False)) == pytest.approx(l2, rel=1e-5)
    assert float(dualpath_loss(outputs, batch)) == pytest.approx(l1 + l2, rel=1e-5)
    # the background of the weight maps is not read: a filled channel 0 gives the same loss
    filled = {**batch, "w_mac": torch.from_numpy(ref.path_target_np(batch["w_mac"].numpy())).float()}
    torch.testing.assert_close(dualpath_loss(outputs, filled), dualpath_loss(outputs, batch))


def test_multiclass_loss_vanishes_at_a_perfect_prediction():
    classes, alpha = 5, 0.4
    batch = _batch(7, classes, alpha=alpha)
    fused = 40.0 * torch.nn.functional.one_hot(batch["target"], classes).permute(0, 3, 1, 2).float()
    # each path at its optimum predicts its soft target: softmax(log t) = t
    targets = [torch.from_numpy(ref.path_target_np(batch[k].numpy())).float() for k in ("w_mac", "w_mic")]
    paths = [torch.log(t.clamp_min(1e-30)) for t in targets]
    outputs = torch.cat([fused, *paths], dim=1).requires_grad_()
    assert float(dualpath_loss(outputs, batch, paths=False).detach()) < 1e-6
    # a soft target's cross entropy is at least its entropy, reached exactly here (KL = 0)
    entropy = sum(ref.soft_ce_np(np.log(np.clip(t.numpy(), 1e-30, None)), t.numpy()) for t in targets)
    loss = dualpath_loss(outputs, batch)
    assert float(loss.detach()) == pytest.approx(entropy, abs=1e-5) and entropy > 0
    loss.backward()
    assert outputs.grad.abs().max() < 1e-6  # softmax - target = 0 in every channel


@pytest.mark.parametrize("scale", [30.0, 1e4])
def test_multiclass_loss_and_gradients_are_finite_at_extreme_logits(scale):
    classes = 3
    batch = _batch(11, classes)
    sign = torch.from_numpy(np.random.default_rng(0).choice([-1.0, 1.0], size=(2, 3 * classes, 5, 6))).float()
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        outputs = (scale * sign).to(dtype).requires_grad_()
        loss = dualpath_loss(outputs, batch)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(outputs.grad).all(), dtype


def test_multiclass_loss_errors_name_the_problem():
    batch = _batch(0, 3)
    with pytest.raises(ValueError, match=r"batch 'w_mac' has shape \(2, 3, 5, 6\); 4 classes need"):
        dualpath_loss(torch.zeros(2, 12, 5, 6), batch)
    with pytest.raises(ValueError, match=r"or \(N, 3C, H, W\) for C >= 3 classes, found \(2, 6, 5, 6\)"):
        dualpath_loss(torch.zeros(2, 6, 5, 6), batch)


# ----------------------------------------------------------------------------- ablation rows
def test_multiclass_ablation_rows():
    c = 3
    fused, mac, mic = torch.zeros(1, c, 1, 3), torch.full((1, c, 1, 3), -20.0), torch.full((1, c, 1, 3), -20.0)
    mac[0, 0, 0, :] = 20.0  # the MaC path: background everywhere
    mac[0, 0, 0, 0], mac[0, 2, 0, 0] = 0.0, 0.0  # pixel 0: half background, half class 2 -> fg mass 0.5
    mic[0, :, 0, 0] = 0.0  # + the MiC path's uniform 1/3 per class at pixel 0
    mic[0, 0, 0, 1:] = 20.0
    mic[0, 0, 0, 1] = 0.0
    mic[0, 2, 0, 1] = np.log(0.45 / 0.55)  # pixel 1: 0.45 of class 2, just under the threshold
    fused[0, 2, 0, 2] = 5.0
    rows = ablation_labels(torch.cat([fused, mac, mic], 1))
    assert list(rows) == list(ABLATION_ROWS)
    assert rows["MaC"].tolist() == [[[0, 0, 0]]]  # argmax: the tie at pixel 0 goes to background
    assert rows["MaC+MiC"].tolist() == [[[2, 0, 0]]]  # pixel 0: mass 0.5 + 2/3 > 0.5, class 2's sum largest
    assert rows["MaC+MiC+Fusion"].tolist() == [[[0, 0, 2]]]
    assert ablation_labels(torch.cat([fused, mac, mic], 1), threshold=0.4)["MaC+MiC"].tolist() == [[[2, 2, 0]]]


# ----------------------------------------------------------------------------- engine
def test_multiclass_train_step_through_the_engine():
    rng = np.random.default_rng(0)
    n, size, classes = 4, 16, 4
    images = rng.random((n, 1, size, size)).astype(np.float32)
    target = np.minimum((images[:, 0] * classes).astype(np.int64), classes - 1)
    prob = _softmax_np(rng.normal(size=(n, classes, size, size)))
    mac, mic = split_mac_mic(torch.from_numpy(prob), torch.from_numpy(target))
    w_mac, w_mic = weight_maps(mac, mic, alpha=0.5)
    data = ArrayDataset(images, target, num_classes=classes, extras={"w_mac": w_mac.numpy(), "w_mic": w_mic.numpy()})
    torch.manual_seed(0)
    net = DualPathNet(1, num_classes=classes, base_channels=4, depth=2, fusion_channels=4)
    cfg = parse_config({"progress": False, "batch_size": 4, "lr": 1e-2})
    engine = Engine(net, SegmentationTask(classes), cfg)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rows = engine.fit(dualpath_stages((1, 1, 1)), data, data)
    assert [r["stage"] for r in rows] == ["paths", "fusion", "finetune"]
    assert all(np.isfinite(r["val_loss"]) for r in rows)
    assert all(not torch.equal(before[k], v) for k, v in net.state_dict().items() if k.endswith("weight"))
    scores = engine.evaluate(data)
    assert len(scores["dice"]) == classes and 0.0 <= scores["mean_dice_fg"] <= 1.0


# ----------------------------------------------------------------------------- the experiment
@pytest.mark.slow
def test_smoke_experiment_on_the_nuclei_phantom_is_multiclass(tmp_path):
    args = ["experiment", "dualpath", "--scale", "smoke", "--set", "phantom=nuclei_phantom", "--set", "sweep=false"]
    assert main([*args, "--set", "size=24", "--out", str(tmp_path), "-q"]) == 0
    (exp,) = tmp_path.iterdir()
    results = json.loads((exp / "results.json").read_text())
    tables = {t["title"].split(" (")[0]: t for t in results["tables"]}
    per_class = [f"Dice {name}" for name in ("neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil")]
    per_class.append("Dice connective")
    assert tables["Comparison with other methods"]["metrics"] == ["Dice", "IoU", *per_class]
    assert tables["Ablation"]["metrics"] == ["Dice", "IoU", *per_class]
    ablation, comparison = tables["Ablation"]["rows"], tables["Comparison with other methods"]["rows"]
    assert list(ablation) == ["U-Net", "MaC", "MaC+MiC", "MaC+MiC+Fusion"]
    assert ablation["MaC+MiC+Fusion"]["Dice"]["mean"] == comparison["Dual-path"]["Dice"]["mean"]
    for row in (*comparison.values(), *ablation.values()):
        assert 0.0 <= row["IoU"]["mean"] <= row["Dice"]["mean"] <= 1.0
        assert all(not row[m]["mean"] < 0.0 and not row[m]["mean"] > 1.0 for m in per_class)  # NaN: class absent
    assert "7 classes" in (exp / "results.md").read_text()
    (image, *_) = sorted((exp / "artefacts" / "test").iterdir())
    assert (image / "pred_mac_mic_fusion.png").is_file() and (image / "weight_map_mic.png").is_file()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["phantom=nuclei"], "option 'phantom' must be one of intraclass_phantom, nuclei_phantom, got 'nuclei'"),
        (["phantom=nuclei_phantom", "--data", "drive"], "option 'phantom' chooses the phantom of --data phantom"),
    ],
)
def test_bad_phantom_option_is_a_one_line_error(tmp_path, capsys, options, message):
    args = ["experiment", "dualpath", "--scale", "smoke", "--set", *options, "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
