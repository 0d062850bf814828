"""DeepLabv3+ (Chen et al., ECCV 2018) with a ResNet backbone written here, 2D."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medbalance.nets.backbones import RESNET_LAYOUTS, ResNetEncoder
from medbalance.nets.blocks import (
    NORMS,
    PAD_MODES,
    ConvNormAct,
    check_input,
    conv_layer,
    init_kaiming_,
    pad_to_multiple,
    require_choice,
    require_positive_int,
)

__all__ = ["ASPP", "DeepLabV3Plus", "DeepLabV3PlusDecoder"]


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabv3, Chen et al. 2017, section 3.3).

    Parallel branches -- a 1x1 conv, one 3x3 conv per atrous rate and image pooling (global
    average, 1x1 conv, broadcast back) -- are concatenated, projected by a 1x1 conv-norm-ReLU
    and passed through dropout. The image-pooling conv has a bias and no normalisation: on a
    1x1 map instance norm outputs zeros and batch norm fails for a batch of one in training.

    Args:
        in_channels: input channels.
        out_channels: channels of every branch and of the output (256 in the paper).
        rates: dilation of each 3x3 branch ((6, 12, 18) at output stride 16).
        norm: one of :data:`~medbalance.nets.blocks.NORMS`.
        dropout: dropout probability after the projection (0.1 in the reference
            TensorFlow implementation; 0 adds no layer).

    Shape:
        ``(N, in_channels, H, W) -> (N, out_channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        rates: Sequence[int] = (6, 12, 18),
        norm: str = "batch",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList([ConvNormAct(in_channels, out_channels, kernel_size=1, norm=norm)])
        self.branches.extend(ConvNormAct(in_channels, out_channels, dilation=r, norm=norm) for r in rates)
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            conv_layer(in_channels, out_channels, kernel_size=1),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = [ConvNormAct(out_channels * (len(rates) + 2), out_channels, kernel_size=1, norm=norm)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.project = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [branch(x) for branch in self.branches]
        features.append(self.image_pool(x).expand(-1, -1, *x.shape[2:]))
        return self.project(torch.cat(features, dim=1))


class DeepLabV3PlusDecoder(nn.Module):
    """DeepLabv3+ decoder: ASPP on the deepest feature, upsampled and fused with the
    stride-4 low-level feature (reduced by a 1x1 conv), then two 3x3 conv-norm-ReLU units.

    Args:
        high_channels: channels of the deepest encoder feature.
        low_channels: channels of the stride-4 encoder feature.
        out_channels: ASPP and decoder width (256 in the paper).
        low_reduced: channels of the reduced low-level feature (48 in the paper).
        rates: ASPP atrous rates.
        norm: one of :data:`~medbalance.nets.blocks.NORMS`.
        dropout: ASPP dropout.

    Shape:
        ``high``: ``(N, high_channels, h, w)``, ``low``: ``(N, low_channels, H, W)`` ->
        ``(N, out_channels, H, W)``.
    """

    def __init__(
        self,
        high_channels: int,
        low_channels: int,
        out_channels: int,
        *,
        low_reduced: int,
        rates: Sequence[int],
        norm: str = "batch",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.aspp = ASPP(high_channels, out_channels, rates=rates, norm=norm, dropout=dropout)
        self.reduce = ConvNormAct(low_channels, low_reduced, kernel_size=1, norm=norm)
        self.fuse = nn.Sequential(
            ConvNormAct(out_channels + low_reduced, out_channels, norm=norm),
            ConvNormAct(out_channels, out_channels, norm=norm),
        )

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        high = F.interpolate(self.aspp(high), size=low.shape[2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([high, self.reduce(low)], dim=1))


class DeepLabV3Plus(nn.Module):
    """DeepLabv3+: a dilated ResNet encoder, ASPP, low-level fusion at stride 4 and a 4x
    bilinear upsampling of the logits.

    Widths scale with ``base_channels`` (64 in the paper): the backbone as in
    :class:`~medbalance.nets.backbones.ResNetEncoder`, ASPP and decoder ``4 * base_channels``
    (256), the low-level reduction ``3 * base_channels // 4`` (48). The ASPP rates are given
    for output stride 16 and doubled at output stride 8, as in the paper. Any spatial size is
    accepted: the input is padded (``pad_mode``) to a multiple of ``output_stride`` and the
    logits are cropped back. Weights use Kaiming-normal init.

    Reference:
        L.-C. Chen, Y. Zhu, G. Papandreou, F. Schroff, H. Adam, "Encoder-Decoder with Atrous
        Separable Convolution for Semantic Image Segmentation", ECCV 2018. As in the paper's
        ResNet-101 variant the convolutions are regular (not depthwise-separable); the
        backbone is the torchvision-style dilated ResNet rather than a multi-grid one.

    Args:
        in_channels: image channels.
        num_classes: output channels (1 for binary segmentation with a sigmoid, else one
            per class including background).
        base_channels: backbone stem width (64 in the paper; the default 16 is CPU-sized).
        backbone: ``"resnet50"``, ``"resnet101"`` (the paper's), or the lighter
            ``"resnet18"`` / ``"resnet34"``.
        output_stride: 16 or 8 (encoder downsampling before the ASPP).
        aspp_rates: atrous rates of the ASPP 3x3 branches at output stride 16.
        norm: one of :data:`~medbalance.nets.blocks.NORMS`.
        dropout: dropout after the ASPP projection.
        pad_mode: ``"replicate"`` (default) or ``"zeros"`` for the internal padding.

    Shape:
        ``(N, in_channels, H, W) -> (N, num_classes, H, W)`` raw logits.

    Example:
        >>> net = DeepLabV3Plus(1, 3, base_channels=8).eval()
        >>> net(torch.randn(2, 1, 37, 53)).shape
        torch.Size([2, 3, 37, 53])
    """

    prefers_channels_last = True  # as SegmentationNet.prefers_channels_last, measured alike

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        base_channels: int = 16,
        backbone: str = "resnet50",
        output_stride: int = 16,
        aspp_rates: Sequence[int] = (6, 12, 18),
        norm: str = "batch",
        dropout: float = 0.1,
        pad_mode: str = "replicate",
    ) -> None:
        super().__init__()
        self.in_channels = require_positive_int("in_channels", in_channels)
        self.num_classes = require_positive_int("num_classes", num_classes)
        require_positive_int("base_channels", base_channels)
        require_choice("backbone", backbone, tuple(RESNET_LAYOUTS))
        self.output_stride = require_choice("output_stride", output_stride, (8, 16))
        aspp_rates = tuple(aspp_rates)
        if not aspp_rates:
            raise ValueError("aspp_rates must list at least one rate, got ()")
        for i, rate in enumerate(aspp_rates):
            require_positive_int(f"aspp_rates[{i}]", rate)
        require_choice("norm", norm, NORMS)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.pad_mode = require_choice("pad_mode", pad_mode, PAD_MODES)

        self.encoder = ResNetEncoder(
            in_channels, layout=backbone, base_channels=base_channels, output_stride=output_stride, norm=norm
        )
        width = 4 * base_channels
        self.decoder = DeepLabV3PlusDecoder(
            self.encoder.out_channels[-1],
            self.encoder.out_channels[1],
            width,
            low_reduced=max(1, 3 * base_channels // 4),
            rates=tuple(r * 16 // output_stride for r in aspp_rates),
            norm=norm,
            dropout=dropout,
        )
        self.head = conv_layer(width, num_classes, kernel_size=1)
        init_kaiming_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels)
        x, crop = pad_to_multiple(x, self.output_stride, mode=self.pad_mode)
        features = self.encoder(x)
        logits = self.head(self.decoder(features[-1], features[1]))
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)[crop]
