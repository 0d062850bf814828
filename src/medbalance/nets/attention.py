"""Attention modules of seed 001's table 4 backbones: SimAM (Yang et al., ICML 2021) and the
bi-level routing attention of BiFormer (Zhu et al., CVPR 2023), written here (no timm)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medbalance.nets.blocks import check_input, require_positive_int

__all__ = ["BiLevelRoutingAttention", "SimAM"]


class SimAM(nn.Module):
    """Parameter-free attention: ``Y = X * sigmoid(1 / e*)`` with the minimal energy ``e*`` of each neuron.

    Per channel and image, with ``n = H W - 1``, ``mu`` the mean and ``s^2 = sum (x - mu)^2 / n``
    the variance over the positions, ``1 / e* = (x - mu)^2 / (4 (s^2 + lambda)) + 1/2``: a
    neuron that stands out from its channel gets a weight near 1.

    Reference:
        L. Yang, R.-Y. Zhang, L. Li, X. Xie, "SimAM: A Simple, Parameter-Free Attention Module
        for Convolutional Neural Networks", ICML 2021, eq. 5 and its code.

    Args:
        lam: ``lambda`` of the energy, ``> 0`` (the paper's 1e-4).

    Shape:
        ``(N, C, H, W) -> (N, C, H, W)``.

    Example:
        >>> x = torch.randn(2, 4, 5, 5)
        >>> SimAM()(x).shape, sum(p.numel() for p in SimAM().parameters())
        (torch.Size([2, 4, 5, 5]), 0)
    """

    def __init__(self, lam: float = 1e-4) -> None:
        super().__init__()
        if not isinstance(lam, (int, float)) or isinstance(lam, bool) or not lam > 0:
            raise ValueError(f"lam must be a positive number, got {lam!r}")
        self.lam = float(lam)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
        n = x.shape[2] * x.shape[3] - 1
        d = (x - x.mean(dim=(2, 3), keepdim=True)).square()
        # max(n, 1): a 1x1 map has no spread; its energy term is 0 and the weight sigmoid(1/2)
        inverse_energy = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / max(n, 1) + self.lam)) + 0.5
        return x * torch.sigmoid(inverse_energy)

    def extra_repr(self) -> str:
        return f"lam={self.lam}"


class BiLevelRoutingAttention(nn.Module):
    """Bi-level routing attention (BRA), the token mixer of BiFormer, with a residual connection.

    The map is padded to a multiple of ``regions`` and split into ``S x S`` regions (``S =
    regions``). Queries, keys and values come from one linear projection of every token.
    *Region level*: the mean query and key of each region give a region affinity ``A = Q_r
    K_r^T`` (``S^2 x S^2``); each region keeps the indices of its ``topk`` most related
    regions. *Token level*: every query attends (softmax, scale ``d^-1/2``, ``heads`` heads)
    to the keys and values gathered from its region's ``topk`` routed regions. A local
    context enhancement (a depth-wise 5x5 conv of the values, LCE) is added, then an output
    projection. :meth:`forward` returns ``X + BRA(LN(X))`` (BiFormer's pre-norm residual).

    Reference:
        L. Zhu, X. Wang, Z. Ke, W. Zhang, R. Lau, "BiFormer: Vision Transformer with Bi-Level
        Routing Attention", CVPR 2023, section 3.2 (eq. 1-5) and its ``BiLevelRoutingAttention``.

    Args:
        channels: ``C`` of the input and output.
        regions: ``S``, regions per side (BiFormer: 7 at 224 px; 4 suits 32 px CIFAR maps).
        topk: routed regions per region, ``1 <= topk <= S^2``.
        head_dim: channels per head (``heads = max(1, C // head_dim)``; ``C`` must divide).

    Shape:
        ``(N, C, H, W) -> (N, C, H, W)``, any ``H, W``.

    Example:
        >>> bra = BiLevelRoutingAttention(16, regions=2, topk=2)
        >>> bra(torch.randn(2, 16, 7, 9)).shape
        torch.Size([2, 16, 7, 9])
    """

    def __init__(self, channels: int, *, regions: int = 4, topk: int = 4, head_dim: int = 16) -> None:
        super().__init__()
        self.channels = require_positive_int("channels", channels)
        self.regions = require_positive_int("regions", regions)
        self.topk = require_positive_int("topk", topk)
        if topk > regions * regions:
            raise ValueError(f"topk must be at most regions**2 = {regions * regions}, got {topk}")
        self.heads = max(1, channels // require_positive_int("head_dim", head_dim))
        if channels % self.heads:
            raise ValueError(f"channels must be a multiple of heads={self.heads}, got {channels}")
        self.scale = (channels // self.heads) ** -0.5
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.lce = nn.Conv2d(channels, channels, 5, padding=2, groups=channels)
        self.proj = nn.Linear(channels, channels)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``BRA(LN(x))`` without the residual, ``(N, C, H, W)``."""
        check_input(x, self.channels)
        n, c, h, w = x.shape
        s, heads = self.regions, self.heads
        pad_h, pad_w = (-h) % s, (-w) % s
        hp, wp = h + pad_h, w + pad_w
        rh, rw = hp // s, wp // s  # region side in tokens
        # normalised, then zero-padded at the bottom and right (as the BiFormer code): (N, Hp, Wp, C)
        tokens = F.pad(self.norm(x.permute(0, 2, 3, 1)), (0, 0, 0, pad_w, 0, pad_h))
        # (N, S*S regions, rh*rw tokens, C)
        tokens = tokens.reshape(n, s, rh, s, rw, c).permute(0, 1, 3, 2, 4, 5).reshape(n, s * s, rh * rw, c)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        # region-level routing: the topk regions most related to each region (no gradient through the indices)
        affinity = q.mean(dim=2) @ k.mean(dim=2).transpose(1, 2)  # (N, S^2, S^2)
        index = affinity.topk(self.topk, dim=-1).indices  # (N, S^2, topk)
        gather = index.reshape(n, s * s * self.topk)[:, :, None, None].expand(-1, -1, rh * rw, c)
        k_g = torch.gather(k, 1, gather).reshape(n, s * s, self.topk * rh * rw, c)
        v_g = torch.gather(v, 1, gather).reshape(n, s * s, self.topk * rh * rw, c)

        def split(t: torch.Tensor) -> torch.Tensor:  # (N, S^2, T, C) -> (N, S^2, heads, T, C / heads)
            return t.reshape(*t.shape[:3], heads, c // heads).transpose(2, 3)

        weights = torch.softmax((split(q) * self.scale) @ split(k_g).transpose(-1, -2), dim=-1)
        out = (weights @ split(v_g)).transpose(2, 3).reshape(n, s * s, rh * rw, c)
        out = out.reshape(n, s, s, rh, rw, c).permute(0, 1, 3, 2, 4, 5).reshape(n, hp, wp, c)
        # local context enhancement on the values, in the image layout
        v_map = v.reshape(n, s, s, rh, rw, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, hp, wp)
        out = self.proj(out + self.lce(v_map).permute(0, 2, 3, 1))
        return out.permute(0, 3, 1, 2)[:, :, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention(x)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, regions={self.regions}, topk={self.topk}, heads={self.heads}"
