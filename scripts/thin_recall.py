"""Recall of thin and thick foreground structures in binary runs' test predictions.

Where does a segmentation lose its pixels? A truth pixel is *thin* when its Euclidean distance
to the background is at most ``--radius`` pixels (a vessel 1-2 px wide is thin throughout),
*thick* otherwise. For each run folder this prints the recall of both groups and the share of
predicted pixels outside the truth, pooled over the run's test images, read from the run's
own ``predictions/*.png`` and its test split's masks (pixels at ``ignore_index``, e.g. DRIVE's
outside of the field of view, are left out of every count). docs/results/dualpath.md uses it.

Usage::

    python scripts/thin_recall.py RUN_DIR [RUN_DIR ...] [--radius 1]
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


def thin_recall(run_dir: Path, *, radius: float = 1.0) -> dict[str, float]:
    """Pooled thin / thick recall and the false-positive share of a binary run's test predictions."""
    test = build_splits(load_config(run_dir / "config.yaml")).test  # the run's split; its masks at native size
    counts = dict.fromkeys(("thin", "thin_found", "thick", "thick_found", "predicted", "outside"), 0)
    for i, name in enumerate(test.names):
        target = np.asarray(test.target[i])
        scored = target != test.ignore_index if test.ignore_index is not None else np.ones(target.shape, bool)
        truth = (target > 0) & scored
        pred = (np.asarray(Image.open(run_dir / "predictions" / f"{Path(name).name}.png")) > 0) & scored
        if pred.shape != truth.shape:
            raise ValueError(f"'{run_dir}': prediction of {name} is {pred.shape}, its mask {truth.shape}")
        for key, value in structure_counts(truth, pred, radius=radius).items():
            counts[key] += value
    ratio = lambda a, b: counts[a] / counts[b] if counts[b] else float("nan")  # noqa: E731
    return {
        "thin_recall": ratio("thin_found", "thin"),
        "thick_recall": ratio("thick_found", "thick"),
        "outside_share": ratio("outside", "predicted"),
        "thin_share": counts["thin"] / max(counts["thin"] + counts["thick"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished binary run folders")
    parser.add_argument("--radius", type=float, default=1.0, help="thin: distance to the background <= this (px)")
    args = parser.parse_args(argv)
    for run in args.runs:
        scores = {k: round(v, 4) for k, v in thin_recall(run, radius=args.radius).items()}
        sys.stdout.write(json.dumps({"run": str(run), **scores}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
