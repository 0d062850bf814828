"""Networks: segmentation (U-Net family, DeepLabv3+, CE-Net) and long-tail classification (CIFAR ResNet,
improved ResNet-32 with LSK modules, BBN, LSKBB, and seed 001 table 4's VGG16, ResNet-18, ResNet-32 + SimAM
and ResNet-32 + BiFormer).

All backbones are written here (no torchvision / timm). Build by name with
:func:`build_net`; :data:`NETS` is the registry it reads.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from medbalance._suggest import closest
from medbalance.nets.attention import BiLevelRoutingAttention, SimAM
from medbalance.nets.attention_unet import AttentionUNet
from medbalance.nets.bbn import BBN, LSKBB
from medbalance.nets.cenet import CENet
from medbalance.nets.classifiers import VGG16, ResNet18
from medbalance.nets.deeplab import DeepLabV3Plus
from medbalance.nets.lsk import LSKModule
from medbalance.nets.resnet import ResNet32, ResNet32BiFormer, ResNet32SimAM
from medbalance.nets.unet import UNet
from medbalance.nets.unet3plus import UNet3Plus
from medbalance.nets.unetpp import UNetPlusPlus

__all__ = [
    "CLASSIFICATION_NETS",
    "BBN",
    "LSKBB",
    "NETS",
    "SEGMENTATION_NETS",
    "AttentionUNet",
    "BiLevelRoutingAttention",
    "CENet",
    "DeepLabV3Plus",
    "LSKModule",
    "ResNet18",
    "ResNet32",
    "ResNet32BiFormer",
    "ResNet32SimAM",
    "SimAM",
    "UNet",
    "UNet3Plus",
    "UNetPlusPlus",
    "VGG16",
    "build_net",
]

#: Registry of network names accepted by :func:`build_net` (lower case).
NETS: dict[str, type[nn.Module]] = {
    "unet": UNet,
    "unetpp": UNetPlusPlus,
    "unet3plus": UNet3Plus,
    "attention_unet": AttentionUNet,
    "deeplabv3plus": DeepLabV3Plus,
    "cenet": CENet,
    "resnet32": ResNet32,
    "bbn": BBN,
    "lskbb": LSKBB,
    "vgg16": VGG16,
    "resnet18": ResNet18,
    "resnet32_simam": ResNet32SimAM,
    "resnet32_biformer": ResNet32BiFormer,
}
#: The :data:`NETS` names that classify images (``(N, C)`` logits).
CLASSIFICATION_NETS: tuple[str, ...] = (
    "resnet32",
    "bbn",
    "lskbb",
    "vgg16",
    "resnet18",
    "resnet32_simam",
    "resnet32_biformer",
)
#: The :data:`NETS` names that segment (``(N, C, *spatial)`` logits).
SEGMENTATION_NETS: tuple[str, ...] = tuple(name for name in NETS if name not in CLASSIFICATION_NETS)


def build_net(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the network registered under ``name`` in :data:`NETS`.

    Args:
        name: registry key, case-insensitive (e.g. ``"unet"``).
        **kwargs: passed to the network's constructor.

    Raises:
        ValueError: for an unknown name, listing the known ones and the closest match.

    Example:
        >>> build_net("unet", in_channels=1, num_classes=2, base_channels=8).num_classes
        2
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in NETS:
        known = ", ".join(sorted(NETS))
        match = closest(str(key), NETS)
        hint = f"; did you mean {match!r}?" if match else ""
        raise ValueError(f"unknown network {name!r}{hint} (known: {known})")
    return NETS[key](**kwargs)
