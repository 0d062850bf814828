"""CIFAR-layout ResNet-32 (He et al. 2016), the backbone of LDAM-DRW, BBN and LSKBB."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medbalance.nets.blocks import BasicBlock, ConvNormAct, init_kaiming_, require_positive_int

__all__ = ["ResNet32"]


class ResNet32(nn.Module):
    """ResNet for small images in the CIFAR layout: a 3x3 stem conv to ``widths[0]``,
    ``len(widths)`` stages of ``blocks_per_stage`` basic blocks (stride 2 at the first
    block of every stage but the first), global average pooling and a linear classifier.

    With the defaults this is ResNet-32 (6 * 5 + 2 weighted layers; 466,906 parameters for
    10 classes: the 464,154 of the published "0.46M" network plus 2,752 for the 1x1
    conv-BN projection shortcuts used here instead of zero-padding, see
    :class:`~medbalance.nets.blocks.BasicBlock`).

    The trunk and the head are separate so that two-branch methods (BBN, LSKBB) and
    classifier re-training (DRW, MiSLAS) can reuse them: :meth:`forward_features` returns
    the pooled features and :attr:`classifier` is the final ``nn.Linear``.

    Reference:
        K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition",
        CVPR 2016, section 4.2; layout as in the LDAM-DRW (Cao et al. 2019) and BBN
        (Zhou et al. 2020) code.

    Args:
        in_channels: image channels.
        num_classes: number of classes (logits per image).
        widths: channels per stage.
        blocks_per_stage: basic blocks per stage (``n`` of the paper; depth ``6n + 2``).

    Attributes:
        feature_dim: size of the pooled feature vector, ``widths[-1]``.
        classifier: the ``nn.Linear(feature_dim, num_classes)`` head.

    Shape:
        ``(N, in_channels, H, W) -> (N, num_classes)`` logits.

    Example:
        >>> net = ResNet32(3, 10).eval()
        >>> x = torch.randn(2, 3, 32, 32)
        >>> net(x).shape, net.forward_features(x).shape
        (torch.Size([2, 10]), torch.Size([2, 64]))
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        *,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 5,
    ) -> None:
        super().__init__()
        self.in_channels = require_positive_int("in_channels", in_channels)
        self.num_classes = require_positive_int("num_classes", num_classes)
        require_positive_int("blocks_per_stage", blocks_per_stage)
        widths = tuple(widths)
        if not widths:
            raise ValueError("widths must list at least one stage width, got ()")
        for i, width in enumerate(widths):
            require_positive_int(f"widths[{i}]", width)

        self.stem = ConvNormAct(in_channels, widths[0])
        stages = []
        c_in = widths[0]
        for i, c_out in enumerate(widths):
            blocks = [BasicBlock(c_in, c_out, stride=1 if i == 0 else 2)]
            blocks += [BasicBlock(c_out, c_out) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[-1]
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        init_kaiming_(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled trunk features, ``(N, in_channels, H, W) -> (N, feature_dim)``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.pool(self.stages(self.stem(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))
