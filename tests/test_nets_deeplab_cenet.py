"""Tests for the ResNet encoders, DeepLabV3Plus and CENet."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from medbalance.data.phantoms import intraclass_phantoms
from medbalance.nets.backbones import RESNET_LAYOUTS, Bottleneck, ResNetEncoder
from medbalance.nets.blocks import pad_to_multiple
from medbalance.nets.cenet import CENet, DenseAtrousConv, ResidualMultiKernelPool
from medbalance.nets.deeplab import ASPP, DeepLabV3Plus


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _deeplab(**kwargs) -> DeepLabV3Plus:
    torch.manual_seed(0)
    return DeepLabV3Plus(kwargs.pop("in_channels", 1), kwargs.pop("num_classes", 2), **{"base_channels": 4, **kwargs})


def _cenet(**kwargs) -> CENet:
    torch.manual_seed(0)
    return CENet(kwargs.pop("in_channels", 1), kwargs.pop("num_classes", 1), **{"base_channels": 4, **kwargs})


NET_FACTORIES = {
    "deeplab-r50-os16": lambda **kw: _deeplab(**kw),
    "deeplab-r34-os8": lambda **kw: _deeplab(backbone="resnet34", output_stride=8, **kw),
    "cenet": lambda **kw: _cenet(**kw),
}


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("name", NET_FACTORIES)
@pytest.mark.parametrize("in_channels, num_classes", [(1, 1), (3, 4)])
@pytest.mark.parametrize("size", [(37, 53), (64, 64), (16, 1)])
def test_output_shape(name, in_channels, num_classes, size):
    net = NET_FACTORIES[name](in_channels=in_channels, num_classes=num_classes).eval()
    with torch.no_grad():
        out = net(torch.randn(2, in_channels, *size))
    assert out.shape == (2, num_classes, *size)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(sorted(NET_FACTORIES)),
    h=st.integers(1, 70),
    w=st.integers(1, 70),
    pad_mode=st.sampled_from(["replicate", "zeros"]),
)
def test_any_size_property(name, h, w, pad_mode):
    net = NET_FACTORIES[name](pad_mode=pad_mode).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, h, w)).shape[2:] == (h, w)


@pytest.mark.parametrize(
    "layout, output_stride, reductions",
    [
        ("resnet34", 32, (2, 4, 8, 16, 32)),
        ("resnet34", 16, (2, 4, 8, 16, 16)),
        ("resnet50", 16, (2, 4, 8, 16, 16)),
        ("resnet101", 8, (2, 4, 8, 8, 8)),
    ],
)
def test_encoder_feature_shapes(layout, output_stride, reductions):
    enc = ResNetEncoder(2, layout=layout, base_channels=4, output_stride=output_stride).eval()
    expansion = 1 if RESNET_LAYOUTS[layout][0] == "basic" else 4
    assert enc.reductions == reductions
    assert enc.out_channels == (4, 4 * expansion, 8 * expansion, 16 * expansion, 32 * expansion)
    with torch.no_grad():
        features = enc(torch.randn(1, 2, 64, 96))
    assert [tuple(f.shape[1:]) for f in features] == [
        (c, 64 // r, 96 // r) for c, r in zip(enc.out_channels, reductions)
    ]


def test_encoder_dilation_schedule_follows_torchvision():
    """Output stride 8: stage 3 dilation 2, stage 4 dilation 4, each stage's first block
    keeping the previous dilation; no stride in the dilated stages."""
    enc = ResNetEncoder(1, layout="resnet50", base_channels=4, output_stride=8)
    dilations = [[block.conv2[0].dilation[0] for block in stage] for stage in enc.stages]
    strides = [stage[0].conv2[0].stride[0] for stage in enc.stages]
    assert dilations == [[1] * 3, [1] * 4, [1] + [2] * 5, [2, 4, 4]]
    assert strides == [1, 2, 1, 1]
    basic = ResNetEncoder(1, layout="resnet34", base_channels=4, output_stride=16)
    last = basic.stages[-1]
    assert [(b.conv1[0].dilation[0], b.conv2[0].dilation[0], b.conv2[0].padding[0]) for b in last] == [
        (1, 1, 1),
        (2, 2, 2),
        (2, 2, 2),
    ]


# ----------------------------------------------------------------------------- encoder vs references
@pytest.mark.parametrize(
    "layout, expected",
    # torchvision resnet18/34/50/101 parameter counts minus their 1000-class fc layer.
    [
        ("resnet18", 11_689_512 - 513_000),
        ("resnet34", 21_797_672 - 513_000),
        ("resnet50", 25_557_032 - 2_049_000),
        ("resnet101", 44_549_160 - 2_049_000),
    ],
)
def test_encoder_param_count_matches_torchvision(layout, expected):
    with torch.device("meta"):
        enc = ResNetEncoder(3, layout=layout)
    assert _n_params(enc) == _resnet_trunk_params(3, 64, layout) == expected


@pytest.mark.parametrize("layout, monai_name", [("resnet34", "resnet34"), ("resnet50", "resnet50")])
def test_encoder_matches_monai_resnet_with_copied_weights(layout, monai_name):
    """Same layout as MONAI's ResNet (7x7 stride-2 stem, max-pool, v1.5 bottleneck,
    option-B shortcuts without bias): copying the weights in order gives the same output."""
    nets = pytest.importorskip("monai.networks.nets")
    torch.manual_seed(0)
    ours = ResNetEncoder(2, layout=layout, base_channels=8).eval()
    theirs = getattr(nets, monai_name)(
        spatial_dims=2,
        n_input_channels=2,
        conv1_t_size=7,
        conv1_t_stride=2,
        widen_factor=8 / 64,
        feed_forward=False,
        bias_downsample=False,
    ).eval()
    src, dst = ours.state_dict(), theirs.state_dict()
    assert [v.shape for v in src.values()] == [v.shape for v in dst.values()]
    theirs.load_state_dict(dict(zip(dst, src.values())))
    # Non-trivial BatchNorm statistics so that the norms take part in the comparison.
    for m_ours, m_theirs in zip(
        (m for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d)),
        (m for m in theirs.modules() if isinstance(m, torch.nn.BatchNorm2d)),
    ):
        stats = torch.rand(2, m_ours.num_features) + 0.5
        for m in (m_ours, m_theirs):
            m.running_mean.copy_(stats[0] - 1.0)
            m.running_var.copy_(stats[1])
    x = torch.randn(2, 2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[-1].mean((2, 3)), theirs(x))


# ----------------------------------------------------------------------------- parameter counts
def _resnet_trunk_params(in_ch: int, b: int, layout: str) -> int:
    """Stem 7x7 conv + BN, then per block: conv weights + 2 BN parameters per output
    channel, and a 1x1 conv + BN shortcut where the width or the stride changes."""
    kind, blocks = RESNET_LAYOUTS[layout]
    total = 49 * in_ch * b + 2 * b
    c_in = b
    for i, n in enumerate(blocks):
        c_out = b * 2**i * (1 if kind == "basic" else 4)
        for j in range(n):
            cin = c_in if j == 0 else c_out
            if kind == "basic":
                total += 9 * cin * c_out + 9 * c_out * c_out + 4 * c_out
            else:
                w = c_out // 4
                total += cin * w + 9 * w * w + w * c_out + 4 * w + 2 * c_out
            if j == 0 and (i > 0 or cin != c_out):
                total += cin * c_out + 2 * c_out
        c_in = c_out
    return total


def _deeplab_params(in_ch: int, k: int, b: int, layout: str, n_rates: int = 3) -> int:
    """Trunk + ASPP (1x1, n_rates 3x3 atrous, pooling 1x1 with bias, 1x1 projection) +
    low-level 1x1 reduction to 3b/4 + two 3x3 fusion convs + 1x1 head with bias."""
    expansion = 1 if RESNET_LAYOUTS[layout][0] == "basic" else 4
    high, low, width, reduced = 8 * b * expansion, b * expansion, 4 * b, max(1, 3 * b // 4)
    aspp = (high * width + 2 * width) + n_rates * (9 * high * width + 2 * width) + (high * width + width)
    aspp += (n_rates + 2) * width * width + 2 * width
    decoder = (low * reduced + 2 * reduced) + 9 * (width + reduced) * width + 9 * width * width + 4 * width
    return _resnet_trunk_params(in_ch, b, layout) + aspp + decoder + width * k + k


def _cenet_params(in_ch: int, k: int, b: int) -> int:
    """ResNet-34 trunk + DAC (3x3 at rates 1/3/5 and 1x1, all with bias) + RMP (1x1 to one
    channel) + four decoder blocks (1x1, 3x3 transposed, 1x1, each + BN) + head."""
    c = 8 * b
    dac = 3 * (9 * c * c + c) + (c * c + c)
    rmp = c + 1

    def block(cin: int, cout: int) -> int:
        mid = cin // 4
        return cin * mid + 9 * mid * mid + mid * cout + 4 * mid + 2 * cout

    decoder = block(c + 4, 4 * b) + block(4 * b, 2 * b) + block(2 * b, b) + block(b, b)
    half = b // 2
    head = 16 * b * half + 2 * half + 9 * half * half + 2 * half + 9 * half * k + k
    return _resnet_trunk_params(in_ch, b, "resnet34") + dac + rmp + decoder + head


@pytest.mark.parametrize(
    "layout, b, in_ch, k",
    [("resnet101", 64, 3, 21), ("resnet50", 64, 1, 2), ("resnet34", 8, 3, 1), ("resnet18", 4, 1, 5)],
)
def test_deeplab_param_count(layout, b, in_ch, k):
    with torch.device("meta"):
        net = DeepLabV3Plus(in_ch, k, base_channels=b, backbone=layout)
    assert _n_params(net) == _deeplab_params(in_ch, k, b, layout)


@pytest.mark.parametrize("b, in_ch, k", [(64, 3, 1), (16, 1, 2), (8, 1, 3)])
def test_cenet_param_count(b, in_ch, k):
    with torch.device("meta"):
        net = CENet(in_ch, k, base_channels=b)
    assert _n_params(net) == _cenet_params(in_ch, k, b)


# ----------------------------------------------------------------------------- blocks
def test_aspp_rates_and_doubling_at_output_stride_8():
    def rates(net: DeepLabV3Plus) -> list[int]:
        return [branch[0].dilation[0] for branch in net.decoder.aspp.branches]

    assert rates(_deeplab()) == [1, 6, 12, 18]
    assert rates(_deeplab(output_stride=8)) == [1, 12, 24, 36]
    assert rates(_deeplab(aspp_rates=(3, 5))) == [1, 3, 5]
    net = _deeplab()
    # Low-level fusion takes the stride-4 stage output (first stage).
    assert net.decoder.reduce[0].in_channels == net.encoder.out_channels[1] == 16
    assert net.decoder.reduce[0].out_channels == 3  # 48 * 4 / 64


def test_aspp_image_pooling_branch_is_global_and_batch_one_trains():
    aspp = ASPP(4, 3, rates=(2,), dropout=0.0).train()
    x = torch.randn(1, 4, 8, 8)
    pooled = aspp.image_pool(x)
    assert pooled.shape == (1, 3, 1, 1)
    torch.testing.assert_close(pooled, F.relu(aspp.image_pool[1](x.mean((2, 3), keepdim=True))))
    assert aspp(x).shape == (1, 3, 8, 8)  # no norm on the 1x1 pooled map: batch 1 works
    net = _deeplab().train()
    net(torch.randn(1, 1, 64, 64)).sum().backward()


def test_dac_matches_authors_formula():
    """Branches a1(x); c(a3(x)); c(a3(a1(x))); c(a5(a3(a1(x)))) with shared convs, ReLU each,
    summed with the input (Gu et al. 2019, code)."""
    torch.manual_seed(0)
    dac = DenseAtrousConv(3)
    assert [conv.dilation[0] for conv in (dac.atrous1, dac.atrous3, dac.atrous5)] == [1, 3, 5]
    x = torch.randn(2, 3, 16, 16)
    a1, a3, a5, c = dac.atrous1, dac.atrous3, dac.atrous5, dac.pointwise
    expected = x + F.relu(a1(x)) + F.relu(c(a3(x))) + F.relu(c(a3(a1(x)))) + F.relu(c(a5(a3(a1(x)))))
    with torch.no_grad():
        torch.testing.assert_close(dac(x), expected)


def test_rmp_pools_and_small_maps():
    torch.manual_seed(0)
    rmp = ResidualMultiKernelPool(3)
    x = torch.randn(2, 3, 14, 15)
    with torch.no_grad():
        out = rmp(x)
        assert out.shape == (2, 7, 14, 15)
        assert torch.equal(out[:, 4:], x)
        for i, k in enumerate((2, 3, 5, 6)):
            pooled = rmp.conv(torch.nn.MaxPool2d(k, stride=k)(x))
            expected = F.interpolate(pooled, size=(14, 15), mode="bilinear", align_corners=False)
            torch.testing.assert_close(out[:, i : i + 1], expected)
        # A 4x2 map is smaller than the 5 and 6 kernels: they pool it whole.
        small = torch.randn(2, 3, 4, 2)
        out = rmp(small)
        whole = rmp.conv(small.amax((2, 3), keepdim=True)).expand(-1, -1, 4, 2)
        torch.testing.assert_close(out[:, 2:4], torch.cat([whole, whole], dim=1))


def test_bottleneck_shapes_and_shortcut():
    block = Bottleneck(8, 16, stride=2, dilation=2)
    assert block(torch.randn(2, 8, 10, 10)).shape == (2, 16, 5, 5)
    assert block.conv2[0].dilation == (2, 2) and block.conv2[0].stride == (2, 2)
    assert isinstance(Bottleneck(16, 16).shortcut, torch.nn.Identity)
    assert Bottleneck(4, 8, spatial_dims=3)(torch.randn(1, 4, 4, 4, 4)).shape == (1, 8, 4, 4, 4)


# ----------------------------------------------------------------------------- gradients, determinism
@pytest.mark.parametrize("name", NET_FACTORIES)
def test_gradients_reach_every_parameter(name):
    net = NET_FACTORIES[name](num_classes=3)
    net(torch.randn(2, 1, 37, 45)).logsumexp(1).mean().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NET_FACTORIES)
def test_eval_mode_is_deterministic_and_seeded_init_reproducible(name):
    a = NET_FACTORIES[name]().eval()
    b = NET_FACTORIES[name]().eval()
    x = torch.randn(2, 1, 29, 40)
    with torch.no_grad():
        out = a(x)
        assert torch.equal(out, a(x))
        assert torch.equal(out, b(x))


@pytest.mark.parametrize("name", NET_FACTORIES)
def test_pads_then_crops(name):
    net = NET_FACTORIES[name](pad_mode="zeros").eval()
    multiple = 32 if name == "cenet" else net.output_stride
    x = torch.randn(1, 1, 20, 9)
    padded, index = pad_to_multiple(x, multiple, mode="zeros")
    assert all(s % multiple == 0 for s in padded.shape[2:]) and padded.shape != x.shape
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(padded)[index])


# ----------------------------------------------------------------------------- overfit
def _dice(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(2 * (pred & target).sum() / (pred.sum() + target.sum()))


@pytest.mark.parametrize(
    "make, num_classes",
    [
        (lambda: DeepLabV3Plus(1, 2, base_channels=8), 2),
        (lambda: DeepLabV3Plus(1, 1, base_channels=8, backbone="resnet34", output_stride=8), 1),
        (lambda: CENet(1, 1, base_channels=16), 1),
    ],
    ids=["deeplab-r50", "deeplab-r34-os8-binary", "cenet-binary"],
)
def test_overfits_one_phantom_batch(make, num_classes):
    """20 Adam steps (lr 1e-2) on four 64x64 intra-class phantoms reach Dice > 0.9.

    Dice is read in training mode (batch statistics): after 20 steps the BatchNorm running
    averages (momentum 0.1) still lag, and this test is about the fitted function."""
    ps = intraclass_phantoms(4, size=64, seed=0)
    x, y = torch.from_numpy(ps.images), torch.from_numpy(ps.target).long()
    torch.manual_seed(0)
    net = make()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(20):
        logits = net(x)
        if num_classes == 1:
            loss = F.binary_cross_entropy_with_logits(logits[:, 0], y.float())
        else:
            loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = net(x)
    pred = logits[:, 0] > 0 if num_classes == 1 else logits.argmax(1) == 1
    assert _dice(pred, y == 1) > 0.9


# ----------------------------------------------------------------------------- export
@pytest.mark.parametrize("name", ["deeplab-r50-os16", "cenet"])
def test_torch_export_and_trace_match_eager(name):
    net = NET_FACTORIES[name]().eval()
    x = torch.randn(1, 1, 40, 50)
    with torch.no_grad():
        expected = net(x)
        exported = torch.export.export(net, (x,)).module()
        torch.testing.assert_close(exported(x), expected)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated but still the TorchScript path
            traced = torch.jit.trace(net, x)
        torch.testing.assert_close(traced(x), expected)


# ----------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_channels": 0}, "in_channels must be a positive int, got 0"),
        ({"num_classes": 2.0}, "num_classes must be a positive int"),
        ({"base_channels": -8}, "base_channels must be a positive int"),
        ({"backbone": "resnet152"}, r"backbone must be one of \('resnet18', 'resnet34', 'resnet50', 'resnet101'\)"),
        ({"output_stride": 32}, r"output_stride must be one of \(8, 16\), got 32"),
        ({"aspp_rates": ()}, r"aspp_rates must list at least one rate, got \(\)"),
        ({"aspp_rates": (6, 0)}, r"aspp_rates\[1\] must be a positive int, got 0"),
        ({"norm": "layer"}, "norm must be one of"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"pad_mode": "reflect"}, "pad_mode must be one of"),
    ],
)
def test_deeplab_bad_args(kwargs, match):
    kwargs = {"in_channels": 1, "num_classes": 2, "base_channels": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        DeepLabV3Plus(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_channels": True}, "in_channels must be a positive int, got True"),
        ({"num_classes": 0}, "num_classes must be a positive int"),
        ({"base_channels": 0}, "base_channels must be a positive int"),
        ({"norm": "layer"}, "norm must be one of"),
        ({"pad_mode": "reflect"}, "pad_mode must be one of"),
    ],
)
def test_cenet_bad_args(kwargs, match):
    kwargs = {"in_channels": 1, "num_classes": 1, "base_channels": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        CENet(**kwargs)


def test_encoder_and_block_bad_args():
    with pytest.raises(ValueError, match=r"layout must be one of \('resnet18', 'resnet34', 'resnet50', 'resnet101'\)"):
        ResNetEncoder(1, layout="resnet152")
    with pytest.raises(ValueError, match=r"output_stride must be one of \(8, 16, 32\), got 4"):
        ResNetEncoder(1, output_stride=4)
    with pytest.raises(ValueError, match="out_channels must be a multiple of 4, got 6"):
        Bottleneck(4, 6)


@pytest.mark.parametrize("name", NET_FACTORIES)
def test_bad_input_shape(name):
    net = NET_FACTORIES[name](in_channels=3)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3, \*, \*\), got \(1, 1, 8, 8\)"):
        net(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="x must have shape"):
        net(torch.randn(3, 8, 8))
