"""Tests for the U-Net family: deep-supervised UNet, UNetPlusPlus, UNet3Plus, AttentionUNet,
the AttentionGate and the pad / crop / deep-supervision plumbing of SegmentationNet."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from medbalance.nets.attention_unet import AttentionUNet
from medbalance.nets.blocks import AttentionGate, crop_to_input, pad_to_multiple
from medbalance.nets.unet import UNet
from medbalance.nets.unet3plus import UNet3Plus
from medbalance.nets.unetpp import UNetPlusPlus

NETS = {"unet": UNet, "unetpp": UNetPlusPlus, "unet3plus": UNet3Plus, "attention_unet": AttentionUNet}
WITH_CGM = [pytest.param(n, {}, id=n) for n in NETS] + [pytest.param("unet3plus", {"cgm": True}, id="unet3plus-cgm")]


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _make(name: str, in_ch: int = 1, n_cls: int = 2, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = {"base_channels": 4, "depth": 3, **kwargs}
    return NETS[name](in_ch, n_cls, **kwargs)


def _n_outputs(name: str, depth: int) -> int:
    """Outputs with deep supervision: main + one per coarser decoder stage (U-Net++: per top
    node; U-Net 3+: per deeper decoder node and the bottleneck)."""
    return depth + 1 if name == "unet3plus" else depth


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("in_ch, n_cls", [(1, 1), (3, 4)])
def test_output_shape_odd_size(name, in_ch, n_cls):
    net = _make(name, in_ch, n_cls, depth=4).eval()
    with torch.no_grad():
        out = net(torch.randn(2, in_ch, 37, 53))
    assert isinstance(out, torch.Tensor) and out.shape == (2, n_cls, 37, 53)


@pytest.mark.parametrize("name", list(NETS))
def test_output_shape_3d(name):
    net = _make(name, 2, 3, base_channels=2, depth=2, spatial_dims=3, deep_supervision=True)
    outs = net(torch.randn(1, 2, 9, 12, 14))
    assert outs[0].shape == (1, 3, 9, 12, 14) and len(outs) == _n_outputs(name, 2)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 2, 9, 12, 14)).shape == (1, 3, 9, 12, 14)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), name=st.sampled_from(list(NETS)))
def test_any_size_property(h, w, name):
    net = _make(name, base_channels=2, depth=2).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, h, w)).shape == (1, 2, h, w)


# ----------------------------------------------------------------------------- deep supervision
@pytest.mark.parametrize("name", list(NETS))
def test_deep_supervision_outputs_train_and_eval(name):
    net = _make(name, depth=4, deep_supervision=True, norm="group")
    x = torch.randn(2, 1, 37, 53)
    outs = net(x)
    assert isinstance(outs, tuple) and len(outs) == _n_outputs(name, 4)
    assert all(o.shape[:2] == (2, 2) for o in outs)
    sizes = [tuple(o.shape[2:]) for o in outs]
    if name in ("unet", "attention_unet"):
        # 37x53 padded to 48x64: aux crops cover the input's coarse pixels, 1/2 .. 1/8.
        assert sizes == [(37, 53), (19, 27), (10, 14), (6, 8)]
    else:
        assert sizes == [(37, 53)] * len(outs)
    with torch.no_grad():
        main_eval = net.eval()(x)
        main_train = net.train()(x)[0]
    # group norm, no dropout: train and eval compute the same main output
    assert isinstance(main_eval, torch.Tensor)
    torch.testing.assert_close(main_eval, main_train)


@pytest.mark.parametrize("name", list(NETS))
def test_each_aux_output_comes_from_its_own_head(name):
    net = _make(name, deep_supervision=True)
    outs = net(torch.randn(2, 1, 16, 24))
    heads = list(net.aux_heads)
    assert len(heads) == len(outs) - 1
    for k, out in enumerate(outs[1:]):
        net.zero_grad(set_to_none=True)
        out.sum().backward(retain_graph=True)
        used = [all(p.grad is not None and p.grad.abs().sum() > 0 for p in h.parameters()) for h in heads]
        assert used == [i == k for i in range(len(heads))], (k, used)
        assert net.head.weight.grad is None


@pytest.mark.parametrize("name", list(NETS))
def test_without_deep_supervision_no_aux_heads(name):
    net = _make(name)
    assert net.aux_heads is None and isinstance(net(torch.randn(1, 1, 16, 16)), torch.Tensor)


def test_unet_deep_supervision_matches_plain_unet_main_output():
    plain, supervised = _make("unet", norm="instance"), _make("unet", norm="instance", deep_supervision=True)
    supervised.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 1, 21, 30)
    torch.testing.assert_close(supervised(x)[0], plain(x))
    assert _n_params(supervised) - _n_params(plain) == (8 + 16) * 2 + 2 * 2  # two 1x1 aux heads


@settings(max_examples=25, deadline=None)
@given(size=st.integers(1, 40), multiple_log2=st.integers(0, 4), factor_log2=st.integers(0, 4))
def test_crop_to_input_low_resolution_covers_input(size, multiple_log2, factor_log2):
    multiple, factor = 2**multiple_log2, 2 ** min(factor_log2, multiple_log2)
    x = torch.zeros(1, 1, size, 3)
    padded, index = pad_to_multiple(x, multiple, mode="zeros")
    inside = torch.zeros_like(padded)
    inside[index] = 1.0
    coarse = F.max_pool2d(inside, (factor, 1))  # a coarse pixel touching the input is 1
    cropped = crop_to_input(coarse, index, padded.shape[2:])
    assert cropped.shape[2] == int(coarse.sum(dim=2).max())  # exactly the touching pixels
    assert bool((cropped == 1).all())
    assert -(-size // factor) <= cropped.shape[2] <= -(-size // factor) + 1


# ----------------------------------------------------------------------------- gradients, determinism
@pytest.mark.parametrize("name, kwargs", WITH_CGM)
def test_every_parameter_gets_a_gradient(name, kwargs):
    net = _make(name, deep_supervision=True, **kwargs)
    sum(o.logsumexp(1).mean() for o in net(torch.randn(2, 1, 19, 26))).backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", list(NETS))
def test_eval_deterministic_and_seeded_init_reproducible(name):
    a = _make(name, dropout=0.5, deep_supervision=True).eval()
    b = _make(name, dropout=0.5, deep_supervision=True).eval()
    x = torch.randn(2, 1, 23, 31)
    with torch.no_grad():
        out = a(x)
        assert torch.equal(out, a(x)) and torch.equal(out, b(x))


@pytest.mark.parametrize("name", ["unetpp", "unet3plus", "attention_unet"])
def test_torch_export_and_trace_match_eager(name):
    net = _make(name, base_channels=2, depth=2, deep_supervision=True).eval()
    x = torch.randn(1, 1, 13, 18)
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(torch.export.export(net, (x,)).module()(x), expected)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated but still the TorchScript path
            torch.testing.assert_close(torch.jit.trace(net, x)(x), expected)


# ----------------------------------------------------------------------------- overfit one batch
def _disk_batch(n: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = torch.randint(10, size - 10, (n, 2, 1, 1), generator=g)
    radius = torch.randint(4, 9, (n, 1, 1), generator=g)
    target = ((yy - centre[:, 0]) ** 2 + (xx - centre[:, 1]) ** 2 <= radius**2).long()
    image = target.float().unsqueeze(1) + 0.3 * torch.randn(n, 1, size, size, generator=g)
    return image, target


@pytest.mark.parametrize("name, kwargs", WITH_CGM)
def test_overfits_one_batch(name, kwargs):
    image, target = _disk_batch()
    # group norm: eval mode is meaningful after 20 steps (BatchNorm running stats would not be)
    net = _make(name, base_channels=8, norm="group", deep_supervision=True, **kwargs)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(20):
        outs = net(image)
        loss = sum(
            F.cross_entropy(o, F.interpolate(target[:, None].float(), size=o.shape[2:]).squeeze(1).long()) for o in outs
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = net.eval()(image).argmax(1)
    dice = 2 * ((pred == 1) & (target == 1)).sum() / ((pred == 1).sum() + (target == 1).sum())
    assert dice > 0.9


# ----------------------------------------------------------------------------- parameter counts
def _conv3(cin: int, cout: int, norm: bool) -> int:
    return 9 * cin * cout + (2 * cout if norm else cout)


def _encoder_params(in_ch: int, w: list[int], norm: bool) -> int:
    total = _conv3(in_ch, w[0], norm) + _conv3(w[0], w[0], norm)
    return total + sum(_conv3(w[i - 1], w[i], norm) + _conv3(w[i], w[i], norm) for i in range(1, len(w)))


def _unetpp_params(in_ch: int, n_cls: int, base: int, depth: int, norm: bool) -> int:
    """Node X^{i,j}: 2x2 transposed conv w[i+1] -> w[i] (bias), double conv on
    (j + 1) * w[i] channels -> w[i]; 1x1 head on X^{0,depth}."""
    w = [base * 2**i for i in range(depth + 1)]
    total = _encoder_params(in_ch, w, norm)
    for j in range(1, depth + 1):
        for i in range(depth + 1 - j):
            total += 4 * w[i + 1] * w[i] + w[i] + _conv3((j + 1) * w[i], w[i], norm) + _conv3(w[i], w[i], norm)
    return total + w[0] * n_cls + n_cls


def _unet3plus_params(in_ch: int, n_cls: int, base: int, depth: int) -> int:
    """Node at level i: depth + 1 branch convs (encoder levels <= i, deeper nodes, bottleneck)
    to ``base`` channels, a fusion conv on ``(depth + 1) * base``; 3x3 head."""
    w = [base * 2**i for i in range(depth + 1)]
    fused = base * (depth + 1)
    total = _encoder_params(in_ch, w, True)
    for level in range(depth):
        sources = w[: level + 1] + [fused] * (depth - 1 - level) + [w[depth]]
        total += sum(_conv3(c, base, True) for c in sources) + _conv3(fused, fused, True)
    return total + 9 * fused * n_cls + n_cls


def test_unetpp_param_count_matches_paper():
    with torch.device("meta"):
        plain = UNetPlusPlus(1, 1, norm="none")
        batch = UNetPlusPlus(1, 1)
    # Zhou et al. 2018, Table 1: UNet++ 9.04M parameters (widths 32..512, no norm).
    assert _n_params(plain) == _unetpp_params(1, 1, 32, 4, norm=False) == 9_041_601
    assert _n_params(batch) == _unetpp_params(1, 1, 32, 4, norm=True)
    assert _n_params(UNetPlusPlus(2, 3, base_channels=4, depth=2)) == _unetpp_params(2, 3, 4, 2, norm=True)


def test_unet3plus_param_count_matches_paper():
    with torch.device("meta"):
        paper = UNet3Plus(3, 1, base_channels=64)
    # Huang et al. 2020, Table 1: UNet 3+ 26.97M parameters (widths 64..1024, 64 per branch).
    assert _n_params(paper) == _unet3plus_params(3, 1, 64, 4)
    assert round(_n_params(paper) / 1e6, 2) == 26.97
    assert _n_params(UNet3Plus(1, 2, base_channels=4, depth=2)) == _unet3plus_params(1, 2, 4, 2)


def test_attention_unet_adds_one_gate_per_skip():
    w = [4, 8, 16, 32]
    att, plain = _make("attention_unet", norm="batch"), _make("unet", norm="batch")
    assert len(att.decoder.gates) == 3 and plain.decoder.gates is None
    # per gate (skip width s, gate width 2s, inter s/2): 2x2 W_x, 1x1 W_g + bias, psi + bias, 1x1 W + BN
    gates = sum(4 * s * (s // 2) + 2 * s * (s // 2) + s // 2 + s // 2 + 1 + s * s + 2 * s for s in w[:3])
    assert _n_params(att) - _n_params(plain) == gates


# ----------------------------------------------------------------------------- attention gate
def _bilinear_x2_np(a: np.ndarray) -> np.ndarray:
    """2x bilinear upsampling of the last two axes, half-pixel centres (align_corners=False)."""
    for axis in (-2, -1):
        a = np.moveaxis(a, axis, -1)
        n = a.shape[-1]
        src = np.clip((np.arange(2 * n) + 0.5) / 2 - 0.5, 0, n - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        a = np.moveaxis(a[..., lo] * (1 - (src - lo)) + a[..., hi] * (src - lo), -1, axis)
    return a


def test_attention_gate_matches_numpy_rederivation():
    torch.manual_seed(0)
    gate = AttentionGate(4, 6, norm="none").eval()
    x, g = torch.randn(2, 4, 8, 10), torch.randn(2, 6, 4, 5)
    xn, gn = x.numpy().astype(np.float64), g.numpy().astype(np.float64)
    wt = gate.theta.weight.detach().numpy()  # (2, 4, 2, 2): stride-2 conv = sum over 2x2 blocks
    blocks = xn.reshape(2, 4, 4, 2, 5, 2)
    theta = np.einsum("ocyx,nciyjx->noij", wt, blocks)
    phi = np.einsum("oc,ncij->noij", gate.phi.weight.detach().numpy()[:, :, 0, 0], gn)
    phi += gate.phi.bias.detach().numpy()[None, :, None, None]
    q = np.maximum(theta + phi, 0)
    psi = np.einsum("oc,ncij->noij", gate.psi.weight.detach().numpy()[:, :, 0, 0], q)
    alpha = 1 / (1 + np.exp(-(psi + gate.psi.bias.item())))
    alpha = _bilinear_x2_np(alpha)
    out_conv = gate.out[0]
    expected = np.einsum("oc,ncij->noij", out_conv.weight.detach().numpy()[:, :, 0, 0], xn * alpha)
    expected += out_conv.bias.detach().numpy()[None, :, None, None]
    with torch.no_grad():
        np.testing.assert_allclose(gate.coefficients(x, g).numpy(), alpha, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gate(x, g).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_attention_gate_coefficients_and_other_gate_sizes():
    gate = AttentionGate(4, 8, spatial_dims=3)
    x = torch.randn(2, 4, 6, 8, 10)
    alpha = gate.coefficients(x, torch.randn(2, 8, 2, 3, 7))  # not x/2: interpolated
    assert alpha.shape == (2, 1, 6, 8, 10) and bool(((alpha > 0) & (alpha < 1)).all())
    with pytest.raises(ValueError, match="inter_channels must be a positive int, got 0"):
        AttentionGate(4, 8, inter_channels=0)


# ----------------------------------------------------------------------------- UNet 3+ CGM
@pytest.mark.parametrize("n_cls", [1, 3])
def test_cgm_gates_foreground_in_eval(n_cls):
    net = _make("unet3plus", n_cls=n_cls, cgm=True, norm="group").eval()
    x = torch.randn(2, 1, 20, 24)
    with torch.no_grad():
        net.classifier[1].weight.zero_()
        net.classifier[1].bias.fill_(5.0)  # "organ present": outputs untouched
        present = net(x)
        classifier, net.classifier = net.classifier, None
        ungated = net(x)
        net.classifier = classifier
        net.classifier[1].bias.fill_(-5.0)  # "organ absent": every pixel background
        absent = net(x)
    torch.testing.assert_close(present, ungated)
    if n_cls == 1:
        assert bool((absent < 0).all())
    else:
        assert bool((absent.argmax(1) == 0).all())
        torch.testing.assert_close(absent[:, 0], ungated[:, 0])


def test_cgm_soft_gate_in_training_is_log_sigmoid_of_the_organ_logit():
    net = _make("unet3plus", n_cls=3, cgm=True, norm="group", deep_supervision=True)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        net.classifier[1].weight.zero_()
        net.classifier[1].bias.fill_(0.3)
        gated = net(x)
        net.classifier = None
        ungated = net(x)
    shift = F.logsigmoid(torch.tensor(0.3))
    for a, b in zip(gated, ungated):
        torch.testing.assert_close(a[:, 0], b[:, 0])
        torch.testing.assert_close(a[:, 1:], b[:, 1:] + shift)


# ----------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"deep_supervision": 1}, "deep_supervision must be a bool, got 1"),
        ({"base_channels": 0}, "base_channels must be a positive int, got 0"),
        ({"depth": 0}, "depth must be a positive int"),
        ({"spatial_dims": 1}, r"spatial_dims must be one of \(2, 3\), got 1"),
        ({"norm": "layer"}, "norm must be one of"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"pad_mode": "reflect"}, "pad_mode must be one of"),
    ],
)
def test_bad_args(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _make(name, **kwargs)


def test_bad_net_specific_args_and_input():
    with pytest.raises(ValueError, match="cgm must be a bool, got 'yes'"):
        UNet3Plus(1, 2, cgm="yes")
    with pytest.raises(ValueError, match="upsample must be one of"):
        UNetPlusPlus(1, 2, upsample="bilinear")
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        AttentionUNet(1, 0)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3, \*, \*\), got \(1, 1, 8, 8\)"):
        _make("unetpp", in_ch=3)(torch.randn(1, 1, 8, 8))
