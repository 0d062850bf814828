"""Metrics from one confusion matrix: segmentation (Dice, IoU, precision, recall) and
classification (accuracy, macro precision / recall / F1); calibration (ECE, reliability bins);
ranking (AUROC, binary and one-vs-rest macro);
spacing-aware surface metrics (HD95, normalised surface Dice) of one case; a per-case
evaluation table (:class:`CaseTable`); one evaluation pass's result (:class:`Evaluation`: scores,
pooled and per-case confusion matrices) and its accumulator (:class:`Evaluator`).

See :mod:`medbalance.metrics.functional` for the definitions, including the empty-mask case, and
:mod:`medbalance.metrics.surface` for the surface metrics.
"""

from __future__ import annotations

from medbalance.metrics.calibration import calibration_bins, expected_calibration_error
from medbalance.metrics.cases import CaseTable
from medbalance.metrics.confusion import ConfusionMatrix
from medbalance.metrics.evaluation import Evaluation, Evaluator, RegionRecall, evaluate_labels
from medbalance.metrics.functional import classification_scores, confusion_matrix, segmentation_scores
from medbalance.metrics.ranking import auroc, binary_auroc, class_aurocs
from medbalance.metrics.surface import hausdorff_distance, normalized_surface_dice, surface_distances

__all__ = [
    "CaseTable",
    "ConfusionMatrix",
    "Evaluation",
    "Evaluator",
    "RegionRecall",
    "auroc",
    "binary_auroc",
    "calibration_bins",
    "class_aurocs",
    "classification_scores",
    "confusion_matrix",
    "evaluate_labels",
    "expected_calibration_error",
    "hausdorff_distance",
    "normalized_surface_dice",
    "segmentation_scores",
    "surface_distances",
]
