"""Large selective kernel (LSK) module (Li et al., ICCV 2023), the attention of LSKBB (seed 001)."""

from __future__ import annotations

import torch
from torch import nn

from medbalance.nets.blocks import check_input, require_positive_int

__all__ = ["LSKModule"]


class LSKModule(nn.Module):
    """Large selective kernel attention: ``Y = X * Q`` (SPEC section 6, seed 001 eq. 3-10).

    A large receptive field is decomposed into two depth-wise convolutions, ``U1 = DW5x5(X)``
    and ``U2 = DW7x7_dilation3(U1)`` (receptive field 23). Each is reduced to ``D / 2``
    channels by a 1x1 conv (``Ū1``, ``Ū2``). A spatial selection map per kernel comes from the
    channel-wise mean and max of ``[Ū1; Ū2]``: ``A = sigmoid(Conv7x7([mean; max]) -> 2 maps)``.
    The selected features ``A1 * Ū1 + A2 * Ū2`` are mapped back to ``D`` channels by a 1x1
    conv into the attention ``Q``, and the output is ``X * Q``: same shape as the input, every
    position re-weighted by its context.

    Reference:
        Y. Li, Q. Hou, Z. Zheng, M.-M. Cheng, J. Yang, X. Li, "Large Selective Kernel Network
        for Remote Sensing Object Detection", ICCV 2023 (the ``LSKblock`` of its code);
        Sun, Zhao, Guo, Computer Science 52(4), 2025, section 2.1.

    **Decision**: the module starts as the identity (``Q = 1``: the last 1x1 conv has zero
    weights and unit bias, :meth:`reset_parameters`). LSKNet damps its attention branch at
    the start with a 0.01 layer scale; seed 001 puts the bare module into a basic block, where
    a random ``Q`` multiplies the residual by sign noise and slows early training (measured on
    the long-tail phantoms: ``docs/results/longtail.md``). Call :meth:`reset_parameters`
    again after a network-wide re-initialisation.

    Args:
        channels: ``D``, channels of the input and output (the branches use ``max(1, D // 2)``).

    Shape:
        ``(N, D, H, W) -> (N, D, H, W)``.

    Example:
        >>> lsk = LSKModule(16)
        >>> x = torch.randn(2, 16, 8, 8)
        >>> lsk(x).shape, bool(torch.equal(lsk(x), x))  # the identity until trained
        (torch.Size([2, 16, 8, 8]), True)
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = require_positive_int("channels", channels)
        hidden = max(1, channels // 2)
        self.conv_small = nn.Conv2d(channels, channels, 5, padding=2, groups=channels)
        self.conv_large = nn.Conv2d(channels, channels, 7, padding=9, dilation=3, groups=channels)
        self.reduce_small = nn.Conv2d(channels, hidden, 1)
        self.reduce_large = nn.Conv2d(channels, hidden, 1)
        self.select = nn.Conv2d(2, 2, 7, padding=3)
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convolutions (``fan_out``), zero biases, and ``Q = 1``: the identity."""
        for conv in (self.conv_small, self.conv_large, self.reduce_small, self.reduce_large, self.select):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.expand.weight)
        nn.init.ones_(self.expand.bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map ``Q`` ``(N, D, H, W)`` that :meth:`forward` multiplies ``x`` with."""
        check_input(x, self.channels)
        u1 = self.conv_small(x)
        u2 = self.conv_large(u1)
        u1, u2 = self.reduce_small(u1), self.reduce_large(u2)
        both = torch.cat([u1, u2], dim=1)
        pooled = torch.cat([both.mean(dim=1, keepdim=True), both.amax(dim=1, keepdim=True)], dim=1)
        a = torch.sigmoid(self.select(pooled))
        return self.expand(u1 * a[:, :1] + u2 * a[:, 1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)
