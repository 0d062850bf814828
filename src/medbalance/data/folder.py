"""The generic folder layout of SPEC section 8.

Segmentation::

    root/images/a.jpg   root/masks/a.png     (matched by file stem, whatever the extensions)

Images and masks may be PNG, JPEG, TIFF, BMP, GIF, ``.npy``, MetaImage (``.mhd``/``.raw``,
``.mha``), NIfTI (``.nii``, ``.nii.gz``) or NRRD (see :mod:`medbalance.data.io`).

Classification::

    root/<class name>/*.png                  (one sub-folder per class, sorted by name)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medbalance.data.datasets import ArrayDataset
from medbalance.data.io import DataError, check_layout, image_stem, list_images, read_image, read_mask

__all__ = ["read_segmentation_folder", "read_classification_folder", "read_folder", "resize_images", "stack_images"]


def resize_images(images: np.ndarray, size: int, *, labels: bool = False) -> np.ndarray:
    """Resize ``(N, C, H, W)`` images (bilinear) or ``(N, H, W)`` label maps (nearest) to ``size``."""
    t = torch.from_numpy(images[:, None] if labels else images).float()
    mode = "nearest" if labels else "bilinear"
    out = F.interpolate(t, size=(size, size), mode=mode, **({} if labels else {"align_corners": False}))
    return (out[:, 0].round().long() if labels else out).numpy()


def stack_images(arrays: list[np.ndarray], paths: list[Path], size: int | None, *, labels: bool) -> np.ndarray:
    """Stack ``(C, H, W)`` images or ``(H, W)`` label maps read from ``paths``, resized to ``size``.

    Raises:
        DataError: with ``size=None``, when two files differ in size (naming both).
    """
    if size is not None:
        return np.concatenate([resize_images(a[None], size, labels=labels) for a in arrays])
    shape = arrays[0].shape
    for arr, path in zip(arrays, paths):
        if arr.shape != shape:
            raise DataError(
                f"'{path.name}' has shape {arr.shape[-2:]} but '{paths[0].name}' has {shape[-2:]}; "
                "set data.size to resize them to one size"
            )
    return np.stack(arrays)


def read_segmentation_folder(root: str | Path, *, channels: int = 1, size: int | None = None) -> ArrayDataset:
    """Read ``root/images`` and ``root/masks`` into memory.

    Raises:
        DataError: missing folder, no images, an image without a mask, sizes that differ
            between an image and its mask, or an unreadable file.
    """
    root = Path(root)
    img_dir, mask_dir = root / "images", root / "masks"
    for folder in (img_dir, mask_dir):
        if not folder.is_dir():
            raise DataError(f"'{root}' has no '{folder.name}/' folder (expected images/ and masks/)")
    image_paths = list_images(img_dir)
    if not image_paths:
        raise DataError(f"'{img_dir}' holds no images")
    masks_by_stem: dict[str, Path] = {}
    for p in list_images(mask_dir):
        if image_stem(p) in masks_by_stem:
            raise DataError(f"masks '{masks_by_stem[image_stem(p)].name}' and '{p.name}' have the same stem; keep one")
        masks_by_stem[image_stem(p)] = p
    images, masks, mask_paths = [], [], []
    for path in image_paths:
        mask_path = masks_by_stem.get(image_stem(path))
        if mask_path is None:
            raise DataError(f"image '{path.name}' has no mask named '{image_stem(path)}.*' in '{mask_dir}'")
        image, mask = read_image(path, channels=channels), read_mask(mask_path)
        if image.shape[1:] != mask.shape:
            raise DataError(f"image '{path.name}' is {image.shape[1:]} but its mask is {mask.shape}")
        images.append(image)
        masks.append(mask)
        mask_paths.append(mask_path)
    target = stack_images(masks, mask_paths, size, labels=True)
    num_classes = max(2, int(target.max()) + 1)
    return ArrayDataset(
        stack_images(images, image_paths, size, labels=False),
        target,
        num_classes=num_classes,
        class_names=["background"] + [f"class{i}" for i in range(1, num_classes)],
        names=[image_stem(p) for p in image_paths],
    )


def read_classification_folder(root: str | Path, *, channels: int = 1, size: int | None = None) -> ArrayDataset:
    """Read ``root/<class>/*`` into memory; classes are the sorted sub-folder names."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"'{root}' is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"'{root}' must hold one sub-folder per class (found {len(classes)})")
    images, labels, paths = [], [], []
    for label, name in enumerate(classes):
        for path in list_images(root / name):
            images.append(read_image(path, channels=channels))
            labels.append(label)
            paths.append(path)
    if not images:
        raise DataError(f"'{root}' holds no images in its class folders")
    return ArrayDataset(
        stack_images(images, paths, size, labels=False),
        np.asarray(labels, dtype=np.int64),
        num_classes=len(classes),
        class_names=classes,
        names=[f"{p.parent.name}/{image_stem(p)}" for p in paths],
    )


def read_folder(root: str | Path, *, task: str, channels: int = 1, size: int | None = None) -> ArrayDataset:
    """Dispatch on ``task`` ("segmentation" or "classification")."""
    check_layout(root, task=task)
    reader = read_segmentation_folder if task == "segmentation" else read_classification_folder
    return reader(root, channels=channels, size=size)
