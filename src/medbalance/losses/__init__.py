"""Losses for class-imbalanced segmentation and classification.

Every loss takes raw ``logits`` ``(N, C, *spatial)`` (``C == 1``: binary, sigmoid; ``C >= 2``:
softmax, channel 0 = background) and a target that is an integer label map or a one-hot /
soft float tensor of the logits' shape. Each module has a snake_case twin in
:mod:`medbalance.losses.functional`; :func:`build_loss` builds losses from configuration
(:data:`LOSSES` lists the names). ``docs/losses.md`` says which loss suits which problem.
"""

from __future__ import annotations

from medbalance.losses import functional
from medbalance.losses.balanced import ClassBalancedCELoss, LDAMLoss
from medbalance.losses.bootstrap import OnlineBootstrappingLoss
from medbalance.losses.ce import CrossEntropyLoss, WeightedCrossEntropyLoss
from medbalance.losses.compound import CompoundLoss, DiceCELoss, DiceFocalLoss
from medbalance.losses.deep_supervision import DeepSupervisionLoss
from medbalance.losses.dice import DiceLoss
from medbalance.losses.dynamic import DFLCELoss, DFLCSCELoss, DynamicLoss, set_progress
from medbalance.losses.focal import FocalLoss
from medbalance.losses.region import (
    ExpLogLoss,
    FocalTverskyLoss,
    GeneralizedDiceLoss,
    IoULoss,
    SensitivitySpecificityLoss,
    TverskyLoss,
)
from medbalance.losses.registry import LOSSES, MissingClassCounts, build_loss
from medbalance.losses.smoothing import LabelAwareSmoothingLoss
from medbalance.losses.weights import CLASS_WEIGHT_SCHEMES, class_weights, effective_number_weights

__all__ = [
    "CLASS_WEIGHT_SCHEMES",
    "LOSSES",
    "ClassBalancedCELoss",
    "CompoundLoss",
    "CrossEntropyLoss",
    "DFLCELoss",
    "DFLCSCELoss",
    "DeepSupervisionLoss",
    "DiceCELoss",
    "DiceFocalLoss",
    "DiceLoss",
    "DynamicLoss",
    "ExpLogLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "GeneralizedDiceLoss",
    "IoULoss",
    "LDAMLoss",
    "LabelAwareSmoothingLoss",
    "MissingClassCounts",
    "OnlineBootstrappingLoss",
    "SensitivitySpecificityLoss",
    "TverskyLoss",
    "WeightedCrossEntropyLoss",
    "build_loss",
    "class_weights",
    "effective_number_weights",
    "functional",
    "set_progress",
]
