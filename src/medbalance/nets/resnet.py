"""CIFAR-layout ResNet-32 (He et al. 2016), the backbone of LDAM-DRW, BBN and LSKBB, and its
improved form with an LSK module in every basic block (seed 001, SPEC section 6)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medbalance.nets.attention import BiLevelRoutingAttention, SimAM
from medbalance.nets.blocks import BasicBlock, ConvNormAct, init_kaiming_, require_choice, require_positive_int
from medbalance.nets.lsk import LSKModule

__all__ = [
    "AttentionBasicBlock",
    "CosineLinear",
    "LSKBasicBlock",
    "ResNet32BiFormer",
    "ResNet32SimAM",
    "ResNet32",
    "channels_last",
    "init_weights_",
    "make_head",
    "resnet_stage",
]

#: Where :class:`LSKBasicBlock` applies its LSK module (``None``: a plain basic block).
LSK_POSITIONS = (None, "residual", "shortcut")
#: Attention of :class:`AttentionBasicBlock` (``None``: a plain basic block), seed 001 table 4.
ATTENTIONS = (None, "simam", "biformer")
#: Classifier heads: ``"linear"`` (``nn.Linear``) or ``"cosine"`` (:class:`CosineLinear`, for LDAM).
HEADS = ("linear", "cosine")


class LSKBasicBlock(BasicBlock):
    """Basic block of the improved ResNet-32: an :class:`~medbalance.nets.lsk.LSKModule` on one path.

    Seed 001 puts the LSK module "at the skip connection" of every basic block (its fig. 4).
    **Decision** (SPEC section 6): ``"residual"`` (default) applies it to the residual branch
    just before the addition, where SE / CBAM sit: ``relu(LSK(F(x)) + s(x))``;
    ``"shortcut"`` applies it to the shortcut path: ``relu(F(x) + LSK(s(x)))``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution (and of the shortcut).
        position: ``"residual"`` or ``"shortcut"``.

    Shape:
        ``(N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, position: str = "residual") -> None:
        super().__init__(in_channels, out_channels, stride=stride)
        self.position = require_choice("lsk_position", position, LSK_POSITIONS[1:])
        self.lsk = LSKModule(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual, shortcut = self.conv2(self.conv1(x)), self.shortcut(x)
        if self.position == "residual":
            residual = self.lsk(residual)
        else:
            shortcut = self.lsk(shortcut)
        return self.act(residual + shortcut)


class AttentionBasicBlock(BasicBlock):
    """Basic block with an attention module on the residual branch: ``relu(A(F(x)) + s(x))``.

    Seed 001's table 4 compares ResNet-32 with SimAM and with BiFormer's attention "in the
    basic module"; like the LSK module (``"residual"``), the attention re-weights the residual
    before the addition, where SimAM's code and SE put it.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution (and of the shortcut).
        attention: ``"simam"`` (:class:`~medbalance.nets.attention.SimAM`) or ``"biformer"``
            (:class:`~medbalance.nets.attention.BiLevelRoutingAttention`, residual form).

    Shape:
        ``(N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, attention: str = "simam") -> None:
        super().__init__(in_channels, out_channels, stride=stride)
        self.kind = require_choice("attention", attention, ATTENTIONS[1:])
        self.attention = SimAM() if attention == "simam" else BiLevelRoutingAttention(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.attention(self.conv2(self.conv1(x))) + self.shortcut(x))


def resnet_stage(
    in_channels: int,
    out_channels: int,
    num_blocks: int,
    *,
    stride: int,
    lsk_position: str | None = None,
    attention: str | None = None,
) -> nn.Sequential:
    """``num_blocks`` basic blocks (LSK blocks with ``lsk_position``, attention blocks with
    ``attention``); the first one strides."""
    require_choice("lsk_position", lsk_position, LSK_POSITIONS)
    require_choice("attention", attention, ATTENTIONS)
    if lsk_position is not None and attention is not None:
        raise ValueError(f"give lsk_position or attention, not both (got {lsk_position!r} and {attention!r})")

    def block(c_in: int, s: int) -> nn.Module:
        if attention is not None:
            return AttentionBasicBlock(c_in, out_channels, stride=s, attention=attention)
        if lsk_position is None:
            return BasicBlock(c_in, out_channels, stride=s)
        return LSKBasicBlock(c_in, out_channels, stride=s, position=lsk_position)

    return nn.Sequential(block(in_channels, stride), *(block(out_channels, 1) for _ in range(num_blocks - 1)))


class CosineLinear(nn.Module):
    """Cosine classifier: ``z_c = <f / |f|, w_c / |w_c|>``, logits in ``[-1, 1]``.

    The normalised-weight head LDAM is designed for (Cao et al. 2019, ``NormedLinear`` of
    its code); :class:`~medbalance.losses.LDAMLoss` rescales the logits by ``s = 30``.

    Args:
        in_features: feature size.
        out_features: number of classes.

    Shape:
        ``(N, in_features) -> (N, out_features)``.

    Example:
        >>> head = CosineLinear(8, 3)
        >>> bool(head(torch.randn(4, 8)).abs().max() <= 1.0)
        True
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = require_positive_int("in_features", in_features)
        self.out_features = require_positive_int("out_features", out_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-1.0, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def init_weights_(net: nn.Module) -> nn.Module:
    """:func:`~medbalance.nets.blocks.init_kaiming_`, then every LSK module back to the identity."""
    init_kaiming_(net)
    for module in net.modules():
        if isinstance(module, LSKModule):
            module.reset_parameters()
    return net


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last memory layout: on CPU, oneDNN runs the small convolutions of these
    networks (the depth-wise ones of the LSK module above all) 1.3-1.8x faster in it. Not while
    exporting: the layout would tie the exported graph to batch sizes above 1."""
    if torch.compiler.is_exporting():
        return x
    return x.contiguous(memory_format=torch.channels_last)


def make_head(head: str, in_features: int, num_classes: int) -> nn.Module:
    """The classifier named ``head`` (one of :data:`HEADS`)."""
    require_choice("head", head, HEADS)
    return nn.Linear(in_features, num_classes) if head == "linear" else CosineLinear(in_features, num_classes)


def check_resnet_args(
    in_channels: int,
    num_classes: int,
    widths: Sequence[int],
    blocks_per_stage: int,
    lsk_position: str | None,
    head: str,
    *,
    min_stages: int = 1,
) -> tuple[int, ...]:
    """Validate the arguments the CIFAR ResNets share (:class:`ResNet32`, BBN); the widths as a tuple."""
    require_positive_int("in_channels", in_channels)
    require_positive_int("num_classes", num_classes)
    require_positive_int("blocks_per_stage", blocks_per_stage)
    require_choice("lsk_position", lsk_position, LSK_POSITIONS)
    require_choice("head", head, HEADS)
    widths = tuple(widths)
    if len(widths) < min_stages:
        need = "one stage width" if min_stages == 1 else f"{min_stages} stages (the last one is per branch)"
        raise ValueError(f"widths must list at least {need}, got {widths}")
    for i, width in enumerate(widths):
        require_positive_int(f"widths[{i}]", width)
    return widths


class ResNet32(nn.Module):
    """ResNet for small images in the CIFAR layout: a 3x3 stem conv to ``widths[0]``,
    ``len(widths)`` stages of ``blocks_per_stage`` basic blocks (stride 2 at the first
    block of every stage but the first), global average pooling and a classifier.

    With the defaults this is ResNet-32 (6 * 5 + 2 weighted layers; 466,906 parameters for
    10 classes: the 464,154 of the published "0.46M" network plus 2,752 for the 1x1
    conv-BN projection shortcuts used here instead of zero-padding, see
    :class:`~medbalance.nets.blocks.BasicBlock`). ``lsk_position`` gives the improved
    ResNet-32 of seed 001 (an LSK module in every block, :class:`LSKBasicBlock`);
    ``head="cosine"`` the normalised classifier of LDAM-DRW.

    The trunk and the head are separate so that two-branch methods (BBN, LSKBB) and
    classifier re-training (DRW, MiSLAS) can reuse them: :meth:`forward_features` returns
    the pooled features and :attr:`classifier` is the final layer.

    Reference:
        K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition",
        CVPR 2016, section 4.2; layout as in the LDAM-DRW (Cao et al. 2019) and BBN
        (Zhou et al. 2020) code; improved ResNet-32: Sun, Zhao, Guo, Computer Science 52(4),
        2025, section 3.2.

    Args:
        in_channels: image channels.
        num_classes: number of classes (logits per image).
        widths: channels per stage.
        blocks_per_stage: basic blocks per stage (``n`` of the paper; depth ``6n + 2``).
        lsk_position: ``None`` (plain ResNet), ``"residual"`` or ``"shortcut"``
            (improved ResNet-32, see :class:`LSKBasicBlock`).
        head: ``"linear"`` or ``"cosine"`` (:class:`CosineLinear`, for LDAM).
        attention: ``None``, ``"simam"`` or ``"biformer"``: the attention module in every
            block (:class:`AttentionBasicBlock`; seed 001 table 4's ResNet-32 + SimAM /
            + BiFormer). Not together with ``lsk_position``.

    Attributes:
        feature_dim: size of the pooled feature vector, ``widths[-1]``.
        classifier: the ``(N, feature_dim) -> (N, num_classes)`` head.

    Shape:
        ``(N, in_channels, H, W) -> (N, num_classes)`` logits.

    Example:
        >>> net = ResNet32(3, 10).eval()
        >>> x = torch.randn(2, 3, 32, 32)
        >>> net(x).shape, net.forward_features(x).shape
        (torch.Size([2, 10]), torch.Size([2, 64]))
        >>> ResNet32(3, 10, lsk_position="residual", head="cosine").classifier
        CosineLinear(in_features=64, out_features=10)
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        *,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 5,
        lsk_position: str | None = None,
        head: str = "linear",
        attention: str | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        widths = check_resnet_args(in_channels, num_classes, widths, blocks_per_stage, lsk_position, head)

        self.stem = ConvNormAct(in_channels, widths[0])
        ins = (widths[0], *widths[:-1])
        self.stages = nn.Sequential(
            *(
                resnet_stage(
                    c_in,
                    c_out,
                    blocks_per_stage,
                    stride=1 if i == 0 else 2,
                    lsk_position=lsk_position,
                    attention=attention,
                )
                for i, (c_in, c_out) in enumerate(zip(ins, widths))
            )
        )
        self.attention = attention
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[-1]
        self.classifier = make_head(head, self.feature_dim, num_classes)
        init_weights_(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled trunk features, ``(N, in_channels, H, W) -> (N, feature_dim)``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.pool(self.stages(channels_last(self.stem(x)))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))


class ResNet32SimAM(ResNet32):
    """ResNet-32 with :class:`~medbalance.nets.attention.SimAM` in every basic block (seed 001 table 4).

    SimAM has no parameters: the network has exactly those of :class:`ResNet32`. Every
    argument is that of :class:`ResNet32` (``attention="simam"``).

    Example:
        >>> net = ResNet32SimAM(3, 10)
        >>> sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in ResNet32(3, 10).parameters())
        True
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        *,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 5,
        head: str = "linear",
        attention: str | None = "simam",
    ) -> None:
        super().__init__(
            in_channels, num_classes, widths=widths, blocks_per_stage=blocks_per_stage, head=head, attention=attention
        )


class ResNet32BiFormer(ResNet32):
    """ResNet-32 with BiFormer's bi-level routing attention in every basic block (seed 001 table 4).

    See :class:`~medbalance.nets.attention.BiLevelRoutingAttention` (4 x 4 regions, top 4,
    16 channels per head); every argument is that of :class:`ResNet32` (``attention="biformer"``).

    Example:
        >>> ResNet32BiFormer(1, 3, widths=(8, 16), blocks_per_stage=1)(torch.randn(2, 1, 16, 16)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        *,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 5,
        head: str = "linear",
        attention: str | None = "biformer",
    ) -> None:
        super().__init__(
            in_channels, num_classes, widths=widths, blocks_per_stage=blocks_per_stage, head=head, attention=attention
        )
