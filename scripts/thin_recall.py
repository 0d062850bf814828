"""Recall of thin and thick foreground structures in binary runs' test predictions.

Where does a segmentation lose its pixels? A truth pixel is *thin* when its Euclidean distance
to the background is at most ``--radius`` pixels (a vessel 1-2 px wide is thin throughout),
*thick* otherwise. For each run folder this prints the recall of both groups and the share of
predicted pixels outside the truth, pooled over the run's test images, read from the run's
own ``predictions/*.png`` and its test split's masks (pixels at ``ignore_index``, e.g. DRIVE's
outside of the field of view, are left out of every count). docs/results/dualpath.md uses it.

``--ablation`` takes dual-path runs: it predicts their test split with the run's model and scores
each of seed 000's ablation outputs (``MaC``, ``MaC+MiC``, the fused ``MaC+MiC+Fusion``, as in
:func:`medbalance.methods.dualpath.ablation_labels`) the same way, with its mean Dice over images.

Usage::

    python scripts/thin_recall.py RUN_DIR [RUN_DIR ...] [--radius 1] [--ablation]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from medbalance.config import load_config
from medbalance.data.build import build_splits


def structure_counts(truth: np.ndarray, pred: np.ndarray, *, radius: float = 1.0) -> dict[str, int]:
    """Thin and thick truth pixels, how many of each ``pred`` finds, and its pixels outside ``truth``.

    Example:
        >>> truth = np.zeros((9, 9), bool); truth[1, :] = True; truth[3:8, 2:7] = True  # a line, a 5 x 5 block
        >>> pred = np.zeros((9, 9), bool); pred[3:8, 2:7] = True; pred[0, 0] = True
        >>> c = structure_counts(truth, pred)
        >>> c["thin"], c["thin_found"], c["thick"], c["thick_found"], c["outside"]
        (25, 16, 9, 9, 1)
    """
    thin = truth & (ndimage.distance_transform_edt(truth) <= radius)
    thick = truth & ~thin
    return {
        "thin": int(thin.sum()),
        "thin_found": int((pred & thin).sum()),
        "thick": int(thick.sum()),
        "thick_found": int((pred & thick).sum()),
        "predicted": int(pred.sum()),
        "outside": int((pred & ~truth).sum()),
    }


class _Pooled:
    """Structure counts and per-image Dice of one prediction row over a test split (an image whose
    truth and prediction are both empty scores Dice 1)."""

    def __init__(self, test, radius: float) -> None:
        self.test, self.radius, self.dice = test, radius, []
        self.counts = dict.fromkeys(("thin", "thin_found", "thick", "thick_found", "predicted", "outside"), 0)

    def add(self, i: int, pred: np.ndarray, *, source: str) -> None:
        target = np.asarray(self.test.target[i])
        scored = target != self.test.ignore_index if self.test.ignore_index is not None else np.ones(target.shape, bool)
        truth, pred = (target > 0) & scored, (pred > 0) & scored
        if pred.shape != truth.shape:
            raise ValueError(f"'{source}': prediction of {self.test.names[i]} is {pred.shape}, its mask {truth.shape}")
        c = structure_counts(truth, pred, radius=self.radius)
        for key, value in c.items():
            self.counts[key] += value
        both = c["thin"] + c["thick"] + c["predicted"]  # |truth| + |pred|
        self.dice.append(2 * (c["thin_found"] + c["thick_found"]) / both if both else 1.0)

    def scores(self) -> dict[str, float]:
        c = self.counts
        ratio = lambda a, b: c[a] / c[b] if c[b] else float("nan")  # noqa: E731
        return {
            "dice": float(np.mean(self.dice)),
            "thin_recall": ratio("thin_found", "thin"),
            "thick_recall": ratio("thick_found", "thick"),
            "outside_share": ratio("outside", "predicted"),
            "thin_share": c["thin"] / max(c["thin"] + c["thick"], 1),
        }


def _test_split(run_dir: Path):
    return build_splits(load_config(run_dir / "config.yaml")).test  # the run's split; its masks at native size


def thin_recall(run_dir: Path, *, radius: float = 1.0) -> dict[str, float]:
    """Pooled thin / thick recall, the false-positive share and the mean Dice of a binary run's
    test predictions (its ``predictions/*.png``)."""
    test = _test_split(run_dir)
    pooled = _Pooled(test, radius)
    for i, name in enumerate(test.names):
        pooled.add(i, np.asarray(Image.open(run_dir / "predictions" / f"{Path(name).name}.png")), source=str(run_dir))
    return pooled.scores()


def ablation_recall(run_dir: Path, *, radius: float = 1.0) -> dict[str, dict[str, float]]:
    """:func:`thin_recall` of each ablation output of a dual-path run, predicted here on its test split
    (sliding window and normalisation as the run evaluates)."""
    import torch

    from medbalance.data.normalization import Normalization
    from medbalance.engine.run import is_native, load_run
    from medbalance.methods.dualpath import ABLATION_ROWS, ablation_labels

    run, test = load_run(run_dir), _test_split(run_dir)
    if run.cfg.method.name != "dualpath":
        raise ValueError(f"'{run_dir}' is a '{run.cfg.method.name}' run; --ablation expects a dual-path run")
    if is_native(run):
        test = test.with_normalization(Normalization.from_dict(run.meta["normalization"]))
    rows = {row: _Pooled(test, radius) for row in ABLATION_ROWS}

    def collect(batch: dict, logits: torch.Tensor, labels: torch.Tensor) -> None:
        for row, lab in ablation_labels(logits).items():
            for i, y in zip(batch["index"].tolist(), lab.cpu().numpy()):
                rows[row].add(i, y, source=str(run_dir))

    run.engine().evaluate(test, on_batch=collect)
    return {row: pooled.scores() for row, pooled in rows.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished binary run folders")
    parser.add_argument("--radius", type=float, default=1.0, help="thin: distance to the background <= this (px)")
    parser.add_argument("--ablation", action="store_true", help="dual-path runs: score each ablation output")
    args = parser.parse_args(argv)
    for run in args.runs:
        if args.ablation:
            rows = ablation_recall(run, radius=args.radius)
        else:
            rows = {None: thin_recall(run, radius=args.radius)}
        for row, scores in rows.items():
            head = {"run": str(run)} if row is None else {"run": str(run), "output": row}
            sys.stdout.write(json.dumps({**head, **{k: round(v, 4) for k, v in scores.items()}}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
