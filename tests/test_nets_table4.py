"""Seed 001 table 4 backbones: VGG16, ResNet-18, ResNet-32 + SimAM, ResNet-32 + BiFormer (issue 19)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from medbalance.nets import (
    BBN,
    CLASSIFICATION_NETS,
    NETS,
    VGG16,
    BiLevelRoutingAttention,
    ResNet18,
    ResNet32,
    ResNet32BiFormer,
    ResNet32SimAM,
    SimAM,
    build_net,
)
from medbalance.nets.resnet import AttentionBasicBlock

TINY = {
    "vgg16": {"base_channels": 4},
    "resnet18": {"base_channels": 4},
    "resnet32_simam": {"widths": (4, 8), "blocks_per_stage": 1},
    "resnet32_biformer": {"widths": (16, 16), "blocks_per_stage": 1},
}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: a second thread only adds synchronisation


def test_registered_as_classifiers():
    for name, cls in [
        ("vgg16", VGG16),
        ("resnet18", ResNet18),
        ("resnet32_simam", ResNet32SimAM),
        ("resnet32_biformer", ResNet32BiFormer),
    ]:
        assert NETS[name] is cls and name in CLASSIFICATION_NETS
        assert isinstance(build_net(name, in_channels=1, num_classes=3, **TINY[name]), cls)


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("hw", [(32, 32), (13, 27), (1, 5)])
def test_shapes_at_any_size(name, hw):
    torch.manual_seed(0)
    net = NETS[name](in_channels=2, num_classes=5, **TINY[name]).eval()
    assert net(torch.randn(3, 2, *hw)).shape == (3, 5)
    assert net.forward_features(torch.randn(1, 2, *hw)).shape == (1, net.feature_dim)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 2, H, W\)"):
        net(torch.randn(3, 1, *hw))


# ----------------------------------------------------------------------------- parameter counts vs the papers
def _vgg16_bn_count(c_in: int, classes: int, *, imagenet: bool, conv_bias: bool) -> int:
    """Configuration D of Simonyan and Zisserman: 3x3 convolutions with BatchNorm, then the head."""
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    total, previous = 0, c_in
    for w in widths:
        total += 9 * previous * w + (w if conv_bias else 0) + 2 * w
        previous = w
    if imagenet:
        return total + (512 * 49 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * classes
    return total + (512 + 1) * classes


def test_vgg16_parameter_counts():
    # torchvision's vgg16_bn: 138,365,992 (the paper's 138M); ours drops the 4,224 conv biases
    assert _vgg16_bn_count(3, 1000, imagenet=True, conv_bias=True) == 138_365_992
    assert _count(VGG16(3, 1000, head="imagenet")) == _vgg16_bn_count(3, 1000, imagenet=True, conv_bias=False)
    assert _count(VGG16(3, 1000, head="imagenet")) == 138_365_992 - 4_224
    assert _count(VGG16(3, 10)) == _vgg16_bn_count(3, 10, imagenet=False, conv_bias=False)


def test_resnet18_parameter_count():
    # He et al. 2016: 11.7M with the 1000-class layer (torchvision resnet18: 11,689,512), 11.2M trunk
    net = ResNet18(3, 1000)
    assert _count(net) == 11_689_512 and _count(net.encoder) == 11_176_512
    assert net.feature_dim == 512


def test_resnet32_attention_parameter_counts():
    plain = _count(ResNet32(3, 10))
    assert _count(ResNet32SimAM(3, 10)) == plain  # SimAM is parameter-free
    # one BRA per block: LayerNorm 2C, qkv 3C^2 + 3C, LCE 25C + C, projection C^2 + C
    extra = sum(5 * (4 * c * c + 32 * c) for c in (16, 32, 64))
    assert _count(ResNet32BiFormer(3, 10)) == plain + extra
    assert all(isinstance(b, AttentionBasicBlock) for s in ResNet32SimAM(3, 10).stages for b in s)


def test_bbn_takes_the_attention_backbones():
    net = BBN(1, 3, widths=(16, 16), blocks_per_stage=2, attention="biformer")
    assert isinstance(net.conventional[0].attention, BiLevelRoutingAttention)
    z_c, z_r = net(torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8))
    assert z_c.shape == z_r.shape == (2, 3)
    with pytest.raises(ValueError, match="give lsk_position or attention, not both"):
        BBN(1, 3, widths=(8, 16), lsk_position="residual", attention="simam")


# ----------------------------------------------------------------------------- SimAM
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), h=st.integers(1, 6), w=st.integers(1, 6))
def test_simam_matches_numpy(seed, h, w):
    x = np.random.default_rng(seed).normal(size=(2, 3, h, w)) * 2
    n = h * w - 1
    d = (x - x.mean(axis=(2, 3), keepdims=True)) ** 2
    v = d.sum(axis=(2, 3), keepdims=True) / max(n, 1)
    expected = x / (1 + np.exp(-(d / (4 * (v + 1e-4)) + 0.5)))
    np.testing.assert_allclose(SimAM()(torch.from_numpy(x)).numpy(), expected, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- bi-level routing attention
def _bra_reference(bra: BiLevelRoutingAttention, x: torch.Tensor) -> torch.Tensor:
    """BRA written token by token: route every region to its top-k regions, attend per head."""
    n, c, h, w = x.shape
    s, k, heads = bra.regions, bra.topk, bra.heads
    rh, rw = h // s, w // s
    tokens = bra.norm(x.permute(0, 2, 3, 1))
    q, key, v = bra.qkv(tokens).chunk(3, dim=-1)  # (N, H, W, C)
    region_of = [[(i // rh) * s + (j // rw) for j in range(w)] for i in range(h)]
    members = [[(i, j) for i in range(h) for j in range(w) if region_of[i][j] == r] for r in range(s * s)]
    out = torch.zeros(n, h, w, c, dtype=x.dtype)
    d = c // heads
    for b in range(n):
        q_r = torch.stack([torch.stack([q[b, i, j] for i, j in m]).mean(0) for m in members])
        k_r = torch.stack([torch.stack([key[b, i, j] for i, j in m]).mean(0) for m in members])
        routed = (q_r @ k_r.T).topk(k, dim=-1).indices
        for r, m in enumerate(members):
            pool = [pos for other in routed[r].tolist() for pos in members[other]]
            keys = torch.stack([key[b, i, j] for i, j in pool])
            values = torch.stack([v[b, i, j] for i, j in pool])
            for i, j in m:
                for hd in range(heads):
                    sl = slice(hd * d, (hd + 1) * d)
                    weights = torch.softmax(q[b, i, j, sl] @ keys[:, sl].T / math.sqrt(d), dim=0)
                    out[b, i, j, sl] = weights @ values[:, sl]
    lce = bra.lce(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return x + bra.proj(out + lce).permute(0, 3, 1, 2)


@pytest.mark.parametrize(("regions", "topk", "head_dim"), [(2, 1, 4), (2, 3, 8), (3, 4, 16)])
def test_bra_matches_token_by_token_reference(regions, topk, head_dim):
    torch.manual_seed(regions + topk)
    bra = BiLevelRoutingAttention(16, regions=regions, topk=topk, head_dim=head_dim).double()
    x = torch.randn(2, 16, 2 * regions, 3 * regions, dtype=torch.float64)
    torch.testing.assert_close(bra(x), _bra_reference(bra, x))


def test_bra_with_every_region_routed_is_global_attention():
    torch.manual_seed(1)
    bra = BiLevelRoutingAttention(8, regions=2, topk=4, head_dim=8).double()
    x = torch.randn(1, 8, 4, 6, dtype=torch.float64)
    tokens = bra.norm(x.permute(0, 2, 3, 1)).reshape(1, -1, 8)
    q, k, v = bra.qkv(tokens).chunk(3, dim=-1)
    attended = F.scaled_dot_product_attention(q, k, v)  # all 24 tokens see all 24
    lce = bra.lce(v.reshape(1, 4, 6, 8).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(1, -1, 8)
    expected = x + bra.proj(attended + lce).reshape(1, 4, 6, 8).permute(0, 3, 1, 2)
    torch.testing.assert_close(bra(x), expected)


def test_bra_pads_sizes_that_do_not_divide():
    bra = BiLevelRoutingAttention(16, regions=4, topk=2)
    x = torch.randn(2, 16, 7, 10, requires_grad=True)
    y = bra(x)
    y.sum().backward()
    assert y.shape == x.shape and torch.isfinite(x.grad).all()


def test_bra_argument_errors():
    with pytest.raises(ValueError, match=r"topk must be at most regions\*\*2 = 4, got 5"):
        BiLevelRoutingAttention(16, regions=2, topk=5)
    with pytest.raises(ValueError, match="channels must be a multiple of heads=2, got 33"):
        BiLevelRoutingAttention(33, head_dim=16)
    with pytest.raises(ValueError, match="lam must be a positive number, got 0"):
        SimAM(lam=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TINY))
def test_onnx_export_matches_torch(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from medbalance.export import export_model

    torch.manual_seed(0)
    net = NETS[name](in_channels=1, num_classes=3, **TINY[name]).eval()
    path = export_model(net, tmp_path / "m.onnx", format="onnx", in_channels=1)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 1, 32, 32), (3, 1, 37, 29)]:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
        with torch.inference_mode():
            expected = net(x).numpy()
        np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], expected, atol=1e-4, rtol=0)
