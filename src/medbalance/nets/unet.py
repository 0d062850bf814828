"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015), 2D and 3D."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medbalance.nets.blocks import (
    NORMS,
    PAD_MODES,
    UPSAMPLE_MODES,
    UNetEncoder,
    Up,
    conv_layer,
    init_kaiming_,
    pad_to_multiple,
    require_choice,
    require_positive_int,
)

__all__ = ["UNet", "UNetDecoder"]


class UNetDecoder(nn.Module):
    """U-Net expanding path: one :class:`~medbalance.nets.blocks.Up` per skip.

    Args:
        widths: encoder widths, finest first (as :class:`~medbalance.nets.blocks.UNetEncoder`).
        spatial_dims: 2 or 3.
        norm: normalisation name.
        dropout: dropout of every double conv.
        upsample: upsampling mode of :class:`~medbalance.nets.blocks.Up`.

    Shape:
        encoder features (finest first) -> ``(N, widths[0], *s)``.
    """

    def __init__(
        self,
        widths: Sequence[int],
        *,
        spatial_dims: int = 2,
        norm: str = "batch",
        dropout: float = 0.0,
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        coarse_to_fine = tuple(reversed(widths))
        self.ups = nn.ModuleList(
            Up(
                c_in,
                c_skip,
                c_skip,
                spatial_dims=spatial_dims,
                norm=norm,
                dropout=dropout,
                upsample=upsample,
            )
            for c_in, c_skip in zip(coarse_to_fine[:-1], coarse_to_fine[1:])
        )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x, *skips = reversed(features)
        for up, skip in zip(self.ups, skips):
            x = up(x, skip)
        return x


class UNet(nn.Module):
    """Classic U-Net: ``depth`` max-pool downsamplings and ``depth`` upsamplings with skip
    concatenation, each level a double 3x3 conv-norm-ReLU, widths ``base_channels * 2**i``.

    Any spatial size is accepted: the input is padded (``pad_mode``, split evenly before /
    after) to a multiple of ``2**depth`` and the logits are cropped back, so the output
    always has the input's spatial size. In training mode the padded border takes part in
    the BatchNorm statistics; sizes that are already multiples avoid padding entirely.
    Convolutions followed by a norm have no bias; weights use Kaiming-normal init.

    Reference:
        O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical
        Image Segmentation", MICCAI 2015. Differences from the paper, shared with common
        implementations (MONAI ``BasicUNet``, nnU-Net): "same" padding instead of valid
        convolutions, and a normalisation after every convolution.

    Args:
        in_channels: image channels.
        num_classes: output channels (1 for binary segmentation with a sigmoid, else one
            per class including background, for a softmax).
        base_channels: width of the first level (64 in the paper).
        depth: number of downsamplings (4 in the paper).
        spatial_dims: 2 (``(N, C, H, W)``) or 3 (``(N, C, D, H, W)``).
        norm: ``"batch"``, ``"instance"``, ``"group"`` or ``"none"`` (see
            :func:`~medbalance.nets.blocks.norm_layer`).
        dropout: element-wise dropout after every double conv (0 disables it).
        upsample: ``"transpose"`` (2x2 transposed conv, as the paper), ``"linear"`` or
            ``"nearest"`` (interpolation followed by a 1x1 conv).
        pad_mode: ``"replicate"`` (default) or ``"zeros"`` for the internal padding.

    Shape:
        ``(N, in_channels, *spatial) -> (N, num_classes, *spatial)`` raw logits.

    Example:
        >>> net = UNet(1, 3, base_channels=8).eval()
        >>> net(torch.randn(2, 1, 37, 53)).shape
        torch.Size([2, 3, 37, 53])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        base_channels: int = 64,
        depth: int = 4,
        spatial_dims: int = 2,
        norm: str = "batch",
        dropout: float = 0.0,
        upsample: str = "transpose",
        pad_mode: str = "replicate",
    ) -> None:
        super().__init__()
        self.in_channels = require_positive_int("in_channels", in_channels)
        self.num_classes = require_positive_int("num_classes", num_classes)
        require_positive_int("base_channels", base_channels)
        self.depth = require_positive_int("depth", depth)
        self.spatial_dims = require_choice("spatial_dims", spatial_dims, (2, 3))
        require_choice("norm", norm, NORMS)
        require_choice("upsample", upsample, UPSAMPLE_MODES)
        self.pad_mode = require_choice("pad_mode", pad_mode, PAD_MODES)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")

        widths = [base_channels * 2**i for i in range(depth + 1)]
        kwargs = {"spatial_dims": spatial_dims, "norm": norm, "dropout": dropout}
        self.encoder = UNetEncoder(in_channels, widths, **kwargs)
        self.decoder = UNetDecoder(widths, upsample=upsample, **kwargs)
        self.head = conv_layer(widths[0], num_classes, spatial_dims=spatial_dims, kernel_size=1)
        init_kaiming_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            expected = ", ".join(["N", str(self.in_channels)] + ["*"] * self.spatial_dims)
            raise ValueError(f"x must have shape ({expected}), got {tuple(x.shape)}")
        x, crop = pad_to_multiple(x, 2**self.depth, mode=self.pad_mode)
        return self.head(self.decoder(self.encoder(x)))[crop]
