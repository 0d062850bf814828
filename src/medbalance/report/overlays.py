"""Image helpers for prediction sets: colour-coded class maps, contour overlays, image grids, PNG writing.

The palette is fixed so that a class has the same colour in every figure, run and report.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image

from medbalance._atomic import replace_atomically

__all__ = ["PALETTE", "palette", "colorize", "to_rgb", "contours", "overlay_contours", "tile_grid", "save_png"]

# Background black, then well-separated colours (Sasha Trubetskoy's "20 distinct colours").
PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
    ],
    dtype=np.uint8,
)
PALETTE.setflags(write=False)

PRED_COLOUR = (255, 0, 0)
TARGET_COLOUR = (0, 255, 0)
BOTH_COLOUR = (255, 255, 0)


def palette(num_classes: int) -> np.ndarray:
    """The ``(num_classes, 3)`` uint8 colours of classes ``0 .. num_classes - 1``.

    The first ten are :data:`PALETTE`; further classes get golden-ratio hues, so the colour of
    a class never depends on how many classes there are.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    extra = [
        [round(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95)]
        for i in range(max(0, num_classes - len(PALETTE)))
    ]
    return np.concatenate([PALETTE, np.asarray(extra, np.uint8).reshape(-1, 3)])[:num_classes]


def colorize(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Colour-code a label map with the fixed palette.

    Args:
        labels: integer label map ``(H, W)`` with values in ``[0, num_classes)``.
        num_classes: number of classes, background (0, black) included.

    Returns:
        uint8 ``(H, W, 3)``.

    Example:
        >>> colorize(np.array([[0, 1], [2, 0]]), 3)[0, 1].tolist()
        [230, 25, 75]
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise ValueError(
            f"labels has label {bad} but num_classes is {num_classes} (expected values in [0, {num_classes}))"
        )
    return palette(num_classes)[labels]


def to_rgb(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Turn an image into uint8 ``(H, W, 3)``.

    Args:
        image: ``(H, W)``, ``(H, W, 1|3)`` or channel-first ``(C, H, W)``; uint8, or float
            in ``[0, 1]`` (clipped), as the datasets hold them. Channel-first images with
            neither 1 nor 3 channels (multi-modal MR, say) show their first channel.
        hw: the expected ``(H, W)``; it tells channel-first from channel-last.
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[1:] == tuple(hw):
        img = np.moveaxis(img if img.shape[0] in (1, 3) else img[:1], 0, -1)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[:2] != tuple(hw) or img.shape[2] not in (1, 3):
        raise ValueError(
            f"image must be (H, W), (H, W, 1|3) or (1|3, H, W) with H, W = {tuple(hw)}, got shape {img.shape}"
        )
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float64), 0.0, 1.0) * 255).round().astype(np.uint8)
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img


def contours(labels: np.ndarray) -> np.ndarray:
    """Boolean ``(H, W)``: foreground pixels with a 4-neighbour of another label.

    Touching objects of different classes each keep their own boundary; pixels on the image
    border count as boundary so that objects cut by the border are closed.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    padded = np.pad(labels, 1, mode="constant", constant_values=-1)
    centre = padded[1:-1, 1:-1]
    edge = (
        (padded[:-2, 1:-1] != centre)
        | (padded[2:, 1:-1] != centre)
        | (padded[1:-1, :-2] != centre)
        | (padded[1:-1, 2:] != centre)
    )
    return edge & (labels > 0)


def overlay_contours(image: np.ndarray, pred: np.ndarray, target: np.ndarray | None = None) -> np.ndarray:
    """Draw prediction contours (red) and ground-truth contours (green) on an image.

    Pixels on both contours are yellow. Contours follow every class boundary, so a pixel
    predicted as the wrong foreground class shows up as a red edge inside a green one.

    Args:
        image: ``(H, W)``, ``(H, W, 1|3)`` or ``(1|3, H, W)``, uint8 or float in ``[0, 1]``.
        pred: integer label map ``(H, W)``.
        target: integer label map ``(H, W)``, or None to draw the prediction only.

    Returns:
        uint8 ``(H, W, 3)``.

    Example:
        >>> pred = np.zeros((8, 8), int); pred[2:6, 2:6] = 1
        >>> overlay_contours(np.zeros((8, 8)), pred, pred)[2, 2].tolist()
        [255, 255, 0]
    """
    pred = np.asarray(pred)
    if pred.ndim != 2:
        raise ValueError(f"pred must be (H, W), got shape {pred.shape}")
    if target is not None and np.shape(target) != pred.shape:
        raise ValueError(f"target must have the shape of pred {pred.shape}, got {np.shape(target)}")
    out = to_rgb(image, pred.shape).copy()
    p = contours(pred)
    t = contours(target) if target is not None else np.zeros_like(p)
    out[t & ~p] = TARGET_COLOUR
    out[p & ~t] = PRED_COLOUR
    out[p & t] = BOTH_COLOUR
    return out


def tile_grid(rows: list[list[np.ndarray]], *, gap: int = 4, scale: int = 1) -> np.ndarray:
    """Tile equal-sized images into one RGB image, rows top to bottom, with white gaps between tiles.

    Args:
        rows: rows of uint8 tiles, each grey ``(H, W)`` or RGB ``(H, W, 3)``; every row holds the
            same number of tiles.
        gap: white pixels between neighbouring tiles (none around the border).
        scale: integer factor every tile is enlarged by (pixels repeated, so they stay sharp).

    Returns:
        uint8 ``(R (H s + gap) - gap, K (W s + gap) - gap, 3)`` for ``R`` rows of ``K`` tiles.

    Example:
        >>> tile_grid([[np.zeros((2, 3), np.uint8)] * 2] * 3, gap=1, scale=2).shape
        (14, 13, 3)
    """
    if not rows or not rows[0]:
        raise ValueError("rows is empty; expected at least one row of tiles")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    if isinstance(gap, bool) or not isinstance(gap, int) or gap < 0:
        raise ValueError(f"gap must be an int >= 0, got {gap!r}")
    hw = np.shape(rows[0][0])[:2]
    for r, row in enumerate(rows):
        if len(row) != len(rows[0]):
            raise ValueError(f"row {r} has {len(row)} tiles, row 0 has {len(rows[0])} (expected a full grid)")
        for t in row:
            if t.dtype != np.uint8 or t.shape[:2] != hw or not (t.ndim == 2 or (t.ndim == 3 and t.shape[2] == 3)):
                raise ValueError(f"tiles must be uint8 {hw} or {(*hw, 3)} like the first, got {t.dtype} {t.shape}")

    def join(parts: list[np.ndarray], axis: int) -> np.ndarray:
        white = np.full([gap if a == axis else n for a, n in enumerate(parts[0].shape)], 255, np.uint8)
        return np.concatenate([x for part in parts for x in (part, white)][:-1], axis=axis)

    rgb = [[t if t.ndim == 3 else np.repeat(t[..., None], 3, axis=2) for t in row] for row in rows]
    big = [[t.repeat(scale, axis=0).repeat(scale, axis=1) for t in row] for row in rgb]
    return join([join(row, 1) for row in big], 0)


def save_png(path: str | Path, array: np.ndarray) -> Path:
    """Write a uint8 ``(H, W)`` or ``(H, W, 3)`` array as PNG (parent folders created, atomic).

    Returns:
        The path written.
    """
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise TypeError(f"array must be uint8, got dtype {arr.dtype}")
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(f"array must be (H, W) or (H, W, 3|4), got shape {arr.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, lambda fh: Image.fromarray(arr).save(fh, format="PNG"))
    return path
