"""ResNet encoders (He et al. 2016) for segmentation networks, written here (no torchvision).

:class:`ResNetEncoder` builds the ImageNet layouts -- ResNet-18/34 from
:class:`~medbalance.nets.blocks.BasicBlock`, ResNet-50/101 from :class:`Bottleneck` -- with the
width scaled by ``base_channels`` (64 in the paper) and, for DeepLab-style networks, the last
strides replaced by dilation to reach an output stride of 16 or 8. It returns the features of
every scale, finest first, for the decoders of :mod:`medbalance.nets.deeplab` and
:mod:`medbalance.nets.cenet`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from medbalance.nets.blocks import (
    NORMS,
    BasicBlock,
    ConvNormAct,
    check_input,
    init_kaiming_,
    require_choice,
    require_positive_int,
)

__all__ = ["OUTPUT_STRIDES", "RESNET_LAYOUTS", "STEMS", "Bottleneck", "ResNetEncoder"]

#: Block type and blocks per stage of each layout (He et al. 2016, Table 1).
RESNET_LAYOUTS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}

#: Accepted ``output_stride`` values of :class:`ResNetEncoder`.
OUTPUT_STRIDES = (8, 16, 32)
#: Stems of :class:`ResNetEncoder`: ImageNet's 7x7 stride-2 conv + max-pool, or a 3x3 stride-1 conv
#: without pooling for small images (the CIFAR / MedMNIST v2 ResNet-18 on 28 px inputs).
STEMS = ("imagenet", "small")


class Bottleneck(nn.Module):
    """ResNet bottleneck block: 1x1 reduce, 3x3 (strided, dilated), 1x1 expand, plus a shortcut.

    The stride sits on the 3x3 convolution ("ResNet v1.5", as torchvision and MONAI); the
    shortcut is a 1x1 conv + norm when the stride or the width changes, else the identity.

    Reference:
        K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition",
        CVPR 2016, Fig. 5 (right).

    Args:
        in_channels: input channels.
        out_channels: output channels; the inner width is ``out_channels // expansion``.
        stride: stride of the 3x3 convolution (and of the shortcut).
        dilation: dilation of the 3x3 convolution.
        spatial_dims: 2 or 3.
        norm: one of :data:`~medbalance.nets.blocks.NORMS`.

    Shape:
        ``(N, in_channels, *s) -> (N, out_channels, *s / stride)``.

    Example:
        >>> Bottleneck(64, 256, stride=2)(torch.randn(1, 64, 8, 8)).shape
        torch.Size([1, 256, 4, 4])
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        spatial_dims: int = 2,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if out_channels % self.expansion:
            raise ValueError(f"out_channels must be a multiple of {self.expansion}, got {out_channels}")
        width = out_channels // self.expansion
        kwargs = {"spatial_dims": spatial_dims, "norm": norm}
        self.conv1 = ConvNormAct(in_channels, width, kernel_size=1, **kwargs)
        self.conv2 = ConvNormAct(width, width, stride=stride, dilation=dilation, **kwargs)
        self.conv3 = ConvNormAct(width, out_channels, kernel_size=1, act=False, **kwargs)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = ConvNormAct(
                in_channels, out_channels, kernel_size=1, stride=stride, act=False, **kwargs
            )
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


_BLOCKS: dict[str, tuple[Callable[..., nn.Module], int]] = {
    "basic": (BasicBlock, BasicBlock.expansion),
    "bottleneck": (Bottleneck, Bottleneck.expansion),
}


class ResNetEncoder(nn.Module):
    """ImageNet-layout ResNet trunk returning the features of every scale (2D).

    Stem: 7x7 conv with stride 2, norm, ReLU, then a 3x3 max-pool with stride 2 (``stem="small"``:
    a 3x3 conv with stride 1 and no max-pool, so a 28 px image reaches the last stage at 4 px). Four stages
    of ``layout`` blocks with widths ``base_channels * 2**i * expansion`` (``expansion`` 1 for
    basic blocks, 4 for bottlenecks); every stage but the first halves the size. For
    ``output_stride`` 16 (8) the stride of the last stage (last two stages) is replaced by a
    dilation of 2 (2 and 4); as in torchvision, the first block of a dilated stage keeps the
    previous stage's dilation. With ``in_channels=3`` and ``base_channels=64`` the parameters
    are exactly those of torchvision's ``resnet18/34/50/101`` without the classifier.

    Reference:
        K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition",
        CVPR 2016 (layouts of Table 1); dilation as in L.-C. Chen et al., "Rethinking Atrous
        Convolution for Semantic Image Segmentation", arXiv:1706.05587, 2017.

    Args:
        in_channels: image channels.
        layout: ``"resnet18"``, ``"resnet34"``, ``"resnet50"`` or ``"resnet101"``
            (see :data:`RESNET_LAYOUTS`).
        base_channels: stem width (64 in the paper).
        output_stride: 32 (no dilation), 16 or 8.
        norm: one of :data:`~medbalance.nets.blocks.NORMS`.
        stem: one of :data:`STEMS`.

    Attributes:
        out_channels: channels of each returned feature.
        reductions: downsampling factor of each returned feature w.r.t. the input.

    Shape:
        ``(N, in_channels, H, W)`` -> five features ``(N, out_channels[i], H / reductions[i],
        W / reductions[i])``: the stem output (before the max-pool) and the four stages.
        Sides divisible by ``min(output_stride, 32)`` give exact sizes.

    Example:
        >>> enc = ResNetEncoder(1, layout="resnet50", base_channels=8, output_stride=16)
        >>> [tuple(f.shape[1:]) for f in enc(torch.randn(1, 1, 64, 64))]
        [(8, 32, 32), (32, 16, 16), (64, 8, 8), (128, 4, 4), (256, 4, 4)]
        >>> enc.reductions
        (2, 4, 8, 16, 16)
    """

    def __init__(
        self,
        in_channels: int,
        *,
        layout: str = "resnet34",
        base_channels: int = 64,
        output_stride: int = 32,
        norm: str = "batch",
        stem: str = "imagenet",
    ) -> None:
        super().__init__()
        self.in_channels = require_positive_int("in_channels", in_channels)
        require_choice("layout", layout, tuple(RESNET_LAYOUTS))
        require_choice("stem", stem, STEMS)
        require_positive_int("base_channels", base_channels)
        require_choice("output_stride", output_stride, OUTPUT_STRIDES)
        require_choice("norm", norm, NORMS)

        kind, blocks_per_stage = RESNET_LAYOUTS[layout]
        make_block, expansion = _BLOCKS[kind]
        small = stem == "small"
        kernel, stride = (3, 1) if small else (7, 2)
        self.stem = ConvNormAct(in_channels, base_channels, kernel_size=kernel, stride=stride, norm=norm)
        self.pool = nn.Identity() if small else nn.MaxPool2d(3, stride=2, padding=1)

        stages = []
        c_in, reduction, dilation = base_channels, 1 if small else 4, 1
        out_channels, reductions = [base_channels], [1 if small else 2]
        for i, n_blocks in enumerate(blocks_per_stage):
            c_out = base_channels * 2**i * expansion
            stride = 1 if i == 0 else 2
            first_dilation = dilation
            if stride == 2 and reduction >= output_stride:
                stride, dilation = 1, dilation * 2
            reduction *= stride
            blocks = [make_block(c_in, c_out, stride=stride, dilation=first_dilation, spatial_dims=2, norm=norm)]
            blocks += [
                make_block(c_out, c_out, stride=1, dilation=dilation, spatial_dims=2, norm=norm)
                for _ in range(n_blocks - 1)
            ]
            stages.append(nn.Sequential(*blocks))
            out_channels.append(c_out)
            reductions.append(reduction)
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(out_channels)
        self.reductions = tuple(reductions)
        init_kaiming_(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_input(x, self.in_channels)
        features = [self.stem(x)]
        x = self.pool(features[0])
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
