"""Metrics from one confusion matrix: segmentation (Dice, IoU, precision, recall) and
classification (accuracy, macro precision / recall / F1); calibration (ECE, reliability bins).

See :mod:`medbalance.metrics.functional` for the definitions, including the empty-mask case.
"""

from __future__ import annotations

from medbalance.metrics.calibration import calibration_bins, expected_calibration_error
from medbalance.metrics.confusion import ConfusionMatrix
from medbalance.metrics.functional import classification_scores, confusion_matrix, segmentation_scores

__all__ = [
    "ConfusionMatrix",
    "calibration_bins",
    "classification_scores",
    "confusion_matrix",
    "expected_calibration_error",
    "segmentation_scores",
]
