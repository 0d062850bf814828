"""The binary segmentation sets of ``../shared/data`` (``data: {kind: shared, name: ...}``).

Each loader is ``load_<name>(root, data) -> Splits`` with ``root`` the dataset's own folder
(see ``catalog.yaml`` and each ``PROVENANCE.md`` there). Targets are ``{0, 1}`` with 1 the
structure of interest, ``data.channels`` image channels (default: the source's). By default
(``data.size`` unset) images keep their native size and stored ``uint8`` intensities (the run
normalises them per dataset); with ``data.size`` they are resized to ``size x size`` (bilinear;
masks nearest) and scaled to [0, 1].

=====================  ====================================  ==================================
name                   foreground (label 1)                  split
=====================  ====================================  ==================================
drive                  vessel (``1st_manual`` > 0)           the source's 20 train / 20 test;
                                                             val carved from train (seeded)
isbi2012_em_membrane   membrane (label **0** in the files)   by slice index: train first, then
                                                             val, then test (adjacent slices
                                                             are alike, so no shuffling)
hc18_subset            fetal head (filled ellipse)           seeded, by subject: ``010_HC`` and
                                                             ``010_2HC`` stay together
kvasir_seg_mini        polyp (JPEG mask >= 128)              seeded (5 images: smoke tests only)
=====================  ====================================  ==================================
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medbalance.data.catalog import SharedData
from medbalance.data.datasets import ArrayDataset, Splits
from medbalance.data.folder import stack_images
from medbalance.data.io import image_stem, read_image, read_mask, read_raw
from medbalance.data.splits import split_groups, split_indices
from medbalance.errors import DataError

#: Label of pixels that are neither trained on nor scored (outside DRIVE's field of view).
IGNORE = 255

__all__ = ["load_drive", "load_isbi2012_em_membrane", "load_hc18_subset", "load_kvasir_seg_mini"]


def _files(folder: Path, pattern: str) -> list[Path]:
    files = sorted(folder.glob(pattern))
    if not files:
        raise DataError(f"no files matching '{pattern}' in '{folder}'")
    return files


def _dataset(
    image_paths: Sequence[Path],
    masks: Sequence[np.ndarray],
    mask_paths: Sequence[Path],
    data: SharedData,
    *,
    channels: int,
    foreground: str,
    extras: dict[str, tuple[list[np.ndarray], list[Path]]] | None = None,
    ignore: Sequence[np.ndarray] | None = None,
) -> ArrayDataset:
    """Native geometry without ``data.size``: ``uint8`` images, ``uint8`` labels, 255 where
    ``ignore`` (a mask per image) is 0; resized float images and int64 labels with it."""
    native = data.size is None
    if native:
        images = [read_raw(p, channels=data.channels or channels)[0] for p in image_paths]
    else:
        images = [read_image(p, channels=data.channels or channels) for p in image_paths]
    for image, mask, ip, mp in zip(images, masks, image_paths, mask_paths):
        if image.shape[1:] != mask.shape:
            raise DataError(f"image '{ip.name}' is {image.shape[1:]} but its mask '{mp.name}' is {mask.shape}")
    if native:
        labels = [m.astype(np.uint8) for m in masks]
        if ignore is not None:
            labels = [np.where(keep > 0, m, IGNORE).astype(np.uint8) for m, keep in zip(labels, ignore)]
        return ArrayDataset(
            images,
            labels,
            num_classes=2,
            class_names=("background", foreground),
            names=[image_stem(p) for p in image_paths],
            ignore_index=IGNORE if ignore is not None else None,
        )
    return ArrayDataset(
        stack_images(images, list(image_paths), data.size, labels=False),
        stack_images(list(masks), list(mask_paths), data.size, labels=True),
        num_classes=2,
        class_names=("background", foreground),
        names=[image_stem(p) for p in image_paths],
        extras={k: stack_images(a, p, data.size, labels=True) for k, (a, p) in (extras or {}).items()},
    )


def _splits(train: ArrayDataset, val: ArrayDataset, test: ArrayDataset, root: Path, split: str) -> Splits:
    names = {f"{k}_names": d.names for k, d in (("train", train), ("val", val), ("test", test))}
    return Splits(train, val, test if len(test) else None, info={"source": str(root), "split": split, **names})


def _binary(path: Path, *, invert: bool = False) -> np.ndarray:
    mask = read_mask(path)
    if mask.max(initial=0) > 1:
        raise DataError(f"mask '{path}' has labels up to {int(mask.max())}; expected a binary mask (0/255)")
    return (1 - mask) if invert else mask


def load_drive(root: Path, data: SharedData) -> Splits:
    """DRIVE retinal vessels: 20 training images (val carved from them), 20 test images.

    Foreground is the first observer's vessel map. At native size (no ``data.size``) pixels
    outside the field of view are labelled :data:`IGNORE` (255): losses, metrics and patch
    samplers leave them out, so scores are inside the field of view, the published protocol.
    With ``data.size`` the field-of-view mask rides along as the extra ``fov`` and scores are
    over the whole image. ``data.test_fraction`` is not used: the source's test set is the test
    split. Default 3 channels (RGB fundus photographs).
    """
    base = root / "DRIVE"
    parts = {}
    for split in ("training", "test"):
        images = _files(base / split / "images", f"*_{split}.tif")
        ids = [p.name.split("_")[0] for p in images]
        targets = [base / split / "1st_manual" / f"{i}_manual1.gif" for i in ids]
        fovs = [base / split / "mask" / f"{i}_{split}_mask.gif" for i in ids]
        for path in (*targets, *fovs):
            if not path.is_file():
                raise DataError(f"DRIVE file '{path}' is missing")
        fov = [read_mask(p) for p in fovs]
        parts[split] = _dataset(
            images,
            [_binary(p) for p in targets],
            targets,
            data,
            channels=3,
            foreground="vessel",
            extras={"fov": (fov, fovs)} if data.size is not None else None,
            ignore=fov if data.size is None else None,
        )
    train_idx, val_idx, _ = split_indices(len(parts["training"]), (data.val_fraction, 0.0), data.seed)
    train, val = parts["training"].subset(train_idx), parts["training"].subset(val_idx)
    return _splits(train, val, parts["test"], root, "DRIVE training (train + val, seeded) / DRIVE test (test)")


def load_isbi2012_em_membrane(root: Path, data: SharedData) -> Splits:
    """ISBI 2012 EM membranes: 30 slices of one stack, foreground = membrane (label 0 in the files).

    Split by slice index (no shuffling; ``data.seed`` is not used): the first slices train,
    the next ``val_fraction`` validate, the last ``test_fraction`` test.
    """
    images = sorted(
        _files(root / "train" / "image", "*.png"), key=lambda p: int(p.stem) if p.stem.isdigit() else p.stem
    )
    labels = [root / "train" / "label" / p.name for p in images]
    for path in labels:
        if not path.is_file():
            raise DataError(f"ISBI 2012 label '{path}' is missing")
    full = _dataset(images, [_binary(p, invert=True) for p in labels], labels, data, channels=1, foreground="membrane")
    n = len(full)
    n_val = max(1, round(n * data.val_fraction))
    n_test = max(1, round(n * data.test_fraction)) if data.test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise DataError(
            f"{n} slices cannot be split with val_fraction {data.val_fraction}, test_fraction {data.test_fraction}"
        )
    train, val, test = (
        full.subset(np.arange(a, b))
        for a, b in ((0, n - n_val - n_test), (n - n_val - n_test, n - n_test), (n - n_test, n))
    )
    return _splits(train, val, test, root, "by slice index: train, val, test in stack order")


def load_hc18_subset(root: Path, data: SharedData) -> Splits:
    """HC18 fetal head ultrasound (150 images, filled head masks), split by subject."""
    folder = root / "training_set"
    images = _files(folder, "*HC.png")
    masks = [folder / f"{p.stem}_Annotation.png" for p in images]
    for path in masks:
        if not path.is_file():
            raise DataError(f"HC18 annotation '{path}' is missing")
    full = _dataset(images, [_binary(p) for p in masks], masks, data, channels=1, foreground="head")
    subjects = [p.name.split("_")[0] for p in images]  # 010_HC, 010_2HC: one subject
    parts = split_groups(subjects, (data.val_fraction, data.test_fraction), data.seed)
    splits = _splits(*(full.subset(i) for i in parts), root, "seeded, by subject (leading number of the file name)")
    splits.info["groups"] = dict(zip(full.names, subjects))  # cross-validation folds keep a subject together too
    return splits


def load_kvasir_seg_mini(root: Path, data: SharedData) -> Splits:
    """Five Kvasir-SEG polyp images (JPEG masks thresholded at 128); smoke tests only.

    The images differ in size: at native size they are held one by one. Default 3 channels.
    """
    base = root / "Kvasir-SEG"
    images = _files(base / "images", "*.jpg")
    masks = [base / "masks" / p.name for p in images]
    for path in masks:
        if not path.is_file():
            raise DataError(f"Kvasir-SEG mask '{path}' is missing")
    full = _dataset(images, [_binary(p) for p in masks], masks, data, channels=3, foreground="polyp")
    parts = split_indices(len(full), (data.val_fraction, data.test_fraction), data.seed)
    return _splits(*(full.subset(i) for i in parts), root, "seeded")
