"""Reusable building blocks for the medbalance networks.

Everything here is dimension-generic (``spatial_dims`` 2 or 3) unless said otherwise, so
that U-Net, U-Net++, U-Net3+, Attention U-Net and the ResNet-style encoders share one
implementation of the conv-norm-activation unit, the double convolution, the down / up
steps, the padding-to-a-multiple helper and the initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "NORMS",
    "PAD_MODES",
    "UPSAMPLE_MODES",
    "BasicBlock",
    "ConvNormAct",
    "Down",
    "DoubleConv",
    "Up",
    "UNetEncoder",
    "conv_layer",
    "init_kaiming_",
    "norm_layer",
    "pad_to_multiple",
    "require_choice",
    "require_positive_int",
]

NORMS = ("batch", "instance", "group", "none")
UPSAMPLE_MODES = ("transpose", "linear", "nearest")
PAD_MODES = ("replicate", "zeros")

#: Upper bound on GroupNorm groups (Wu & He 2018 use 32); see :func:`norm_layer`.
_MAX_GROUPS = 32

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_MAX_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INSTANCE_NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_LINEAR_MODE = {2: "bilinear", 3: "trilinear"}


# ----------------------------------------------------------------------------- validation
def require_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an ``int`` >= 1 (bools rejected), else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def require_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def _require_spatial_dims(spatial_dims: Any) -> int:
    return require_choice("spatial_dims", spatial_dims, tuple(_CONV))


# ----------------------------------------------------------------------------- layers
def conv_layer(
    in_channels: int,
    out_channels: int,
    *,
    spatial_dims: int = 2,
    kernel_size: int = 3,
    stride: int = 1,
    dilation: int = 1,
    bias: bool = True,
) -> nn.Module:
    """``Conv2d``/``Conv3d`` with "same" padding for odd kernels at stride 1."""
    conv = _CONV[_require_spatial_dims(spatial_dims)]
    padding = dilation * (kernel_size - 1) // 2
    return conv(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        bias=bias,
    )


def norm_layer(norm: str, num_channels: int, *, spatial_dims: int = 2) -> nn.Module:
    """Normalisation layer by name.

    Args:
        norm: ``"batch"``, ``"instance"`` (affine, no running statistics, as in nnU-Net and
            MONAI), ``"group"`` (``gcd(num_channels, 32)`` groups, so that narrow test
            widths still divide evenly) or ``"none"`` (identity).
        num_channels: channels of the normalised tensor.
        spatial_dims: 2 or 3.
    """
    require_choice("norm", norm, NORMS)
    spatial_dims = _require_spatial_dims(spatial_dims)
    if norm == "batch":
        return _BATCH_NORM[spatial_dims](num_channels)
    if norm == "instance":
        return _INSTANCE_NORM[spatial_dims](num_channels, affine=True)
    if norm == "group":
        return nn.GroupNorm(math.gcd(num_channels, _MAX_GROUPS), num_channels)
    return nn.Identity()


class ConvNormAct(nn.Sequential):
    """Convolution -> normalisation -> ReLU.

    The convolution has no bias when a normalisation follows: the norm's own shift makes a
    bias redundant (it would only add parameters and a wasted addition per pixel).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        spatial_dims: 2 or 3.
        kernel_size: odd kernel side; padding keeps the size at stride 1.
        stride: convolution stride.
        dilation: convolution dilation.
        norm: one of :data:`NORMS`.
        act: apply an in-place ReLU after the norm.

    Shape:
        ``(N, in_channels, *spatial) -> (N, out_channels, *spatial / stride)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        spatial_dims: int = 2,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        norm: str = "batch",
        act: bool = True,
    ) -> None:
        layers = [
            conv_layer(
                in_channels,
                out_channels,
                spatial_dims=spatial_dims,
                kernel_size=kernel_size,
                stride=stride,
                dilation=dilation,
                bias=norm == "none",
            ),
            norm_layer(norm, out_channels, spatial_dims=spatial_dims),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DoubleConv(nn.Sequential):
    """Two 3x3 :class:`ConvNormAct` units, the basic U-Net stage (Ronneberger et al. 2015).

    Args:
        in_channels: input channels.
        out_channels: output channels of both convolutions.
        spatial_dims: 2 or 3.
        norm: one of :data:`NORMS`.
        dropout: element-wise dropout probability after the second unit (0 adds no layer).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        spatial_dims: int = 2,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        kwargs = {"spatial_dims": spatial_dims, "norm": norm}
        layers: list[nn.Module] = [
            ConvNormAct(in_channels, out_channels, **kwargs),
            ConvNormAct(out_channels, out_channels, **kwargs),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class Down(nn.Sequential):
    """2x max-pool followed by a :class:`DoubleConv` (one U-Net encoder step)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        spatial_dims: int = 2,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            _MAX_POOL[_require_spatial_dims(spatial_dims)](2),
            DoubleConv(in_channels, out_channels, spatial_dims=spatial_dims, norm=norm, dropout=dropout),
        )


def _upsampler(in_channels: int, out_channels: int, *, spatial_dims: int, mode: str) -> nn.Module:
    if mode == "transpose":
        return _CONV_T[spatial_dims](in_channels, out_channels, kernel_size=2, stride=2)
    interp_mode = _LINEAR_MODE[spatial_dims] if mode == "linear" else "nearest"
    # The 1x1 conv keeps the channel arithmetic identical to the transposed-conv variant.
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode=interp_mode),
        conv_layer(in_channels, out_channels, spatial_dims=spatial_dims, kernel_size=1),
    )


class Up(nn.Module):
    """One U-Net decoder step: 2x upsample, concatenate the skip, :class:`DoubleConv`.

    Args:
        in_channels: channels of the coarser input; the upsampler halves them.
        skip_channels: channels of the skip connection.
        out_channels: output channels.
        spatial_dims: 2 or 3.
        norm: one of :data:`NORMS`.
        dropout: dropout of the :class:`DoubleConv`.
        upsample: ``"transpose"`` (2x2 transposed conv, stride 2), ``"linear"``
            (bi-/trilinear interpolation then 1x1 conv) or ``"nearest"`` (nearest-neighbour
            interpolation then 1x1 conv).

    Shape:
        ``x``: ``(N, in_channels, *s)``, ``skip``: ``(N, skip_channels, *2s)`` ->
        ``(N, out_channels, *2s)``.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        *,
        spatial_dims: int = 2,
        norm: str = "batch",
        dropout: float = 0.0,
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        require_choice("upsample", upsample, UPSAMPLE_MODES)
        spatial_dims = _require_spatial_dims(spatial_dims)
        up_channels = in_channels // 2
        self.up = _upsampler(in_channels, up_channels, spatial_dims=spatial_dims, mode=upsample)
        self.conv = DoubleConv(
            up_channels + skip_channels,
            out_channels,
            spatial_dims=spatial_dims,
            norm=norm,
            dropout=dropout,
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNetEncoder(nn.Module):
    """U-Net contracting path: a :class:`DoubleConv` stem and one :class:`Down` per extra width.

    Args:
        in_channels: image channels.
        widths: channels per level, finest first, e.g. ``(64, 128, 256, 512, 1024)``;
            ``len(widths) - 1`` downsamplings.
        spatial_dims: 2 or 3.
        norm: one of :data:`NORMS`.
        dropout: dropout of every :class:`DoubleConv`.

    Shape:
        ``(N, in_channels, *s)`` -> list of ``(N, widths[i], *s / 2**i)``, finest first.
        Every side of ``s`` must be divisible by ``2 ** (len(widths) - 1)``.
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        *,
        spatial_dims: int = 2,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        kwargs = {"spatial_dims": spatial_dims, "norm": norm, "dropout": dropout}
        self.widths = tuple(widths)
        self.stem = DoubleConv(in_channels, widths[0], **kwargs)
        self.downs = nn.ModuleList(Down(c_in, c_out, **kwargs) for c_in, c_out in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self.stem(x)]
        for down in self.downs:
            features.append(down(features[-1]))
        return features


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): two 3x3 conv-norm units plus a shortcut.

    When the stride or the width changes, the shortcut is a 1x1 conv + norm ("option B" of
    He et al.); otherwise it is the identity. Option B costs a few parameters over the
    zero-padding "option A" of the CIFAR ResNets (2,752 in ResNet-32) but keeps the block
    a plain module, usable unchanged for any width schedule.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution (and of the shortcut).
        spatial_dims: 2 or 3.
        norm: one of :data:`NORMS`.

    Shape:
        ``(N, in_channels, *s) -> (N, out_channels, *s / stride)``.
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        spatial_dims: int = 2,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        kwargs = {"spatial_dims": spatial_dims, "norm": norm}
        self.conv1 = ConvNormAct(in_channels, out_channels, stride=stride, **kwargs)
        self.conv2 = ConvNormAct(out_channels, out_channels, act=False, **kwargs)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = ConvNormAct(
                in_channels, out_channels, kernel_size=1, stride=stride, act=False, **kwargs
            )
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


# ----------------------------------------------------------------------------- init
def init_kaiming_(module: nn.Module) -> nn.Module:
    """Kaiming-normal init (He et al. 2015, ``fan_out``, ReLU gain) of every (transposed)
    convolution in ``module``; conv biases and norm shifts to 0, norm scales to 1.

    Linear layers keep PyTorch's default init. Returns ``module`` for chaining.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


# ----------------------------------------------------------------------------- padding
def pad_to_multiple(
    x: torch.Tensor, multiple: int, *, mode: str = "replicate"
) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad every spatial side of ``x`` up to a multiple of ``multiple``.

    Padding is split evenly before and after (the extra pixel after), so the image stays
    centred. ``"replicate"`` repeats the border pixels, which avoids creating an artificial
    intensity edge at the image border; ``"zeros"`` pads with 0.

    Args:
        x: ``(N, C, *spatial)`` tensor.
        multiple: target divisor of every spatial side.
        mode: one of :data:`PAD_MODES`.

    Returns:
        The padded tensor and the index that crops a same-sized result back, i.e.
        ``padded[index]`` equals ``x``. Without padding, ``x`` itself is returned.

    Example:
        >>> x = torch.zeros(1, 1, 5, 16)
        >>> padded, index = pad_to_multiple(x, 8)
        >>> tuple(padded.shape), tuple(padded[index].shape)
        ((1, 1, 8, 16), (1, 1, 5, 16))
    """
    require_choice("mode", mode, PAD_MODES)
    spatial = x.shape[2:]
    before = [(-size % multiple) // 2 for size in spatial]
    after = [-size % multiple - b for size, b in zip(spatial, before)]
    index = (slice(None), slice(None)) + tuple(slice(b, b + size) for b, size in zip(before, spatial))
    if not any(before) and not any(after):
        return x, index
    # F.pad takes (last_before, last_after, second_last_before, ...).
    pad = [p for b, a in zip(reversed(before), reversed(after)) for p in (b, a)]
    return F.pad(x, pad, mode="constant" if mode == "zeros" else "replicate"), index
