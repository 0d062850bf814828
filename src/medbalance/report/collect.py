"""What a run report draws from the final evaluation pass but the run folder does not keep.

:class:`ReportSamples` is an ``on_batch(batch, logits, labels)`` callback of that pass
(:meth:`medbalance.engine.engine.Engine.evaluate`): it keeps a fixed-size random sample of
the foreground probabilities of a binary segmentation (for the precision-recall curve) and
the images of the worst-scoring cases of the per-case table (for their overlays), so the
report needs neither the data nor a second pass.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from medbalance.metrics.cases import CaseTable

__all__ = ["ReportSamples"]

Example = tuple[str, np.ndarray, np.ndarray, np.ndarray]


class ReportSamples:
    """Pixel probabilities (binary segmentation) and the worst cases of one evaluation pass.

    Call it after the callback that fills ``table`` for the same batch: a case's score is the
    mean Dice over its scored classes (NaN classes left out), as ``cases.csv`` has them.

    Args:
        table: the per-case table of the pass, or None (then no worst cases).
        names: the case names of the evaluated data (``table``'s case names), by index.
        example: ``example(index, labels)`` -> ``(name, image, target, labels)`` of a case as the
            report shows it (a volume reduced to one slice).
        binary: sample foreground probabilities (a one-channel sigmoid output).
        ignore_index: target value of unscored pixels, left out of the sample.
        max_pixels: size of the probability sample (a uniform random sample of all scored pixels).
        worst: how many of the lowest-scoring cases to keep.
        seed: seed of the sample.
    """

    def __init__(
        self,
        table: CaseTable | None,
        names: Sequence[str],
        example: Callable[[int, np.ndarray], Example],
        *,
        binary: bool,
        ignore_index: int | None = None,
        max_pixels: int = 200_000,
        worst: int = 3,
        seed: int = 0,
    ) -> None:
        self.table, self.names, self.example = table, [str(n) for n in names], example
        self.binary, self.ignore_index = binary, ignore_index
        self.max_pixels, self.worst = max_pixels, worst
        self._rng = np.random.default_rng(seed)
        # the sample: the pixels with the smallest random keys seen so far (a reservoir of fixed size)
        self._keys = np.empty(0)
        self._probs = np.empty(0, np.float32)
        self._target = np.empty(0, np.uint8)
        self._worst: list[tuple[float, int, Example]] = []  # heap of (-score, order, example), best on top
        self._seen = 0

    def __call__(self, batch: dict, logits: torch.Tensor, labels: torch.Tensor) -> None:
        target = batch["target"].cpu().numpy()
        if self.binary:
            probs = torch.sigmoid(logits[:, 0].float()).cpu().numpy().ravel()
            flat = target.ravel()
            keep = flat != self.ignore_index if self.ignore_index is not None else slice(None)
            self._add(probs[keep], flat[keep])
        if self.table is not None:
            indices = batch["index"].tolist()
            # the table's last rows are this batch's cases (its callback ran first)
            tail = self.table.rows[-len(indices) * len(self.table.classes) :]
            for i, y in zip(indices, labels.cpu().numpy()):
                name = self.names[i]
                dice = [r["dice"] for r in tail if r["case"] == name and not math.isnan(r["dice"])]
                if dice:  # else nothing was scored in this case (every class empty and skipped)
                    self._rank(-float(np.mean(dice)), i, y)

    def _add(self, probs: np.ndarray, target: np.ndarray) -> None:
        keys = np.concatenate([self._keys, self._rng.random(probs.size)])
        probs = np.concatenate([self._probs, probs.astype(np.float32)])
        target = np.concatenate([self._target, (target > 0).astype(np.uint8)])
        if keys.size > self.max_pixels:
            kept = np.argpartition(keys, self.max_pixels)[: self.max_pixels]
            keys, probs, target = keys[kept], probs[kept], target[kept]
        self._keys, self._probs, self._target = keys, probs, target

    def _rank(self, negative_score: float, index: int, labels: np.ndarray) -> None:
        self._seen += 1
        if len(self._worst) == self.worst and negative_score <= self._worst[0][0]:
            return  # better than every kept case: no image needed
        entry = (negative_score, self._seen, self.example(index, labels))
        if len(self._worst) < self.worst:
            heapq.heappush(self._worst, entry)
        else:
            heapq.heapreplace(self._worst, entry)

    @property
    def pixels(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(probabilities, truth)`` of the pixel sample, or None (not binary, or no pixel)."""
        return (self._probs, self._target) if self.binary and self._probs.size else None

    @property
    def worst_cases(self) -> list[tuple[Example, float]]:
        """The kept cases with their mean Dice, worst first."""
        return [(example, -neg) for neg, _, example in sorted(self._worst, key=lambda e: (-e[0], e[1]))]
