"""Tests for medbalance.nets: UNet, ResNet32, the blocks and the registry."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medbalance.nets import NETS, ResNet32, UNet, build_net
from medbalance.nets.blocks import pad_to_multiple


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _small_unet(**kwargs) -> UNet:
    torch.manual_seed(0)
    kwargs = {"base_channels": 4, "depth": 2, **kwargs}
    return UNet(1, 2, **kwargs)


# ----------------------------------------------------------------------------- UNet shapes
@pytest.mark.parametrize("size", [(37, 53), (64, 64), (16, 1), (5, 70)])
def test_unet_2d_output_shape(size):
    net = UNet(1, 3, base_channels=8).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, *size))
    assert out.shape == (2, 3, *size)


def test_unet_3d_output_shape():
    net = UNet(2, 2, base_channels=4, spatial_dims=3).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 2, 20, 24, 28))
    assert out.shape == (1, 2, 20, 24, 28)


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
@pytest.mark.parametrize("upsample", ["transpose", "linear", "nearest"])
def test_unet_options_train_step(norm, upsample):
    net = _small_unet(norm=norm, upsample=upsample, dropout=0.1)
    out = net(torch.randn(2, 1, 19, 22))
    assert out.shape == (2, 2, 19, 22)
    out.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_unet_binary_single_channel_logits():
    assert UNet(1, 1, base_channels=4, depth=2)(torch.randn(2, 1, 8, 8)).shape == (2, 1, 8, 8)


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    pad_mode=st.sampled_from(["replicate", "zeros"]),
)
def test_unet_any_size_property(h, w, pad_mode):
    net = _small_unet(pad_mode=pad_mode).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, h, w)).shape == (1, 2, h, w)


# ----------------------------------------------------------------------------- padding helper
@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 20), min_size=2, max_size=3),
    multiple=st.integers(1, 16),
    mode=st.sampled_from(["replicate", "zeros"]),
)
def test_pad_to_multiple_roundtrip(shape, multiple, mode):
    x = torch.randn(2, 3, *shape)
    padded, index = pad_to_multiple(x, multiple, mode=mode)
    assert all(s % multiple == 0 for s in padded.shape[2:])
    assert all(0 <= p - s < multiple for p, s in zip(padded.shape[2:], shape))
    assert torch.equal(padded[index], x)
    # Split evenly: the leading pad is never larger than the trailing one.
    for sl, p, s in zip(index[2:], padded.shape[2:], shape):
        assert sl.start <= p - s - sl.start <= sl.start + 1


def test_pad_to_multiple_modes_and_noop():
    x = torch.arange(1.0, 4.0).reshape(1, 1, 1, 3)
    zeros, _ = pad_to_multiple(x, 4, mode="zeros")
    replicate, _ = pad_to_multiple(x, 4, mode="replicate")
    assert zeros.flatten().tolist()[-1] == 0.0 and replicate.flatten().tolist()[-1] == 3.0
    same, _ = pad_to_multiple(torch.randn(1, 1, 8, 8), 4)
    assert same.shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match="mode must be one of"):
        pad_to_multiple(x, 4, mode="reflect")


@pytest.mark.parametrize("pad_mode", ["replicate", "zeros"])
def test_unet_pads_then_crops(pad_mode):
    net = UNet(1, 2, base_channels=4, pad_mode=pad_mode).eval()

    def unpadded(x):
        return net.head(net.decoder(net.encoder(x)))

    with torch.no_grad():
        x = torch.randn(1, 1, 32, 48)
        assert torch.equal(net(x), unpadded(x))  # multiples of 16 are not padded
        x = torch.randn(1, 1, 20, 9)
        padded, index = pad_to_multiple(x, 16, mode=pad_mode)
        assert padded.shape == (1, 1, 32, 16)
        assert torch.equal(net(x), unpadded(padded)[index])


# ----------------------------------------------------------------------------- gradients
def test_unet_gradients_reach_every_parameter():
    net = UNet(1, 2, base_channels=4)
    net(torch.randn(2, 1, 37, 21)).logsumexp(1).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_resnet32_gradients_reach_every_parameter():
    net = ResNet32(3, 5, widths=(4, 8, 8), blocks_per_stage=2)
    torch.nn.functional.cross_entropy(net(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 3])).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ----------------------------------------------------------------------------- parameter counts
def _classic_unet_params(in_ch: int, n_classes: int, base: int, depth: int, norm: bool) -> int:
    """Re-derive the U-Net parameter count layer by layer.

    3x3 conv: 9*cin*cout weights, plus cout biases without norm or 2*cout norm affine
    parameters with it. Up step: 2x2 transposed conv c -> c/2 with bias, then a double
    conv on the concatenation (c/2 + c/2 skip) -> c/2. Head: 1x1 conv with bias.
    """

    def conv3(cin: int, cout: int) -> int:
        return 9 * cin * cout + (2 * cout if norm else cout)

    c = [base * 2**i for i in range(depth + 1)]
    total = conv3(in_ch, c[0]) + conv3(c[0], c[0])
    for i in range(1, depth + 1):
        total += conv3(c[i - 1], c[i]) + conv3(c[i], c[i])
    for i in range(depth, 0, -1):
        total += 4 * c[i] * c[i - 1] + c[i - 1]
        total += conv3(2 * c[i - 1], c[i - 1]) + conv3(c[i - 1], c[i - 1])
    return total + c[0] * n_classes + n_classes


def test_unet_param_count_matches_classic_formula():
    with torch.device("meta"):  # 31M parameters: no need to allocate them
        plain = UNet(1, 2, base_channels=64, norm="none")
        batch = UNet(1, 2, base_channels=64)
    # Ronneberger's network (conv biases, no norm) has 31,030,658 parameters for 1 -> 2.
    assert _n_params(plain) == _classic_unet_params(1, 2, 64, 4, norm=False) == 31_030_658
    assert _n_params(batch) == _classic_unet_params(1, 2, 64, 4, norm=True)


@pytest.mark.parametrize("base, depth, in_ch, n_cls", [(8, 3, 3, 4), (4, 1, 1, 1)])
def test_unet_param_count_other_widths(base, depth, in_ch, n_cls):
    net = UNet(in_ch, n_cls, base_channels=base, depth=depth)
    assert _n_params(net) == _classic_unet_params(in_ch, n_cls, base, depth, norm=True)


def test_resnet32_param_count():
    net = ResNet32(3, 10)
    conv = sum(m.weight.numel() for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert len([m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]) == 31 + 2
    # Option-A ResNet-32 (stem + 30 block convs, BN affine, linear 64 -> 10): 464,154.
    stage_convs = [(3, 16)] + [(16, 16)] * 10 + [(16, 32)] + [(32, 32)] * 9
    stage_convs += [(32, 64)] + [(64, 64)] * 9
    option_a = sum(9 * a * b + 2 * b for a, b in stage_convs) + 64 * 10 + 10
    assert option_a == 464_154
    # Option-B shortcuts: 1x1 conv + BN at the two stage transitions.
    shortcuts = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert _n_params(net) == option_a + shortcuts == 466_906
    assert conv == sum(9 * a * b for a, b in stage_convs) + 16 * 32 + 32 * 64
    # He et al. (2016, Table 6) report "0.46M": rounding to two digits allows +-0.005M
    # (1.1%) and the option-B shortcuts add 0.6% more, so 2% is the honest tolerance.
    assert abs(_n_params(net) - 0.46e6) / 0.46e6 < 0.02


# ----------------------------------------------------------------------------- ResNet32
def test_resnet32_shapes_and_trunk():
    net = ResNet32(3, 7).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        feats = net.forward_features(x)
        logits = net(x)
    assert feats.shape == (3, 64) and net.feature_dim == 64
    assert logits.shape == (3, 7)
    assert isinstance(net.classifier, torch.nn.Linear)
    torch.testing.assert_close(logits, net.classifier(feats))
    assert (feats >= 0).all()  # pooled after a ReLU


def test_resnet32_layout():
    net = ResNet32(1, 2, widths=(8, 16, 32), blocks_per_stage=5)
    assert [len(stage) for stage in net.stages] == [5, 5, 5]
    assert [stage[0].conv1[0].stride for stage in net.stages] == [(1, 1), (2, 2), (2, 2)]
    with torch.no_grad():
        assert net.stages(net.stem(torch.randn(1, 1, 32, 32))).shape == (1, 32, 8, 8)


# ----------------------------------------------------------------------------- determinism
@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: UNet(1, 2, base_channels=4, dropout=0.5), (2, 1, 23, 31)),
        (lambda: ResNet32(3, 4, widths=(4, 8, 8), blocks_per_stage=1), (2, 3, 16, 16)),
    ],
)
def test_eval_mode_is_deterministic_and_seeded_init_reproducible(make, shape):
    torch.manual_seed(1)
    a = make().eval()
    torch.manual_seed(1)
    b = make().eval()
    x = torch.randn(shape)
    with torch.no_grad():
        out = a(x)
        assert torch.equal(out, a(x))
        assert torch.equal(out, b(x))


# ----------------------------------------------------------------------------- export
@pytest.mark.parametrize(
    "net, shape",
    [
        (UNet(1, 2, base_channels=4, depth=2), (1, 1, 13, 18)),
        (ResNet32(3, 4, widths=(4, 8, 8), blocks_per_stage=1), (2, 3, 16, 16)),
    ],
)
def test_torch_export_and_trace_match_eager(net, shape):
    net.eval()
    x = torch.randn(shape)
    with torch.no_grad():
        expected = net(x)
        exported = torch.export.export(net, (x,)).module()
        torch.testing.assert_close(exported(x), expected)
        with warnings.catch_warnings():
            # torch.jit is deprecated but still the TorchScript export path.
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(net, x)
        torch.testing.assert_close(traced(x), expected)


# ----------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_channels": 0}, "in_channels must be a positive int, got 0"),
        ({"num_classes": 2.0}, "num_classes must be a positive int"),
        ({"base_channels": -8}, "base_channels must be a positive int"),
        ({"depth": 0}, "depth must be a positive int"),
        ({"depth": True}, "depth must be a positive int"),
        ({"spatial_dims": 1}, r"spatial_dims must be one of \(2, 3\), got 1"),
        ({"norm": "layer"}, r"norm must be one of \('batch', 'instance', 'group', 'none'\)"),
        ({"upsample": "bilinear"}, "upsample must be one of"),
        ({"pad_mode": "reflect"}, "pad_mode must be one of"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"dropout": -0.1}, "dropout must be in"),
    ],
)
def test_unet_bad_args(kwargs, match):
    kwargs = {"in_channels": 1, "num_classes": 2, "base_channels": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)


def test_unet_bad_input_shape():
    net = UNet(3, 2, base_channels=4, depth=1)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3, \*, \*\), got \(1, 1, 8, 8\)"):
        net(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="x must have shape"):
        net(torch.randn(3, 8, 8))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 0}, "num_classes must be a positive int"),
        ({"blocks_per_stage": 0}, "blocks_per_stage must be a positive int"),
        ({"widths": ()}, "widths must list at least one stage width"),
        ({"widths": (16, 0, 64)}, r"widths\[1\] must be a positive int, got 0"),
    ],
)
def test_resnet32_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNet32(**kwargs)


def test_resnet32_bad_input_shape():
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3, H, W\), got \(2, 1, 32, 32\)"):
        ResNet32()(torch.randn(2, 1, 32, 32))


# ----------------------------------------------------------------------------- registry
def test_registry_and_build_net():
    assert NETS["unet"] is UNet and NETS["resnet32"] is ResNet32
    net = build_net("UNet", in_channels=1, num_classes=2, base_channels=4, depth=1)
    assert isinstance(net, UNet)
    assert isinstance(build_net("resnet32", num_classes=3), ResNet32)


def test_build_net_unknown_name():
    expected = r"unknown network 'unte'; did you mean 'unet'\? \(known: attention_unet, "
    with pytest.raises(ValueError, match=expected):
        build_net("unte")
    with pytest.raises(ValueError) as info:
        build_net("xyz")
    assert "did you mean" not in str(info.value) and all(name in str(info.value) for name in NETS)


# ----------------------------------------------------------------------------- benchmark harness
def test_benchmark_harness_rows_and_report():
    import json

    from benchmarks.harness import Case, Group, forward_gflops, report, run_groups

    net = torch.nn.Conv2d(1, 2, 3, bias=False)
    # 2 * (1 * 9) * 2 output channels * 6 * 6 pixels multiply-adds per image
    assert forward_gflops(net, torch.randn(3, 1, 8, 8)) == pytest.approx(2 * 9 * 2 * 36 / 1e9)
    cases = [
        Case("ours", lambda: torch.ones(64).sum(), items=4, params=10),
        Case("theirs", lambda: torch.ones(64).sum(), items=4, params=20, gflops=1.5),
    ]
    rows = run_groups([Group("toy", cases)], warmup=0, repeats=3)
    assert [r.impl for r in rows] == ["ours", "theirs"]
    assert rows[0].ratio is None and rows[1].ratio > 0
    assert rows[1].ratio == pytest.approx(rows[0].images_per_s / rows[1].images_per_s)
    assert all(r.repeats == 3 and r.threads == torch.get_num_threads() for r in rows)
    text = report(rows).splitlines()
    assert text[0].startswith("| benchmark") and text[4] == ""  # header, rule, 2 rows, blank
    assert [json.loads(line)["impl"] for line in text[5:]] == ["ours", "theirs"]
    with pytest.raises(ValueError, match="repeats >= 1"):
        run_groups([Group("toy", cases)], repeats=0)
