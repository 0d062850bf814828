"""CE-Net (Gu et al., IEEE TMI 2019): ResNet-34 encoder, DAC and RMP context blocks, 2D."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medbalance.nets.backbones import ResNetEncoder
from medbalance.nets.blocks import (
    NORMS,
    PAD_MODES,
    ConvNormAct,
    check_input,
    conv_layer,
    init_kaiming_,
    norm_layer,
    pad_to_multiple,
    require_choice,
    require_positive_int,
)

__all__ = ["CENet", "CENetDecoderBlock", "DenseAtrousConv", "ResidualMultiKernelPool"]


class DenseAtrousConv(nn.Module):
    """Dense atrous convolution (DAC) block: four cascaded atrous branches summed with the input.

    Branches: ``a1(x)``; ``c(a3(x))``; ``c(a3(a1(x)))``; ``c(a5(a3(a1(x))))``, each followed
    by a ReLU, where ``a1``, ``a3``, ``a5`` are 3x3 convolutions with dilation 1, 3, 5 and ``c``
    a 1x1 convolution. As in the authors' code, the three atrous convolutions and the 1x1
    convolution are shared by the branches (so ``a1(x)`` and ``a3(a1(x))`` are computed
    once), the convolutions have biases and there is no normalisation.

    Reference:
        Z. Gu et al., "CE-Net: Context Encoder Network for 2D Medical Image Segmentation",
        IEEE TMI 38(10), 2019, section II-B and Fig. 3; code github.com/Guzaiwang/CE-Net.

    Args:
        channels: input and output channels.

    Shape:
        ``(N, channels, H, W) -> (N, channels, H, W)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.atrous1 = conv_layer(channels, channels, dilation=1)
        self.atrous3 = conv_layer(channels, channels, dilation=3)
        self.atrous5 = conv_layer(channels, channels, dilation=5)
        self.pointwise = conv_layer(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a1 = self.atrous1(x)
        a3 = self.atrous3(x)
        a13 = self.atrous3(a1)
        a135 = self.atrous5(a13)
        branches = [a1] + [self.pointwise(t) for t in (a3, a13, a135)]
        return x + sum(F.relu(b) for b in branches)


class ResidualMultiKernelPool(nn.Module):
    """Residual multi-kernel pooling (RMP) block: max-pools of several sizes, each reduced to one
    channel by a shared 1x1 convolution, upsampled bilinearly and concatenated to the input.

    Each pool has stride equal to its kernel. A map smaller than a kernel is pooled whole
    (padded with -inf up to the kernel), so small inputs work where the authors' code fails.

    Reference:
        Z. Gu et al., "CE-Net", IEEE TMI 2019, section II-C and Fig. 4.

    Args:
        channels: input channels.
        kernel_sizes: pooling kernels ((2, 3, 5, 6) in the paper).

    Shape:
        ``(N, channels, H, W) -> (N, channels + len(kernel_sizes), H, W)``.
    """

    def __init__(self, channels: int, kernel_sizes: tuple[int, ...] = (2, 3, 5, 6)) -> None:
        super().__init__()
        self.kernel_sizes = tuple(kernel_sizes)
        self.conv = conv_layer(channels, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2:]
        pooled = []
        for k in self.kernel_sizes:
            # Pad a short map up to the kernel with -inf instead of clipping the kernel: the same
            # maxima, and no branch on the size, so an exported graph serves every size.
            # (sym_max keeps the size symbolic while exporting; torch.jit.trace cannot take it.)
            short = torch.sym_max if torch.compiler.is_exporting() else max
            short_h, short_w = short(k - height, 0), short(k - width, 0)
            y = F.pad(x, (0, short_w, 0, short_h), value=float("-inf"))
            y = F.max_pool2d(y, k, stride=k)
            # The one-output 1x1 convolution as a weighted channel sum: a convolution (or a
            # matmul) of a 1x1 map makes torch.export specialise on the map's size.
            y = (y * self.conv.weight.view(1, -1, 1, 1)).sum(1, keepdim=True) + self.conv.bias.view(1, 1, 1, 1)
            pooled.append(F.interpolate(y, size=(height, width), mode="bilinear", align_corners=False))
        return torch.cat([*pooled, x], dim=1)


class CENetDecoderBlock(nn.Sequential):
    """CE-Net decoder block: 1x1 conv to a quarter of the channels, 3x3 transposed conv with
    stride 2, 1x1 conv to ``out_channels``; each followed by norm and ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        norm: one of :data:`~medbalance.nets.blocks.NORMS`.

    Shape:
        ``(N, in_channels, H, W) -> (N, out_channels, 2H, 2W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, norm: str = "batch") -> None:
        mid = max(1, in_channels // 4)
        super().__init__(
            ConvNormAct(in_channels, mid, kernel_size=1, norm=norm),
            nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1, bias=norm == "none"),
            norm_layer(norm, mid),
            nn.ReLU(inplace=True),
            ConvNormAct(mid, out_channels, kernel_size=1, norm=norm),
        )


class CENet(nn.Module):
    """CE-Net: ResNet-34 encoder, DAC and RMP blocks at stride 32, a decoder with additive skips.

    Encoder: :class:`~medbalance.nets.backbones.ResNetEncoder` (``"resnet34"``) with stage
    widths ``base_channels * (1, 2, 4, 8)``. Context: :class:`DenseAtrousConv` then
    :class:`ResidualMultiKernelPool` on the stride-32 feature (+4 channels). Decoder: four
    :class:`CENetDecoderBlock` (each 2x up) whose outputs are added to the encoder features of
    the same scale, then a 4x4 transposed conv with stride 2 to ``base_channels // 2``
    channels, norm, ReLU, a 3x3 conv-norm-ReLU and a 3x3 conv to ``num_classes``. Any
    spatial size is accepted: the input is padded (``pad_mode``) to a multiple of 32 and the
    logits are cropped back. Weights use Kaiming-normal init; the authors start from an
    ImageNet-pretrained ResNet-34, which is not provided here.

    Reference:
        Z. Gu, J. Cheng, H. Fu, K. Zhou, H. Hao, Y. Zhao, T. Zhang, S. Gao, J. Liu, "CE-Net:
        Context Encoder Network for 2D Medical Image Segmentation", IEEE TMI 38(10), 2019.
        Difference from the authors' code: the head's first two convolutions are followed
        by the normalisation (theirs have none). Without it, trained from scratch at a high
        learning rate, the narrow head loses the foreground to dead ReLUs: its logits stay
        at the shared bias while the background's fall (seen at widths 8 to 32).
        Trained from scratch, CE-Net learns 1-2 px structures far more slowly than the
        U-Nets: its decoder has nothing finer than stride 4 (``docs/seed-differences.md``).

    Args:
        in_channels: image channels.
        num_classes: output channels (1 for binary segmentation with a sigmoid, as the
            paper, else one per class including background).
        base_channels: encoder stem width (64 in the paper; the default 16 is CPU-sized).
        norm: one of :data:`~medbalance.nets.blocks.NORMS` (encoder and decoder blocks).
        pad_mode: ``"replicate"`` (default) or ``"zeros"`` for the internal padding.

    Shape:
        ``(N, in_channels, H, W) -> (N, num_classes, H, W)`` raw logits.

    Example:
        >>> net = CENet(1, 1, base_channels=8).eval()
        >>> net(torch.randn(2, 1, 37, 53)).shape
        torch.Size([2, 1, 37, 53])
    """

    prefers_channels_last = True  # as SegmentationNet.prefers_channels_last, measured alike

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        base_channels: int = 16,
        norm: str = "batch",
        pad_mode: str = "replicate",
    ) -> None:
        super().__init__()
        self.in_channels = require_positive_int("in_channels", in_channels)
        self.num_classes = require_positive_int("num_classes", num_classes)
        require_positive_int("base_channels", base_channels)
        require_choice("norm", norm, NORMS)
        self.pad_mode = require_choice("pad_mode", pad_mode, PAD_MODES)

        self.encoder = ResNetEncoder(in_channels, layout="resnet34", base_channels=base_channels, norm=norm)
        widths = self.encoder.out_channels[1:]  # stage widths b, 2b, 4b, 8b
        self.dac = DenseAtrousConv(widths[-1])
        self.rmp = ResidualMultiKernelPool(widths[-1])
        # Decoder widths (paper): 516 -> 256 -> 128 -> 64 -> 64, then the head.
        finer = widths[-2::-1]
        c_in = [widths[-1] + len(self.rmp.kernel_sizes), *finer]
        c_out = [*finer, widths[0]]
        self.decoder = nn.ModuleList(CENetDecoderBlock(a, b, norm=norm) for a, b in zip(c_in, c_out))
        half = max(1, base_channels // 2)
        self.head = nn.Sequential(
            nn.ConvTranspose2d(widths[0], half, 4, stride=2, padding=1, bias=norm == "none"),
            norm_layer(norm, half),
            nn.ReLU(inplace=True),
            ConvNormAct(half, half, norm=norm),
            conv_layer(half, num_classes),
        )
        init_kaiming_(self)
        # fan_out init of a conv to one channel has std sqrt(2): it would scale the pooled
        # maps by ~sqrt(2 * channels); fan_in keeps them at the input's scale.
        nn.init.kaiming_normal_(self.rmp.conv.weight, mode="fan_in", nonlinearity="linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels)
        x, crop = pad_to_multiple(x, 32, mode=self.pad_mode)
        *skips, deepest = self.encoder(x)[1:]
        y = self.rmp(self.dac(deepest))
        # Three decoder blocks add the encoder feature of their scale; the last one has no skip.
        for block, skip in zip(self.decoder, reversed(skips)):
            y = block(y) + skip
        return self.head(self.decoder[-1](y))[crop]
