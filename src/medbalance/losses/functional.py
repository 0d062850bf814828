"""Functional losses: the computational core of :mod:`medbalance.losses`.

Every function takes raw ``logits`` ``(N, C, *spatial)`` (``C == 1``: binary, sigmoid;
``C >= 2``: softmax, channel 0 = background) and a ``target`` that is either an integer label
map ``(N, *spatial)`` / ``(N, 1, *spatial)`` or a one-hot / soft float tensor of the logits'
shape (see :func:`medbalance.losses._utils.format_target`). Losses are computed in float32,
also under autocast. Each function lives beside its ``nn.Module`` twin in a family module
(``ce``, ``dice``, ``compound``, ...); this module gathers them.
"""

from __future__ import annotations

from medbalance.losses.ce import cross_entropy
from medbalance.losses.compound import compound_loss, dice_ce_loss
from medbalance.losses.dice import dice_loss

__all__ = ["compound_loss", "cross_entropy", "dice_ce_loss", "dice_loss"]
