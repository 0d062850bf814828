"""HD95 of one case: :func:`medbalance.metrics.hausdorff_distance` vs MONAI's and vs no crop.

Workloads (CPU, numpy boolean masks, anisotropic spacing): a small ball (radius 10) in a
256^3 volume and a disk (radius 200) in a 4096^2 image -- the bounding-box crop's case --, a
large ball (radius 100) in 256^3 and a large disk (radius 1500) in 4096^2 (the KD-tree path),
and 512^2 noise whose borders fill the image (the distance-transform path). The prediction is
the target's shape shifted by a few pixels.

Compared with ``monai.metrics.compute_hausdorff_distance(percentile=95)`` (one-hot torch input,
MONAI crops to the foreground too) and, on the two small-object workloads, with the same
computation on the whole image (scipy erosion and distance transform without the crop).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage

from benchmarks.harness import Case, Group, Row, report, run_groups, start
from medbalance.metrics import hausdorff_distance

__all__ = ["run"]


def _ball(shape: tuple[int, ...], centre: tuple[int, ...], radius: int) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


def _workloads(quick: bool) -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, ...], bool]]:
    """``(name, pred, target, spacing, with_no_crop_baseline)``."""
    volume, image = (64, 512) if quick else (256, 4096)
    rng = np.random.default_rng(0)
    noise = 128 if quick else 512
    cases = []
    for side, radius, baseline in ((volume, 10, True), (volume, volume * 100 // 256, False)):
        centre = (side * 2 // 5, side // 2, side // 2)
        target = _ball((side,) * 3, centre, radius)
        pred = _ball((side,) * 3, (centre[0] + 2, centre[1] - 2, centre[2] + 1), radius)
        cases.append((f"{side}^3 ball r={radius}", pred, target, (2.0, 0.8, 0.8), baseline))
    for side, radius, baseline in ((image, image * 200 // 4096, True), (image, image * 1500 // 4096, False)):
        centre = (side // 2, side // 2 + 100 * side // 4096)
        target = _ball((side,) * 2, centre, radius)
        pred = _ball((side,) * 2, (centre[0] + 10, centre[1] - 10), radius)
        cases.append((f"{side}^2 disk r={radius}", pred, target, (0.5, 0.7), baseline))
    target, pred = rng.random((noise, noise)) < 0.5, rng.random((noise, noise)) < 0.5
    cases.append((f"{noise}^2 noise", pred, target, (0.5, 0.7), False))
    return cases


def _no_crop(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, ...]) -> float:
    """The same HD95 on the whole image: what the bounding-box crop saves."""
    borders = [m & ~ndimage.binary_erosion(m) for m in (pred, target)]
    distances = [
        ndimage.distance_transform_edt(~other, sampling=spacing)[own] for own, other in zip(borders, borders[::-1])
    ]
    return float(max(np.percentile(d, 95) for d in distances))


def _monai(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, ...]) -> Callable[[], object]:
    from monai.metrics import compute_hausdorff_distance

    p, t = torch.from_numpy(pred)[None, None], torch.from_numpy(target)[None, None]

    def call() -> object:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a deprecation warning per call
            return compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=list(spacing))

    return call


def _groups(quick: bool) -> tuple[list[Group], list[Group]]:
    versus_monai, versus_no_crop = [], []
    for name, pred, target, spacing, baseline in _workloads(quick):
        ours = Case(
            impl="medbalance",
            fn=lambda p=pred, t=target, s=spacing: hausdorff_distance(p, t, spacing=s),
            items=1,
            params=0,
        )
        extra = {"spacing": spacing, "hd95": hausdorff_distance(pred, target, spacing=spacing)}
        monai_case = Case(impl="monai compute_hausdorff_distance", fn=_monai(pred, target, spacing), items=1, params=0)
        versus_monai.append(Group(name=f"hd95 {name}", cases=[ours, monai_case], extra=extra))
        if baseline:
            no_crop = Case(
                impl="scipy EDT, whole image",
                fn=lambda p=pred, t=target, s=spacing: _no_crop(p, t, s),
                items=1,
                params=0,
            )
            versus_no_crop.append(Group(name=f"hd95 {name}", cases=[ours, no_crop], extra=extra))
    return versus_monai, versus_no_crop


def run(*, quick: bool = False, device: str = "cpu", channels_last: bool = False) -> list[Row]:
    """Time HD95 vs MONAI on every workload and vs no crop on the small-object ones (``quick``: 64^3, 512^2)."""
    del device, channels_last  # numpy / scipy on the CPU
    versus_monai, versus_no_crop = _groups(quick)
    rows = run_groups(versus_monai, warmup=1, repeats=3 if quick else 7)
    return rows + run_groups(versus_no_crop, warmup=0, repeats=2 if quick else 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks surface", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="64^3 and 512^2 (smoke run)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (MONAI's side)")
    args = parser.parse_args(argv)
    start(args.threads)
    sys.stdout.write(report(run(quick=args.quick)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
