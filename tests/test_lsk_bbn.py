"""LSK module, improved ResNet-32, BBN / LSKBB, the bilateral recipe and MiSLAS (seed 001, SPEC 6 and 10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from medbalance.config import parse_config
from medbalance.data.datasets import ArrayDataset
from medbalance.engine.engine import Engine, Stage
from medbalance.engine.tasks import ClassificationTask
from medbalance.losses import CrossEntropyLoss, DFLCELoss, set_progress
from medbalance.losses.smoothing import LabelAwareSmoothingLoss, label_aware_epsilons, label_aware_smoothing
from medbalance.methods.bilateral import (
    BilateralLoss,
    BilateralMethod,
    bilateral_loss,
    bilateral_stage,
    cumulative_lambda,
)
from medbalance.methods.mislas import MIXUP_STAGE, MiSLASMethod, WeightScaledNet, mislas_stages
from medbalance.nets import BBN, LSKBB, NETS, LSKModule, ResNet32, build_net
from medbalance.nets.resnet import CosineLinear, LSKBasicBlock
from tests._reference import longtail_numpy as ref

TINY = {"widths": (4, 8), "blocks_per_stage": 2}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: a second thread only adds synchronisation


# ----------------------------------------------------------------------------- LSK module
class _LSKblock(nn.Module):
    """The ``LSKblock`` of the LSKNet code (Li et al., ICCV 2023), transcribed as published."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, 7, stride=1, padding=9, groups=dim, dilation=3)
        self.conv1 = nn.Conv2d(dim, dim // 2, 1)
        self.conv2 = nn.Conv2d(dim, dim // 2, 1)
        self.conv_squeeze = nn.Conv2d(2, 2, 7, padding=3)
        self.conv = nn.Conv2d(dim // 2, dim, 1)

    def forward(self, x):
        attn1 = self.conv0(x)
        attn2 = self.conv_spatial(attn1)
        attn1 = self.conv1(attn1)
        attn2 = self.conv2(attn2)
        attn = torch.cat([attn1, attn2], dim=1)
        avg_attn = torch.mean(attn, dim=1, keepdim=True)
        max_attn, _ = torch.max(attn, dim=1, keepdim=True)
        agg = torch.cat([avg_attn, max_attn], dim=1)
        sig = self.conv_squeeze(agg).sigmoid()
        attn = attn1 * sig[:, 0, :, :].unsqueeze(1) + attn2 * sig[:, 1, :, :].unsqueeze(1)
        attn = self.conv(attn)
        return x * attn


def test_lsk_matches_the_published_block():
    ours, theirs = LSKModule(8), _LSKblock(8)
    pairs = [
        ("conv_small", "conv0"),
        ("conv_large", "conv_spatial"),
        ("reduce_small", "conv1"),
        ("reduce_large", "conv2"),
        ("select", "conv_squeeze"),
        ("expand", "conv"),
    ]
    for a, b in pairs:
        getattr(theirs, b).load_state_dict(getattr(ours, a).state_dict())
    x = torch.randn(2, 8, 12, 12)
    torch.testing.assert_close(ours(x), theirs(x))
    torch.testing.assert_close(ours(x), x * ours.attention(x))


def test_lsk_receptive_field_is_radius_14():
    # U1: radius 2; U2 (7x7, dilation 3): 2 + 9 = 11; spatial selection (7x7): 11 + 3 = 14.
    torch.manual_seed(0)
    lsk = LSKModule(4).eval()
    nn.init.normal_(lsk.expand.weight)  # a trained Q: at initialisation the module is the identity
    x = torch.randn(1, 4, 40, 40)
    y = lsk(x)
    x2 = x.clone()
    x2[0, :, 20, 20] += 5.0
    changed = (lsk(x2) - y).abs().amax(dim=1)[0] > 1e-6
    rows, cols = torch.nonzero(changed, as_tuple=True)
    assert int((rows - 20).abs().max()) == 14 and int((cols - 20).abs().max()) == 14


def test_lsk_starts_as_the_identity():
    x = torch.randn(2, 6, 9, 9)
    assert torch.equal(LSKModule(6)(x), x)
    net = ResNet32(1, 3, lsk_position="residual", **TINY)  # the network-wide init keeps it
    assert all(torch.all(m.expand.bias == 1) for m in net.modules() if isinstance(m, LSKModule))


def test_lsk_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"x must have shape \(N, 8, \*, \*\)"):
        LSKModule(8)(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="channels must be a positive int"):
        LSKModule(0)


# ----------------------------------------------------------------------------- improved ResNet-32
def test_resnet32_parameter_counts():
    plain = sum(p.numel() for p in ResNet32(3, 10).parameters())
    improved = sum(p.numel() for p in ResNet32(3, 10, lsk_position="residual").parameters())
    lsk = sum(sum(p.numel() for p in LSKModule(c).parameters()) * 5 for c in (16, 32, 64))
    assert plain == 466_906
    assert improved == plain + lsk


@pytest.mark.parametrize("position", ["residual", "shortcut"])
def test_lsk_block_position(position):
    block = LSKBasicBlock(4, 8, stride=2, position=position).eval()
    x = torch.randn(2, 4, 8, 8)
    residual, shortcut = block.conv2(block.conv1(x)), block.shortcut(x)
    expected = (
        F.relu(block.lsk(residual) + shortcut) if position == "residual" else F.relu(residual + block.lsk(shortcut))
    )
    torch.testing.assert_close(block(x), expected)


def test_resnet32_options_are_checked():
    with pytest.raises(ValueError, match="lsk_position must be one of"):
        ResNet32(1, 2, lsk_position="skip")
    with pytest.raises(ValueError, match="head must be one of"):
        ResNet32(1, 2, head="normed")


def test_cosine_head_gives_cosines():
    net = ResNet32(1, 3, head="cosine", **TINY).eval()
    assert isinstance(net.classifier, CosineLinear)
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        z, f = net(x), net.forward_features(x)
    w = net.classifier.weight
    torch.testing.assert_close(z, F.normalize(f, dim=1) @ F.normalize(w, dim=1).T)
    assert float(z.abs().max()) <= 1.0 + 1e-6


# ----------------------------------------------------------------------------- BBN / LSKBB
def test_registry_and_defaults():
    assert NETS["bbn"] is BBN and NETS["lskbb"] is LSKBB
    assert build_net("lskbb", in_channels=1, num_classes=3, **TINY).lsk_position == "residual"
    assert build_net("bbn", in_channels=1, num_classes=3, **TINY).lsk_position is None
    assert isinstance(LSKBB(1, 3, **TINY).conventional[0], LSKBasicBlock)


def test_bbn_inference_weighs_both_branches_equally():
    net = BBN(1, 3, **TINY).eval()
    x = torch.randn(5, 1, 16, 16)
    z_c, z_r = net(x, x)
    torch.testing.assert_close(net(x), 0.5 * (z_c + z_r))


@pytest.mark.parametrize("branch_blocks", [None, 1])
def test_bbn_shares_the_trunk_only(branch_blocks):
    net = BBN(1, 3, branch_blocks=branch_blocks, **TINY)
    z_c, _ = net(torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16))
    z_c.sum().backward()
    assert all(p.grad is None for p in net.rebalancing.parameters())
    assert all(p.grad is not None for p in net.trunk.parameters())
    owned = TINY["blocks_per_stage"] if branch_blocks is None else branch_blocks
    assert len(net.conventional) == len(net.rebalancing) == owned
    assert net.conventional[0].conv1[0].weight.data_ptr() != net.rebalancing[0].conv1[0].weight.data_ptr()


def test_bbn_default_shares_all_but_the_last_residual_block():
    # seed 001 / the BBN code: only the last residual block (and the classifier) is per branch
    net = BBN(3, 10)
    names = [name for name, _ in net.named_parameters()]
    conventional = [n for n in names if n.startswith("conventional.")]
    assert conventional and all(n.startswith("conventional.0.") for n in conventional)
    assert [n.replace("conventional.", "rebalancing.", 1) for n in conventional] == [
        n for n in names if n.startswith("rebalancing.")
    ]
    # the 4 first blocks of stage 3 are in the shared trunk, after stages 1 and 2
    assert any(n.startswith("trunk.2.3.") for n in names) and not any(n.startswith("trunk.2.4.") for n in names)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    block = count(net.conventional)
    assert block == 2 * (64 * 64 * 9 + 2 * 64)  # two 3x3 convs and their BatchNorms
    # BBN = ResNet-32 + a second last block + a second classifier (the 0.46M of the paper's trunk)
    assert count(net) == count(ResNet32(3, 10)) + block + count(net.classifier_r) == 541_540
    assert count(BBN(3, 10, branch_blocks=None)) == 821_220  # each branch owns the whole last stage


def test_bbn_argument_errors():
    with pytest.raises(ValueError, match=r"branch_blocks must be an int in \[1, 2\]"):
        BBN(1, 3, branch_blocks=3, **TINY)
    with pytest.raises(ValueError, match="widths must list at least 2 stages"):
        BBN(1, 3, widths=(8,))
    with pytest.raises(ValueError, match=r"x_r must have shape \(N, 1, H, W\)"):
        BBN(1, 3, **TINY)(torch.randn(2, 1, 8, 8), torch.randn(2, 3, 8, 8))


# ----------------------------------------------------------------------------- bilateral recipe
def test_cumulative_lambda_steps_per_epoch():
    assert cumulative_lambda(0.0, 10) == 1.0
    assert cumulative_lambda(0.5, 10) == 0.75
    assert cumulative_lambda(0.59, 10) == 0.75  # inside epoch 5: constant
    assert cumulative_lambda(0.99, 10) == pytest.approx(1 - 0.81)
    assert cumulative_lambda(0.3) == pytest.approx(0.91)
    with pytest.raises(ValueError):
        cumulative_lambda(1.5)


@settings(max_examples=25, deadline=None)
@given(lam=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_bilateral_loss_matches_reference(lam, seed):
    g = np.random.default_rng(seed)
    z_c, z_r = g.normal(size=(6, 4)) * 3, g.normal(size=(6, 4)) * 3
    y_c, y_r = g.integers(0, 4, 6), g.integers(0, 4, 6)
    t = {k: torch.from_numpy(v) for k, v in dict(z_c=z_c, z_r=z_r, y_c=y_c, y_r=y_r).items()}
    ours = bilateral_loss(CrossEntropyLoss(), t["z_c"].float(), t["z_r"].float(), t["y_c"], t["y_r"], lam=lam)
    assert float(ours) == pytest.approx(ref.bilateral(z_c, z_r, y_c, y_r, lam), rel=1e-4, abs=1e-5)


def test_bilateral_loss_module():
    loss = BilateralLoss(DFLCELoss(), epochs=4)
    set_progress(loss, 0.5)
    assert loss.lam == 0.75 and loss.loss.progress == 0.5
    z_c, z_r, y = torch.randn(3, 2), torch.randn(3, 2), torch.tensor([0, 1, 1, 0, 0, 1])
    expected = bilateral_loss(loss.loss, z_c, z_r, y[:3], y[3:], lam=0.75)
    torch.testing.assert_close(loss((z_c, z_r), y), expected)
    torch.testing.assert_close(loss(z_c, y[:3]), loss.loss(z_c, y[:3]))  # validation: mixed logits
    with pytest.raises(ValueError, match="labels of both batches"):
        loss((z_c, z_r), y[:3])


def _longtail_data(counts, size=8, seed=0):
    g = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts)
    images = g.normal(size=(len(labels), 1, size, size)).astype(np.float32) + labels[:, None, None, None]
    return ArrayDataset(images, labels, num_classes=len(counts))


def _run_dir(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    return tmp_path


def _cfg(**kw):
    return parse_config({"progress": False, "batch_size": 4, "optimizer": "sgd", "lr": 0.05, **kw})


class _Spy(BBN):
    def __init__(self):
        super().__init__(1, 2, widths=(4, 4), blocks_per_stage=1)
        self.calls: list[tuple[int, int | None]] = []

    def forward(self, x, x_r=None):
        self.calls.append((len(x), None if x_r is None else len(x_r)))
        return super().forward(x, x_r)


def test_bilateral_engine_feeds_two_halves(tmp_path):
    data = _longtail_data([12, 4])
    net = _Spy()
    engine = Engine(net, ClassificationTask(2), _cfg(), run_dir=_run_dir(tmp_path), method=BilateralMethod())
    rows = engine.fit([bilateral_stage(DFLCELoss(), 2)], data, data)
    assert len(rows) == 2 and np.isfinite(rows[-1]["train_loss"])
    train_calls = [c for c in net.calls if c[1] is not None]
    assert train_calls and all(c == (4, 4) for c in train_calls)  # batch_size per branch
    assert any(c[1] is None for c in net.calls)  # validation: one pass


# ----------------------------------------------------------------------------- MiSLAS
@settings(max_examples=25, deadline=None)
@given(counts=st.lists(st.integers(1, 1000), min_size=2, max_size=6), seed=st.integers(0, 1000))
def test_label_aware_smoothing_matches_reference(counts, seed):
    if len(set(counts)) == 1:
        counts = [*counts[:-1], counts[-1] + 1]
    g = np.random.default_rng(seed)
    z, y = g.normal(size=(5, len(counts))) * 2, g.integers(0, len(counts), 5)
    ours = label_aware_smoothing(torch.from_numpy(z).float(), torch.from_numpy(y), class_counts=counts)
    assert float(ours) == pytest.approx(ref.label_aware_smoothing(z, y, counts), rel=1e-4, abs=1e-5)
    np.testing.assert_allclose(label_aware_epsilons(counts).numpy(), ref.label_aware_eps(counts), atol=1e-6)


def test_label_aware_smoothing_on_label_maps_is_the_per_pixel_loss():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(2, 3, 4, 5, generator=g), torch.randint(0, 3, (2, 4, 5), generator=g)
    per_pixel = label_aware_smoothing(logits.movedim(1, -1).reshape(-1, 3), target.reshape(-1), class_counts=[90, 9, 1])
    assert label_aware_smoothing(logits, target, class_counts=[90, 9, 1]) == pytest.approx(float(per_pixel), rel=1e-6)
    with pytest.raises(ValueError, match="C >= 2"):
        label_aware_smoothing(torch.randn(2, 1, 4), torch.zeros(2, 4, dtype=torch.long), class_counts=[3, 1])


def test_label_aware_smoothing_edges():
    eps = label_aware_epsilons([1000, 10, 505], head_eps=0.4, tail_eps=0.1)
    assert eps[0] == pytest.approx(0.4) and eps[1] == pytest.approx(0.1)
    assert label_aware_epsilons([7, 7]).tolist() == pytest.approx([0.3, 0.3])
    with pytest.raises(ValueError, match="class_counts has 2 entries but logits have 3"):
        LabelAwareSmoothingLoss([5, 1])(torch.randn(2, 3), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="head_eps must be in"):
        label_aware_epsilons([5, 1], head_eps=1.5)


def test_mixup_forward_mixes_pairs():
    net = WeightScaledNet(ResNet32(1, 2, **TINY))
    engine = Engine(net, ClassificationTask(2), _cfg(), method=MiSLASMethod())
    seen = {}

    class Record(nn.Module):
        def forward(self, x):
            seen["x"] = x
            return net(x)

    engine.stage = Stage(MIXUP_STAGE, 1, CrossEntropyLoss())
    x = torch.randn(6, 1, 8, 8)
    batch = {"image": x, "target": torch.tensor([0, 1, 0, 1, 1, 0])}
    module = Record().train()
    torch.manual_seed(3)
    out = engine.forward(module, batch)
    perm, lam = batch["mixup"]
    torch.testing.assert_close(seen["x"], lam * x + (1 - lam) * x[perm])
    loss = engine.compute_loss(engine.stage, out, batch)
    ce = CrossEntropyLoss()
    torch.testing.assert_close(loss, lam * ce(out, batch["target"]) + (1 - lam) * ce(out, batch["target"][perm]))


def test_mislas_stage_two_trains_classifier_and_shifts_batchnorm(tmp_path):
    data = _longtail_data([12, 4])
    net = WeightScaledNet(ResNet32(1, 2, **TINY))
    engine = Engine(net, ClassificationTask(2), _cfg(), run_dir=_run_dir(tmp_path), method=MiSLASMethod())
    stages = mislas_stages([12, 4], 1, 1)
    assert [s.name for s in stages] == ["mixup", "classifier"]
    engine.fit(stages[:1], data, data)
    assert torch.equal(net.scale, torch.ones(2))  # frozen in stage 1
    before = {k: v.clone() for k, v in net.state_dict().items()}
    engine.fit(stages, data, data, resume=True)  # continues with stage 2 only
    after = net.state_dict()
    bn = "net.stem.1"
    assert not torch.equal(before[f"{bn}.running_mean"], after[f"{bn}.running_mean"])  # shift learning
    assert torch.equal(before[f"{bn}.weight"], after[f"{bn}.weight"])  # affine frozen
    assert torch.equal(before["net.stem.0.weight"], after["net.stem.0.weight"])  # backbone frozen
    assert not torch.equal(before["net.classifier.weight"], after["net.classifier.weight"])
    assert not torch.equal(before["scale"], after["scale"])
