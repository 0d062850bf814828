"""One evaluation pass, one result: the scores, the pooled confusion matrix and the per-case matrices.

The confusion statistics of a pass are counted here and only here (one :func:`confusion_matrix`
call per batch); whatever needs them afterwards (the run's ``metrics.json`` matrix, the loss
study's pooled tables, cross-validation's out-of-fold matrix) reads them from the
:class:`Evaluation`. Functional core: :func:`evaluate_labels` (labels in, an Evaluation out);
thin stateful accumulator: :class:`Evaluator` (batches in, an Evaluation out).

Extra scorers: a dataset may declare scores of its own (``ArrayDataset(..., scorers=...)``): each
scorer is a factory (e.g. a class) of an object with ``update(preds, batch)`` and
``compute() -> dict``; the evaluation pass makes a fresh one, feeds it every batch and merges its
dict into the scores. :class:`RegionRecall` is the intra-class phantom's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from medbalance.metrics.calibration import expected_calibration_error
from medbalance.metrics.functional import classification_scores, confusion_matrix, segmentation_scores
from medbalance.metrics.ranking import auroc

__all__ = ["Evaluation", "Evaluator", "RegionRecall", "Scorer", "evaluate_labels"]


class Scorer(Protocol):
    """An extra scorer of one evaluation pass (made fresh for each pass by its factory)."""

    def update(self, preds: Tensor, batch: dict) -> None: ...

    def compute(self) -> dict: ...


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation pass measured.

    Attributes:
        scores: the score dict (segmentation: :func:`segmentation_scores` of the per-case
            matrices, i.e. the mean over images; classification: :func:`classification_scores`
            of the pooled matrix, plus ``ece`` and ``auc`` (:func:`~medbalance.metrics.ranking.auroc`,
            NaN when the target holds one class) when probabilities were seen), with the extra
            scorers' keys.
        confusion: pooled int64 ``(C, C)`` matrix (rows: target, columns: prediction), counting
            pixels (segmentation) or samples (classification).
        cases: segmentation: int64 ``(N, C, C)``, one matrix per image in pass order;
            classification: ``None``.
    """

    scores: dict
    confusion: Tensor
    cases: Tensor | None = None

    @property
    def unit(self) -> str:
        """What :attr:`confusion` counts: ``"pixels"`` or ``"samples"``."""
        return "samples" if self.cases is None else "pixels"

    def pooled_scores(self) -> dict:
        """Dataset-level segmentation scores of :attr:`confusion` (every pixel pooled, not averaged per image)."""
        return segmentation_scores(self.confusion)


def evaluate_labels(
    preds: Tensor,
    target: Tensor,
    num_classes: int,
    *,
    ignore_index: int | None = None,
    per_image: bool = True,
    probs: Tensor | None = None,
) -> Evaluation:
    """The :class:`Evaluation` of a set of predicted labels (the functional core of :class:`Evaluator`).

    Args:
        preds: predicted labels ``(N, *spatial)`` (segmentation) or ``(N,)`` (classification).
        target: true labels, the shape of ``preds``; values in ``[0, C)`` or ``ignore_index``.
        num_classes: ``C``, background included.
        ignore_index: target value left out of every matrix.
        per_image: segmentation (per-case matrices, scores averaged over images); ``False``:
            classification (scores of the pooled matrix).
        probs: classification only: class probabilities ``(N, C)`` for the calibration error and the AUC.

    Example:
        >>> target = torch.tensor([[0, 1, 1], [0, 0, 0]])
        >>> ev = evaluate_labels(torch.tensor([[0, 1, 0], [0, 0, 0]]), target, 2)
        >>> ev.cases.shape, ev.confusion.tolist(), round(ev.scores["mean_dice_fg"], 4)
        (torch.Size([2, 2, 2]), [[4, 0], [1, 1]], 0.6667)
    """
    cm = confusion_matrix(preds, target, num_classes, ignore_index=ignore_index, per_image=per_image)
    if per_image:
        return _segmentation(cm)
    return _classification(cm, probs, target if probs is not None else None)


def _segmentation(cases: Tensor) -> Evaluation:
    return Evaluation(segmentation_scores(cases), cases.sum(0), cases)


def _classification(cm: Tensor, probs: Tensor | None, target: Tensor | None) -> Evaluation:
    scores = classification_scores(cm)
    if probs is not None and len(probs):
        scores["ece"] = expected_calibration_error(probs, target)
        scores["auc"] = auroc(probs, target)
    return Evaluation(scores, cm)


class Evaluator:
    """Accumulates one evaluation pass batch by batch (states on the CPU) into an :class:`Evaluation`.

    Args:
        num_classes: ``C``, background included.
        per_image: segmentation (one matrix per image); ``False``: classification (one pooled matrix).
        ignore_index: target value left out of the matrices.
        probabilities: classification: maps logits to class probabilities, for the calibration
            error (``ece``) and the AUC (``auc``) of the batches that come with logits.
        scorers: the dataset's extra scorer factories (module docstring).

    Example:
        >>> ev = Evaluator(2, per_image=True)
        >>> ev.update(torch.tensor([[0, 1, 0]]), {"target": torch.tensor([[0, 1, 1]])})
        >>> ev.update(torch.tensor([[0, 0, 0]]), {"target": torch.tensor([[0, 0, 0]])})
        >>> ev.compute().confusion.tolist()
        [[4, 0], [1, 1]]
    """

    def __init__(
        self,
        num_classes: int,
        *,
        per_image: bool,
        ignore_index: int | None = None,
        probabilities: Callable[[Tensor], Tensor] | None = None,
        scorers: Sequence[Callable[[], Scorer]] = (),
    ) -> None:
        self.num_classes, self.per_image, self.ignore_index = num_classes, per_image, ignore_index
        self.probabilities = probabilities
        self.scorers = [make() for make in scorers]
        self._cms: list[Tensor] = []
        self._probs: list[Tensor] = []
        self._target: list[Tensor] = []

    def update(self, preds: Tensor, batch: dict, logits: Tensor | None = None) -> None:
        """Add a batch: ``preds`` its labels, ``batch`` its sample dict (``target`` and the extras)."""
        target = batch["target"]
        cm = confusion_matrix(preds, target, self.num_classes, ignore_index=self.ignore_index, per_image=self.per_image)
        self._cms.append(cm.cpu())
        if self.probabilities is not None and logits is not None:
            self._probs.append(self.probabilities(logits).cpu())
            self._target.append(target.cpu())
        for scorer in self.scorers:
            scorer.update(preds, batch)

    def compute(self) -> Evaluation:
        """The :class:`Evaluation` of every batch added so far."""
        c = self.num_classes
        if self.per_image:
            cases = torch.cat(self._cms) if self._cms else torch.zeros(0, c, c, dtype=torch.long)
            out = _segmentation(cases)
        else:
            cm = torch.stack(self._cms).sum(0) if self._cms else torch.zeros(c, c, dtype=torch.long)
            probs = torch.cat(self._probs) if self._probs else None
            out = _classification(cm, probs, torch.cat(self._target) if self._target else None)
        for scorer in self.scorers:
            out.scores.update(scorer.compute())
        return out


class RegionRecall:
    """Recall of each sub-region of the foreground: ``recall_<name>``, the share of the pixels of
    region ``r`` (``batch["regions"] == r``, ``r`` = 1, 2, ... in ``names`` order) predicted as
    any foreground class; NaN for a region absent from the pass.

    The intra-class phantom's scorer (regions 1 = majority, 2 = minority, SPEC 5.7).

    Example:
        >>> scorer = RegionRecall()
        >>> scorer.update(torch.tensor([[1, 0, 1, 0]]), {"regions": torch.tensor([[1, 1, 2, 0]])})
        >>> scorer.compute()
        {'recall_majority': 0.5, 'recall_minority': 1.0}
    """

    def __init__(self, names: Sequence[str] = ("majority", "minority")) -> None:
        self.names = tuple(names)
        self.hits = torch.zeros(len(self.names), 2, dtype=torch.long)  # (region, [hit, total])

    def update(self, preds: Tensor, batch: dict) -> None:
        regions = batch["regions"]
        fg = (preds > 0).long()
        hits = torch.stack(
            [torch.stack([(fg * (regions == r)).sum(), (regions == r).sum()]) for r in range(1, len(self.names) + 1)]
        )
        self.hits += hits.cpu()

    def compute(self) -> dict:
        pairs = zip(self.names, self.hits.tolist())
        return {f"recall_{name}": hit / total if total else float("nan") for name, (hit, total) in pairs}
