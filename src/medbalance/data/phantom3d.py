"""A 3D CT-like phantom: a small lesion class inside an organ, at native geometry.

The embedded default for 3D (``data: {kind: phantom3d}``, built-in config ``phantom3d``):
volumes of different shapes with anisotropic spacing, stored as ``int16`` Hounsfield-like
values (so the run's ``auto`` normalisation picks the CT scheme) and ``uint8`` labels
0 background, 1 organ, 2 lesion. The lesion is a small, faintly hyperdense blob that covers
at most ~0.1% of the voxels, and a share of the volumes has none (an empty class for the
per-case table's empty-ground-truth policy): the rare-class setting that nnU-Net users report
collapsing.

Volume ``i`` depends only on ``(seed, i)``, so ``n`` volumes are a prefix of any larger set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PHANTOM3D_CLASSES", "PHANTOM3D_SPACING", "Phantom3D", "organ_lesion_phantoms"]

PHANTOM3D_CLASSES = ("background", "organ", "lesion")
#: Voxel spacing ``(dz, dy, dx)`` in mm: thick slices, as in clinical CT.
PHANTOM3D_SPACING = (2.5, 0.8, 0.8)
_STREAM = 4  # independent of the 2D phantoms' streams


@dataclass(frozen=True)
class Phantom3D:
    """Generated volumes: ``images`` int16 ``(1, D, H, W)`` each, ``target`` uint8 ``(D, H, W)``."""

    images: list[np.ndarray]
    target: list[np.ndarray]
    spacing: list[tuple[float, float, float]]


def organ_lesion_phantoms(
    n: int, *, shape: tuple[int, int, int] = (32, 64, 64), lesion_share: float = 0.8, seed: int = 0
) -> Phantom3D:
    """``n`` CT-like volumes whose shapes vary by up to ±25% around ``shape``.

    Args:
        n: number of volumes.
        shape: typical ``(D, H, W)``.
        lesion_share: probability that a volume has a lesion.
        seed: volume ``i`` is drawn from ``np.random.default_rng([seed, 4, i])``.

    Example:
        >>> ps = organ_lesion_phantoms(3, shape=(16, 32, 32))
        >>> ps.images[0].dtype, ps.images[0].ndim, int(ps.target[0].max()) <= 2
        (dtype('int16'), 4, True)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three sides >= 8, got {shape!r}")
    if not 0.0 <= lesion_share <= 1.0:
        raise ValueError(f"lesion_share must be in [0, 1], got {lesion_share}")
    images, targets = [], []
    for i in range(n):
        image, target = _volume(np.random.default_rng([seed, _STREAM, i]), shape, lesion_share)
        images.append(image)
        targets.append(target)
    return Phantom3D(images, targets, [PHANTOM3D_SPACING] * n)


def _volume(rng: np.random.Generator, shape: tuple[int, int, int], lesion_share: float):
    d, h, w = (max(8, int(round(s * rng.uniform(0.75, 1.25)))) for s in shape)
    sz, sy, sx = PHANTOM3D_SPACING
    z, y, x = np.meshgrid(
        (np.arange(d) - d / 2) * sz, (np.arange(h) - h / 2) * sy, (np.arange(w) - w / 2) * sx, indexing="ij"
    )
    extent = np.array([d * sz, h * sy, w * sx]) / 2
    hu = np.full((d, h, w), -1000.0)  # air
    body = (y / (0.95 * extent[1])) ** 2 + (x / (0.95 * extent[2])) ** 2 <= 1.0
    hu[body] = 0.0  # soft tissue
    target = np.zeros((d, h, w), np.uint8)
    # The organ: an ellipsoid with a wavy surface, off centre.
    centre = rng.uniform(-0.15, 0.15, 3) * extent
    radii = rng.uniform(0.45, 0.65, 3) * extent
    dz, dy, dx = z - centre[0], y - centre[1], x - centre[2]
    angle = np.arctan2(dy, dx)
    wobble = 1.0 + 0.08 * np.sin(3 * angle + rng.uniform(0, 2 * np.pi)) + 0.05 * np.sin(5 * angle)
    organ = (dz / radii[0]) ** 2 + (dy / radii[1]) ** 2 + (dx / radii[2]) ** 2 <= wobble**2
    organ &= body
    hu[organ] = 60.0
    target[organ] = 1
    if organ.any() and rng.random() < lesion_share:
        # A small blob at an organ voxel away from the surface: 2-3.5 mm radius.
        inner = np.argwhere(organ & ((dz / radii[0]) ** 2 + (dy / radii[1]) ** 2 + (dx / radii[2]) ** 2 <= 0.4))
        where = inner[rng.integers(len(inner))] if len(inner) else np.argwhere(organ)[0]
        r = rng.uniform(2.0, 3.5)
        lz, ly, lx = (z - z[tuple(where)]), (y - y[tuple(where)]), (x - x[tuple(where)])
        lesion = ((lz / max(r, sz / 2)) ** 2 + (ly / r) ** 2 + (lx / r) ** 2 <= 1.0) & organ
        hu[lesion] = 95.0  # faint: 35 HU above the organ, about two noise sigmas
        target[lesion] = 2
    hu += rng.normal(0.0, 18.0, hu.shape)
    return np.round(hu).astype(np.int16)[None], target
