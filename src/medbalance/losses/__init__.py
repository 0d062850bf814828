"""Losses for class-imbalanced segmentation and classification.

Every loss takes raw ``logits`` ``(N, C, *spatial)`` (``C == 1``: binary, sigmoid; ``C >= 2``:
softmax, channel 0 = background) and a target that is an integer label map or a one-hot /
soft float tensor of the logits' shape. Each module has a snake_case twin in
:mod:`medbalance.losses.functional`; :func:`build_loss` builds losses from configuration.
"""

from __future__ import annotations

from medbalance.losses import functional
from medbalance.losses.ce import CrossEntropyLoss
from medbalance.losses.compound import CompoundLoss, DiceCELoss
from medbalance.losses.dice import DiceLoss
from medbalance.losses.registry import LOSSES, build_loss

__all__ = [
    "CompoundLoss",
    "CrossEntropyLoss",
    "DiceCELoss",
    "DiceLoss",
    "LOSSES",
    "build_loss",
    "functional",
]
