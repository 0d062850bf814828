"""Metrics from one confusion matrix: segmentation (Dice, IoU, precision, recall) and
classification (accuracy, macro precision / recall / F1); spacing-aware surface metrics (HD95,
normalised surface Dice) of one case; a per-case evaluation table (:class:`CaseTable`).

See :mod:`medbalance.metrics.functional` for the definitions, including the empty-mask case, and
:mod:`medbalance.metrics.surface` for the surface metrics.
"""

from __future__ import annotations

from medbalance.metrics.cases import CaseTable
from medbalance.metrics.confusion import ConfusionMatrix
from medbalance.metrics.functional import classification_scores, confusion_matrix, segmentation_scores
from medbalance.metrics.surface import hausdorff_distance, normalized_surface_dice, surface_distances

__all__ = [
    "CaseTable",
    "ConfusionMatrix",
    "classification_scores",
    "confusion_matrix",
    "hausdorff_distance",
    "normalized_surface_dice",
    "segmentation_scores",
    "surface_distances",
]
