"""Functional losses: the computational core of :mod:`medbalance.losses`.

Every function takes raw ``logits`` ``(N, C, *spatial)`` (``C == 1``: binary, sigmoid;
``C >= 2``: softmax, channel 0 = background) and a ``target`` that is either an integer label
map ``(N, *spatial)`` / ``(N, 1, *spatial)`` or a one-hot / soft float tensor of the logits'
shape (see :func:`medbalance.losses._target.format_target`). Losses are computed in float32,
also under autocast. Each function lives beside its ``nn.Module`` twin in a family module
(``ce``, ``focal``, ``dice``, ``region``, ``bootstrap``, ``balanced``, ``dynamic``,
``compound``); this module gathers them.
"""

from __future__ import annotations

from medbalance.losses.balanced import class_balanced_cross_entropy, ldam_loss, ldam_margins
from medbalance.losses.bootstrap import hard_pixel_fractions, online_bootstrapping_loss
from medbalance.losses.ce import cross_entropy, weighted_cross_entropy
from medbalance.losses.compound import compound_loss, dice_ce_loss, dice_focal_loss
from medbalance.losses.deep_supervision import deep_supervision_loss
from medbalance.losses.dice import dice_loss
from medbalance.losses.dynamic import dflce_loss, dflcsce_loss, dynamic_loss
from medbalance.losses.focal import focal_loss
from medbalance.losses.region import (
    exp_log_loss,
    focal_tversky_loss,
    generalized_dice_loss,
    iou_loss,
    sensitivity_specificity_loss,
    tversky_loss,
)
from medbalance.losses.smoothing import label_aware_epsilons, label_aware_smoothing

__all__ = [
    "label_aware_epsilons",
    "label_aware_smoothing",
    "class_balanced_cross_entropy",
    "compound_loss",
    "cross_entropy",
    "deep_supervision_loss",
    "dflce_loss",
    "dflcsce_loss",
    "dice_ce_loss",
    "dice_focal_loss",
    "dice_loss",
    "dynamic_loss",
    "exp_log_loss",
    "focal_loss",
    "focal_tversky_loss",
    "generalized_dice_loss",
    "hard_pixel_fractions",
    "iou_loss",
    "ldam_loss",
    "ldam_margins",
    "online_bootstrapping_loss",
    "sensitivity_specificity_loss",
    "tversky_loss",
    "weighted_cross_entropy",
]
