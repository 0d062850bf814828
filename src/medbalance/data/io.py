"""Reading and writing 2D images and masks (PNG, JPEG, TIFF, BMP, GIF and ``.npy``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medbalance.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "DataError", "read_image", "read_mask", "write_mask", "list_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".npy")


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _load(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"cannot read '{path}': not a valid .npy array ({exc})") from None
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I", "F", "L", "1", "P"):
                arr = np.asarray(img.convert("L") if img.mode == "1" else img)
            else:
                arr = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"cannot read image '{path}': {exc}") from None
    return arr


def read_image(path: str | Path, *, channels: int = 1) -> np.ndarray:
    """Read an image as float32 ``(channels, H, W)`` scaled to [0, 1].

    Integer images are divided by their dtype's maximum (255 for 8-bit); float ``.npy``
    arrays are taken as they are. Colour is converted to grey for ``channels=1`` and grey is
    repeated for ``channels=3``.
    """
    path = Path(path)
    arr = _load(path)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)  # channel-first .npy
    if arr.ndim not in (2, 3):
        raise DataError(f"image '{path}' has shape {arr.shape}; expected (H, W) or (H, W, C)")
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise DataError(f"image '{path}' contains NaN or infinite values")
    if arr.ndim == 2:
        arr = arr[..., None]
    if channels == 1 and arr.shape[-1] != 1:
        arr = arr[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        arr = arr[..., None]
    elif channels == 3 and arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(np.moveaxis(arr, -1, 0))


def read_mask(path: str | Path) -> np.ndarray:
    """Read a label mask as int64 ``(H, W)``.

    A mask whose only values are 0 and 255 is read as binary {0, 1}; JPEG masks (lossy) are
    thresholded at 128. Any other mask must hold class indices.
    """
    path = Path(path)
    arr = _load(path)
    if arr.ndim == 3:
        if not (arr == arr[..., :1]).all():
            raise DataError(f"mask '{path}' has colour channels that differ; expected a single-channel label map")
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise DataError(f"mask '{path}' has shape {arr.shape}; expected (H, W)")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            raise DataError(f"mask '{path}' holds non-integer values; expected class indices")
    if path.suffix.lower() in (".jpg", ".jpeg"):
        return (arr >= 128).astype(np.int64)
    values = np.unique(arr)
    if len(values) <= 2 and values.max(initial=0) == 255:
        return (arr == 255).astype(np.int64)
    return arr.astype(np.int64)


def write_mask(path: str | Path, labels: np.ndarray, *, binary: bool) -> None:
    """Write a label map as an 8-bit PNG: binary masks as 0/255, class maps as indices."""
    labels = np.asarray(labels)
    out = (labels > 0).astype(np.uint8) * 255 if binary else labels.astype(np.uint8)
    Image.fromarray(out).save(path)
