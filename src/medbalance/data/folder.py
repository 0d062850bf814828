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
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from medbalance.data.cache import cached_dataset
from medbalance.data.datasets import ArrayDataset, Splits
from medbalance.data.io import (
    DataError,
    check_layout,
    image_stem,
    list_images,
    read_image,
    read_labels,
    read_mask,
    read_raw,
)
from medbalance.data.longtail import longtail_splits
from medbalance.data.schema import Reader, _Grouping, _LongtailOption, _Segmentation, section_task
from medbalance.data.splits import split_cases
from medbalance.errors import ConfigError

__all__ = [
    "read_segmentation_folder",
    "read_classification_folder",
    "read_folder",
    "resize_images",
    "stack_images",
    "FolderData",
    "build_folder",
    "FOLDER",
]


class FolderData(_Segmentation, _Grouping, _LongtailOption):
    """A folder in the generic layout of SPEC section 8.

    Segmentation: ``images/`` and ``masks/`` matched by file stem. Classification: one
    sub-folder per class. ``val_fraction`` / ``test_fraction`` split it with ``seed`` (by
    subject when ``groups`` is set).
    """

    kind: Literal["folder"] = "folder"
    path: str
    task: Literal["segmentation", "classification"] = "segmentation"
    size: int | None = Field(None, ge=8)
    channels: Literal[1, 3] = 1
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    seed: int = 0
    cache: bool = True  # decoded + resized arrays memory-mapped from $MEDBALANCE_CACHE (medbalance.data.cache)


def resize_images(
    images: np.ndarray, size: int | tuple[int, int], *, labels: bool = False, dtype: np.dtype | None = None
) -> np.ndarray:
    """Resize ``(N, C, H, W)`` images (bilinear) or ``(N, H, W)`` label maps (nearest) to ``size``.

    ``size`` is a side (a square) or ``(H, W)``; ``dtype`` rounds the resized images back to an
    integer dtype (a native ``uint8`` image stays ``uint8``).
    """
    shape = (size, size) if isinstance(size, int) else tuple(size)
    t = torch.from_numpy(images[:, None] if labels else images).float()
    mode = "nearest" if labels else "bilinear"
    out = F.interpolate(t, size=shape, mode=mode, **({} if labels else {"align_corners": False}))
    if labels:
        return out[:, 0].round().long().numpy()
    if dtype is not None and np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return out.round().clamp(info.min, info.max).numpy().astype(dtype)
    return out.numpy()


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


def read_segmentation_folder(
    root: str | Path, *, channels: int = 1, size: int | None = None, ignore_index: int | None = None
) -> ArrayDataset:
    """Read ``root/images`` and ``root/masks`` into memory.

    With ``size=None`` (the default) every image keeps its own size, aspect ratio, stored
    intensities (``uint8`` stays ``uint8``; normalised per dataset by the run) and spacing:
    2D images and 3D volumes (NIfTI, MetaImage, NRRD) of different shapes may be mixed. With
    ``size`` every image is resized to ``size x size`` and scaled to [0, 1] (the older path).
    ``ignore_index`` is a mask label that is neither a class nor scored (left out of the
    class count).

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
    images, masks, mask_paths, spacing = [], [], [], []
    for path in image_paths:
        mask_path = masks_by_stem.get(image_stem(path))
        if mask_path is None:
            raise DataError(f"image '{path.name}' has no mask named '{image_stem(path)}.*' in '{mask_dir}'")
        if size is None:
            image, pixel = read_raw(path, channels=channels)
            mask = read_labels(mask_path)
            spacing.append(pixel)
        else:
            image, mask = read_image(path, channels=channels), read_mask(mask_path)
        if image.shape[1:] != mask.shape:
            raise DataError(f"image '{path.name}' is {image.shape[1:]} but its mask is {mask.shape}")
        images.append(image)
        masks.append(mask)
        mask_paths.append(mask_path)
    if size is None:
        dims = {m.ndim for m in masks}
        if len(dims) > 1:
            raise DataError(f"'{root}' mixes 2D images and 3D volumes; keep one kind per dataset")
        target, image_data = masks, images
    else:
        target = stack_images(masks, mask_paths, size, labels=True)
        image_data = stack_images(images, image_paths, size, labels=False)
    highest = max((int(np.max(m[m != ignore_index], initial=0)) for m in masks), default=0)
    num_classes = max(2, highest + 1)
    return ArrayDataset(
        image_data,
        target,
        num_classes=num_classes,
        class_names=["background"] + [f"class{i}" for i in range(1, num_classes)],
        names=[image_stem(p) for p in image_paths],
        spacing=spacing or None,
        ignore_index=ignore_index,
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


def read_folder(
    root: str | Path, *, task: str, channels: int = 1, size: int | None = None, ignore_index: int | None = None
) -> ArrayDataset:
    """Dispatch on ``task`` ("segmentation" or "classification")."""
    check_layout(root, task=task)
    if task == "segmentation":
        return read_segmentation_folder(root, channels=channels, size=size, ignore_index=ignore_index)
    return read_classification_folder(root, channels=channels, size=size)


def build_folder(data: FolderData) -> Splits:
    """Splits of a generic-layout folder (decoded once into the cache when ``data.cache``).

    Raises:
        ConfigError: ``data.imbalance_ratio`` on a segmentation folder.
    """
    settings = {
        "reader": "folder",
        "task": data.task,
        "channels": data.channels,
        "size": data.size,
        "ignore_index": data.ignore_index,
    }
    full = cached_dataset(
        data.path,
        settings,
        lambda: read_folder(
            data.path, task=data.task, channels=data.channels, size=data.size, ignore_index=data.ignore_index
        ),
        enabled=data.cache,
    )
    # a classification sample is named `<class>/<stem>`; groups work on the file stem
    stems = [name.rpartition("/")[2] for name in full.names]
    train_idx, val_idx, test_idx = split_cases(stems, data, root=data.path)
    splits = Splits(
        full.subset(train_idx),
        full.subset(val_idx),
        full.subset(test_idx) if len(test_idx) else None,
        info={
            "source": str(data.path),
            "train_names": [full.names[i] for i in train_idx],
            "val_names": [full.names[i] for i in val_idx],
            "test_names": [full.names[i] for i in test_idx],
        },
    )
    if data.imbalance_ratio is None:
        return splits
    if data.task != "classification":
        raise ConfigError(f"data.imbalance_ratio applies to classification folders; '{data.path}' is {data.task}")
    return longtail_splits(
        splits, data.imbalance_ratio, n_max=data.n_max, seed=data.seed, balanced_test=data.balanced_test
    )


FOLDER = Reader(FolderData, build_folder, section_task)
