"""Reusable building blocks for the medbalance networks.

Everything here is dimension-generic (``spatial_dims`` 2 or 3) unless said otherwise, so
that U-Net, U-Net++, U-Net3+, Attention U-Net and the ResNet-style encoders share one
implementation of the conv-norm-activation unit, the double convolution, the down / up
steps, the U-Net decoder, the attention gate, the padding-to-a-multiple helper, the
initialisation and the pad / crop / deep-supervision plumbing of :class:`SegmentationNet`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "check_input",
    "NORMS",
    "PAD_MODES",
    "UPSAMPLE_MODES",
    "AttentionGate",
    "BasicBlock",
    "ConvNormAct",
    "Down",
    "DoubleConv",
    "SegmentationNet",
    "UNetDecoder",
    "UNetEncoder",
    "Up",
    "conv_layer",
    "crop_to_input",
    "init_kaiming_",
    "interpolate_layer",
    "norm_layer",
    "pad_to_multiple",
    "pool_layer",
    "require_choice",
    "require_positive_int",
    "resize_linear",
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


def check_input(x: torch.Tensor, in_channels: int, spatial_dims: int = 2) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(N, in_channels, *spatial)`` with ``spatial_dims`` sides."""
    if x.ndim != spatial_dims + 2 or x.shape[1] != in_channels:
        expected = ", ".join(["N", str(in_channels)] + ["*"] * spatial_dims)
        raise ValueError(f"x must have shape ({expected}), got {tuple(x.shape)}")


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


def pool_layer(factor: int, *, spatial_dims: int = 2) -> nn.Module:
    """``factor``-times max-pool (kernel = stride = ``factor``) in 2D or 3D."""
    return _MAX_POOL[_require_spatial_dims(spatial_dims)](factor)


def resize_linear(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize ``(N, C, *spatial)`` to ``size`` by bi-/trilinear interpolation (``align_corners=False``)."""
    return F.interpolate(x, size=tuple(size), mode=_LINEAR_MODE[x.ndim - 2], align_corners=False)


def interpolate_layer(factor: int, *, spatial_dims: int = 2, mode: str = "linear") -> nn.Module:
    """``factor``-times upsampling by ``"linear"`` (bi-/trilinear) or ``"nearest"`` interpolation."""
    spatial_dims = _require_spatial_dims(spatial_dims)
    return nn.Upsample(scale_factor=factor, mode=_LINEAR_MODE[spatial_dims] if mode == "linear" else "nearest")


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
            pool_layer(2, spatial_dims=spatial_dims),
            DoubleConv(in_channels, out_channels, spatial_dims=spatial_dims, norm=norm, dropout=dropout),
        )


def _upsampler(in_channels: int, out_channels: int, *, spatial_dims: int, mode: str) -> nn.Module:
    if mode == "transpose":
        return _CONV_T[spatial_dims](in_channels, out_channels, kernel_size=2, stride=2)
    # The 1x1 conv keeps the channel arithmetic identical to the transposed-conv variant.
    return nn.Sequential(
        interpolate_layer(2, spatial_dims=spatial_dims, mode=mode),
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


class AttentionGate(nn.Module):
    """Additive attention gate on a skip connection (Oktay et al. 2018, "grid attention").

    The skip features ``x`` are projected by a 2x2 stride-2 convolution (``W_x``) to the
    resolution of the coarser gating signal ``g`` (projected by a 1x1 convolution, ``W_g``),
    the two are added, passed through ReLU, a 1x1 convolution to one channel (``psi``) and a
    sigmoid; the resulting coefficients ``alpha`` are upsampled (bi-/trilinear) to the skip's
    resolution, multiply ``x`` and a 1x1 conv + norm (``W``) mixes the gated features:
    ``W(alpha * x)``. The gate suppresses skip features outside the region that the coarse
    context points at, which the paper credits for its gains on small organs.

    Reference:
        O. Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas",
        MIDL 2018, section 2 (eq. 1-2) and the authors' ``GridAttentionBlock`` (sub-sample
        factor 2, ``W_x`` without bias, ``W_g`` and ``psi`` with bias, output 1x1 conv + BN).
        MONAI's ``AttentionBlock`` differs: it gates with the *upsampled* decoder feature at
        the skip's resolution and adds a norm after every projection.

    Args:
        skip_channels: channels of ``x`` (also of the output).
        gate_channels: channels of ``g``.
        inter_channels: channels of the additive space (default ``max(skip_channels // 2, 1)``,
            as the paper).
        spatial_dims: 2 or 3.
        norm: norm of the output projection, one of :data:`NORMS`.

    Shape:
        ``x``: ``(N, skip_channels, *s)``, ``g``: ``(N, gate_channels, *s / 2)`` (any other
        size is interpolated to ``s / 2``) -> ``(N, skip_channels, *s)``.

    Example:
        >>> gate = AttentionGate(8, 16)
        >>> x, g = torch.randn(2, 8, 32, 32), torch.randn(2, 16, 16, 16)
        >>> gate(x, g).shape, gate.coefficients(x, g).shape
        (torch.Size([2, 8, 32, 32]), torch.Size([2, 1, 32, 32]))
    """

    def __init__(
        self,
        skip_channels: int,
        gate_channels: int,
        *,
        inter_channels: int | None = None,
        spatial_dims: int = 2,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        require_positive_int("skip_channels", skip_channels)
        require_positive_int("gate_channels", gate_channels)
        inter = max(skip_channels // 2, 1) if inter_channels is None else inter_channels
        require_positive_int("inter_channels", inter)
        kwargs = {"spatial_dims": _require_spatial_dims(spatial_dims)}
        self.theta = conv_layer(skip_channels, inter, kernel_size=2, stride=2, bias=False, **kwargs)
        self.phi = conv_layer(gate_channels, inter, kernel_size=1, **kwargs)
        self.psi = conv_layer(inter, 1, kernel_size=1, **kwargs)
        self.out = ConvNormAct(skip_channels, skip_channels, kernel_size=1, norm=norm, act=False, **kwargs)

    def coefficients(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Attention coefficients ``alpha`` in ``(0, 1)``, shape ``(N, 1, *x.shape[2:])``."""
        theta = self.theta(x)
        phi = self.phi(g)
        if phi.shape[2:] != theta.shape[2:]:
            phi = resize_linear(phi, theta.shape[2:])
        return resize_linear(torch.sigmoid(self.psi(F.relu(theta + phi))), x.shape[2:])

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.out(x * self.coefficients(x, g))


class UNetDecoder(nn.Module):
    """U-Net expanding path: one :class:`Up` per skip, optionally with an
    :class:`AttentionGate` on every skip (Attention U-Net).

    Args:
        widths: encoder widths, finest first (as :class:`UNetEncoder`).
        spatial_dims: 2 or 3.
        norm: normalisation name.
        dropout: dropout of every double conv.
        upsample: upsampling mode of :class:`Up`.
        attention: gate each skip with the coarser feature that is about to be upsampled.

    Shape:
        encoder features (finest first) -> ``(N, widths[0], *s)``; :meth:`stages` returns
        every decoder output, ``(N, widths[i], *s / 2**i)`` for ``i = len(widths) - 2 .. 0``.
    """

    def __init__(
        self,
        widths: Sequence[int],
        *,
        spatial_dims: int = 2,
        norm: str = "batch",
        dropout: float = 0.0,
        upsample: str = "transpose",
        attention: bool = False,
    ) -> None:
        super().__init__()
        coarse_to_fine = tuple(reversed(widths))
        pairs = list(zip(coarse_to_fine[:-1], coarse_to_fine[1:]))
        kwargs = {"spatial_dims": spatial_dims, "norm": norm}
        self.ups = nn.ModuleList(
            Up(c_in, c_skip, c_skip, dropout=dropout, upsample=upsample, **kwargs) for c_in, c_skip in pairs
        )
        self.gates = (
            nn.ModuleList(AttentionGate(c_skip, c_in, **kwargs) for c_in, c_skip in pairs) if attention else None
        )

    def stages(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Every decoder output, coarsest first (the last one is :meth:`forward`'s result)."""
        x, *skips = reversed(features)
        outputs = []
        for i, (up, skip) in enumerate(zip(self.ups, skips)):
            if self.gates is not None:
                skip = self.gates[i](skip, x)
            x = up(x, skip)
            outputs.append(x)
        return outputs

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.stages(features)[-1]


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
        dilation: dilation of both 3x3 convolutions (dilated ResNet stages keep the resolution).
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
        dilation: int = 1,
        spatial_dims: int = 2,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        kwargs = {"spatial_dims": spatial_dims, "norm": norm}
        self.conv1 = ConvNormAct(in_channels, out_channels, stride=stride, dilation=dilation, **kwargs)
        self.conv2 = ConvNormAct(out_channels, out_channels, dilation=dilation, act=False, **kwargs)
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
    # While exporting, always take the padding path so the graph stays valid for any size.
    if not torch.compiler.is_exporting() and not any(before) and not any(after):
        return x, index
    # F.pad takes (last_before, last_after, second_last_before, ...).
    pad = [p for b, a in zip(reversed(before), reversed(after)) for p in (b, a)]
    return F.pad(x, pad, mode="constant" if mode == "zeros" else "replicate"), index


def crop_to_input(logits: torch.Tensor, index: tuple[slice, ...], padded_size: Sequence[int]) -> torch.Tensor:
    """Crop an output computed on a padded input back to the input's region.

    Args:
        logits: ``(N, C, *spatial)`` output; its ``spatial`` may be the padded size divided by
            an integer factor per side (a low-resolution deep-supervision output).
        index: the crop index from :func:`pad_to_multiple`.
        padded_size: spatial size of the padded input.

    Returns:
        ``logits[index]`` at full resolution. At a ``k``-times lower resolution, the coarse
        pixels that overlap the input's region: from ``start // k`` to ``ceil(stop / k)``, so
        the crop is never empty and misaligns by less than one coarse pixel.
    """
    slices = []
    for sl, padded, size in zip(index[2:], padded_size, logits.shape[2:]):
        factor = padded // size
        slices.append(sl if factor == 1 else slice(sl.start // factor, -(-sl.stop // factor)))
    if torch.compiler.is_exporting():
        for dim, sl in enumerate(slices, start=2):
            positions = torch.arange(sl.start, sl.stop, device=logits.device)
            logits = logits.index_select(dim, positions)
        return logits
    return logits[(slice(None), slice(None), *slices)]


class SegmentationNet(nn.Module):
    """Base of the U-Net family: argument checks, the encoder, pad-to-a-multiple, crop back,
    deep supervision.

    This ``__init__`` builds the shared :class:`UNetEncoder` (``self.encoder``, widths
    :attr:`widths`); subclasses build their decoders after calling it (``self.block_kwargs``
    holds the per-block arguments) and implement
    :meth:`forward_padded`. :meth:`forward` checks the input, pads it (``pad_mode``, split
    evenly before / after) to a multiple of ``2**depth``, calls :meth:`forward_padded` and
    crops every output back with :func:`crop_to_input`.

    Deep supervision (the convention of every medbalance network that offers it): with
    ``deep_supervision=True`` *and* in training mode, :meth:`forward` returns a tuple of
    logits, the main (full-resolution, final) output first, then the auxiliary outputs from
    high to low resolution, each with ``num_classes`` channels. In eval mode it returns the
    main output only, and subclasses skip the auxiliary heads (:attr:`with_aux` is False).

    Args:
        in_channels: image channels.
        num_classes: output channels (1: one binary logit; else one per class, background
            included).
        base_channels: width of the first level; level ``i`` has ``base_channels * 2**i``
            (:attr:`widths`).
        depth: number of downsamplings.
        spatial_dims: 2 or 3.
        norm: one of :data:`NORMS`.
        dropout: dropout probability in ``[0, 1)``.
        pad_mode: one of :data:`PAD_MODES`.
        deep_supervision: return the auxiliary outputs in training mode.
    """

    #: Whether training and inference on CPU are faster in ``channels_last`` memory layout
    #: (the engine's ``channels_last: auto``); measured per network by ``python -m benchmarks
    #: --only compute`` (1.1-1.6x training, 1.3-1.8x inference at 2 threads, benchmarks/RESULTS.md).
    prefers_channels_last: bool = True

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        base_channels: int,
        depth: int,
        spatial_dims: int,
        norm: str,
        dropout: float,
        pad_mode: str,
        deep_supervision: bool,
    ) -> None:
        super().__init__()
        self.in_channels = require_positive_int("in_channels", in_channels)
        self.num_classes = require_positive_int("num_classes", num_classes)
        require_positive_int("base_channels", base_channels)
        self.depth = require_positive_int("depth", depth)
        self.spatial_dims = _require_spatial_dims(spatial_dims)
        require_choice("norm", norm, NORMS)
        self.pad_mode = require_choice("pad_mode", pad_mode, PAD_MODES)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if not isinstance(deep_supervision, bool):
            raise ValueError(f"deep_supervision must be a bool, got {deep_supervision!r}")
        self.deep_supervision = deep_supervision
        self.widths = tuple(base_channels * 2**i for i in range(depth + 1))
        #: arguments of every block of the net (encoder and decoder alike)
        self.block_kwargs = {"spatial_dims": spatial_dims, "norm": norm, "dropout": dropout}
        self.encoder = UNetEncoder(in_channels, self.widths, **self.block_kwargs)

    @property
    def with_aux(self) -> bool:
        """Whether :meth:`forward` returns the auxiliary outputs (deep supervision, training)."""
        return self.deep_supervision and self.training

    def head_layer(self, in_channels: int, *, kernel_size: int = 1) -> nn.Module:
        """A convolution from ``in_channels`` features to ``num_classes`` logits."""
        return conv_layer(in_channels, self.num_classes, spatial_dims=self.spatial_dims, kernel_size=kernel_size)

    def forward_padded(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits for an input whose sides are multiples of ``2**depth``: the main output
        first, then (only when :attr:`with_aux`) the auxiliary ones."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        check_input(x, self.in_channels, self.spatial_dims)
        padded, index = pad_to_multiple(x, 2**self.depth, mode=self.pad_mode)
        outputs = tuple(crop_to_input(out, index, padded.shape[2:]) for out in self.forward_padded(padded))
        return outputs if self.with_aux else outputs[0]
