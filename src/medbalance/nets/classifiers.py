"""ImageNet-layout classifiers of seed 001's table 4: VGG16 (Simonyan and Zisserman 2015) and
ResNet-18 (He et al. 2016), written here (no torchvision)."""

from __future__ import annotations

import torch
from torch import nn

from medbalance.nets.backbones import ResNetEncoder
from medbalance.nets.blocks import ConvNormAct, init_kaiming_, require_choice, require_positive_int

__all__ = ["VGG16", "ResNet18"]

#: VGG16's convolution widths (configuration D) in units of ``base_channels / 64``; "M" a max-pool.
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
#: VGG16 heads: ``"pool"`` (global average pooling + one linear layer, the CIFAR variant) or
#: ``"imagenet"`` (7x7 adaptive pooling and the 4096-4096 fully connected layers of the paper).
VGG_HEADS = ("pool", "imagenet")


def _check_classifier_input(x: torch.Tensor, in_channels: int) -> None:
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"x must have shape (N, {in_channels}, H, W), got {tuple(x.shape)}")


class VGG16(nn.Module):
    """VGG16 (configuration D): 13 3x3 convolutions in five blocks, each closed by a 2x2 max-pool.

    Every convolution is followed by BatchNorm and ReLU (the ``vgg16_bn`` form: the from-scratch
    training of seed 001 needs it; its convolutions drop the bias the norm makes redundant).
    ``head="imagenet"`` is the paper's classifier, ``AdaptiveAvgPool(7) -> FC 4096 -> FC 4096 ->
    FC num_classes`` with ReLU and dropout 0.5: 138,361,768 parameters at ``base_channels=64``,
    3 input channels and 1000 classes (torchvision's ``vgg16_bn`` has 138,365,992, the 4,224
    more being the convolution biases). ``head="pool"`` (default) is the CIFAR variant used on
    small images, global average pooling and one linear layer: 14,718,912 + ``513 * C``
    parameters at width 64, so ``VGG16`` trains on the same CPU budget as the other rows.
    The max-pools round up (``ceil_mode``), so any size from 1 pixel works.

    Reference:
        K. Simonyan, A. Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
        Recognition", ICLR 2015, Table 1 (D); seed 001 table 4.

    Args:
        in_channels: image channels.
        num_classes: number of classes.
        base_channels: width of the first block (64 in the paper); every width scales with it,
            the hidden fully connected layers too (``64 * base_channels``, 4096 in the paper).
        head: ``"pool"`` or ``"imagenet"``.

    Attributes:
        feature_dim: size of the features the classifier reads.
        classifier: the ``(N, feature_dim) -> (N, num_classes)`` head.

    Shape:
        ``(N, in_channels, H, W) -> (N, num_classes)`` logits.

    Example:
        >>> VGG16(1, 3, base_channels=4)(torch.randn(2, 1, 32, 32)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self, in_channels: int = 3, num_classes: int = 10, *, base_channels: int = 64, head: str = "pool"
    ) -> None:
        super().__init__()
        self.in_channels = require_positive_int("in_channels", in_channels)
        self.num_classes = require_positive_int("num_classes", num_classes)
        require_positive_int("base_channels", base_channels)
        self.head = require_choice("head", head, VGG_HEADS)
        layers: list[nn.Module] = []
        c_in = in_channels
        for item in _VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
            else:
                c_out = item * base_channels // 64
                layers.append(ConvNormAct(c_in, c_out))
                c_in = c_out
        self.features = nn.Sequential(*layers)
        if head == "pool":
            self.pool: nn.Module = nn.AdaptiveAvgPool2d(1)
            self.feature_dim = c_in
            self.classifier: nn.Module = nn.Linear(c_in, num_classes)
        else:
            hidden = 64 * base_channels
            self.pool = nn.AdaptiveAvgPool2d(7)
            self.feature_dim = hidden
            self.fc = nn.Sequential(
                nn.Linear(c_in * 49, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(0.5),
                nn.Linear(hidden, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(0.5),
            )
            self.classifier = nn.Linear(hidden, num_classes)
        init_kaiming_(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The features the classifier reads, ``(N, in_channels, H, W) -> (N, feature_dim)``."""
        _check_classifier_input(x, self.in_channels)
        pooled = self.pool(self.features(x)).flatten(1)
        return pooled if self.head == "pool" else self.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))


class ResNet18(nn.Module):
    """ResNet-18 (ImageNet layout): 7x7 stride-2 stem, max-pool, four stages of two basic blocks,
    global average pooling and a linear classifier.

    The trunk is :class:`~medbalance.nets.backbones.ResNetEncoder` (``"resnet18"``): at
    ``base_channels=64`` and 3 input channels it has the 11,176,512 parameters of torchvision's
    ``resnet18`` without its classifier, 11,689,512 with the 1000-class one (the paper's
    11.7M; "11.2M" counts the trunk). Unlike the CIFAR :class:`~medbalance.nets.resnet.ResNet32`
    it reduces by 32, as seed 001 used it on 224 px BreaKHis crops; ``stem="small"`` (a 3x3
    stride-1 stem, no max-pool) reduces by 8, as MedMNIST v2's ResNet-18 (28) on 28 px images.

    Reference:
        K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition",
        CVPR 2016, Table 1; seed 001 table 4.

    Args:
        in_channels: image channels.
        num_classes: number of classes.
        base_channels: stem width (64 in the paper).
        stem: ``"imagenet"`` or ``"small"`` (:data:`~medbalance.nets.backbones.STEMS`).

    Attributes:
        feature_dim: size of the pooled features, ``8 * base_channels``.
        classifier: the ``(N, feature_dim) -> (N, num_classes)`` head.

    Shape:
        ``(N, in_channels, H, W) -> (N, num_classes)`` logits.

    Example:
        >>> ResNet18(1, 3, base_channels=8)(torch.randn(2, 1, 32, 32)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self, in_channels: int = 3, num_classes: int = 10, *, base_channels: int = 64, stem: str = "imagenet"
    ) -> None:
        super().__init__()
        self.in_channels = require_positive_int("in_channels", in_channels)
        self.num_classes = require_positive_int("num_classes", num_classes)
        self.encoder = ResNetEncoder(in_channels, layout="resnet18", base_channels=base_channels, stem=stem)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = self.encoder.out_channels[-1]
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled trunk features, ``(N, in_channels, H, W) -> (N, feature_dim)``."""
        _check_classifier_input(x, self.in_channels)
        return self.pool(self.encoder(x)[-1]).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))
