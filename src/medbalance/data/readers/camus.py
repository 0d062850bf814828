"""CAMUS echocardiography (Leclerc et al., IEEE TMI 2019) in its published per-patient layout.

Both releases are read, MetaImage and NIfTI, with or without ``training/`` / ``testing/``
folders above the patients::

    <path>/[training|testing|database_nifti/]patient0001/patient0001_2CH_ED.mhd (+ .raw)
                                                          patient0001_2CH_ED_gt.mhd (+ .raw)
                                                          patient0001_4CH_ES.nii.gz
                                                          patient0001_4CH_ES_gt.nii.gz

Ground-truth labels: 0 background, 1 LV endocardium, 2 myocardium, 3 left atrium. The
target is the one structure ``data.label`` picks (binary, as seed 000 segments the LV
endocardium). Frames without a ground truth (the original testing patients) are skipped.
Patients are split seeded into train / val / test, a patient never in two splits.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from medbalance.data.datasets import ArrayDataset, Splits
from medbalance.data.folder import resize_images, stack_images
from medbalance.data.io import read_image, read_labels, read_mask, read_raw
from medbalance.data.schema import Reader, _Segmentation, _Split
from medbalance.data.splits import split_groups
from medbalance.errors import DataError

__all__ = ["CAMUS_LABELS", "build_camus", "find_patients", "CamusData", "CAMUS"]


class CamusData(_Segmentation, _Split):
    """CAMUS echocardiography in its published per-patient layout (seed 000); split by patient."""

    kind: Literal["camus"] = "camus"
    path: str
    views: list[Literal["2CH", "4CH"]] = ["2CH", "4CH"]
    phases: list[Literal["ED", "ES"]] = ["ED", "ES"]
    label: int = Field(1, ge=1, le=3)  # 1 LV endocardium, 2 myocardium, 3 left atrium
    size: int | None = Field(None, ge=8)  # None: native frames (aspect and spacing kept)
    scale: float = Field(1.0, gt=0.0, le=4.0)  # resample native frames by this factor (aspect kept)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)


log = logging.getLogger(__name__)

#: Label values of the CAMUS ground truth.
CAMUS_LABELS = {0: "background", 1: "LV endocardium", 2: "myocardium", 3: "left atrium"}

# The newer release (.nii.gz) first: when both exist they hold the same frames.
_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".mha")


def find_patients(root: Path) -> list[Path]:
    """Patient folders (``patient*``) at most two levels below ``root``, sorted by path."""
    found = [p for pattern in ("patient*", "*/patient*", "*/*/patient*") for p in root.glob(pattern) if p.is_dir()]
    return sorted(found)


def _frame(folder: Path, stem: str) -> Path | None:
    return next((folder / f"{stem}{s}" for s in _SUFFIXES if (folder / f"{stem}{s}").is_file()), None)


def build_camus(data: CamusData) -> Splits:
    """Read the ED/ES frames of ``data.views`` x ``data.phases`` and split them by patient.

    Returns:
        Splits of 1-channel images and binary targets (1 = ``CAMUS_LABELS[data.label]``);
        ``info`` names the patients of each split. Without ``data.size`` (the default) every
        frame keeps its aspect ratio, stored intensities and spacing, optionally resampled by
        ``data.scale``; with ``data.size`` frames are resized to ``size x size`` in ``[0, 1]``.

    Raises:
        DataError: missing folder, no patient folders, no frame with a ground truth, a
            ground truth whose size differs from its image, or an unreadable file.
    """
    root = Path(data.path)
    if not root.is_dir():
        raise DataError(f"CAMUS folder '{root}' does not exist")
    patients = find_patients(root)
    if not patients:
        raise DataError(f"'{root}' holds no 'patient*' folders (expected the CAMUS layout patientXXXX/...)")
    images, targets, image_paths, gt_paths, names, groups, spacing = [], [], [], [], [], [], []
    skipped, seen = 0, set()
    for folder in patients:
        if folder.name in seen:  # the same patient unpacked twice (both releases side by side)
            log.info("CAMUS: '%s' skipped, patient %s was read already", folder, folder.name)
            continue
        seen.add(folder.name)
        for view in data.views:
            for phase in data.phases:
                stem = f"{folder.name}_{view}_{phase}"
                image_path, gt_path = _frame(folder, stem), _frame(folder, f"{stem}_gt")
                if image_path is None or gt_path is None:
                    skipped += image_path is not None
                    continue
                if data.size is None:  # native geometry: stored intensities, spacing kept
                    image, pixel = read_raw(image_path)
                    gt = read_labels(gt_path)
                else:
                    image, gt, pixel = read_image(image_path), read_mask(gt_path), None
                if image.shape[1:] != gt.shape:
                    raise DataError(
                        f"CAMUS image '{image_path.name}' is {image.shape[1:]} but its ground truth is {gt.shape}"
                    )
                if gt.max(initial=0) > 3 or gt.min(initial=0) < 0:
                    raise DataError(f"CAMUS ground truth '{gt_path}' has label {int(gt.max())}; expected 0-3")
                target = (gt == data.label).astype(np.uint8 if data.size is None else np.int64)
                if data.size is None and data.scale != 1.0:  # resize now, keeping the aspect ratio
                    shape = tuple(max(8, round(n * data.scale)) for n in target.shape)
                    image = resize_images(image[None], shape, dtype=image.dtype)[0]
                    target = resize_images(target[None], shape, labels=True).astype(np.uint8)[0]
                    pixel = tuple(p / data.scale for p in pixel)
                if data.size is not None:  # resize now: 800 native frames would take gigabytes
                    image, target = (
                        resize_images(image[None], data.size)[0],
                        resize_images(target[None], data.size, labels=True)[0],
                    )
                images.append(image)
                targets.append(target)
                spacing.append(pixel)
                image_paths.append(image_path)
                gt_paths.append(gt_path)
                names.append(stem)
                groups.append(folder.name)
    if skipped:
        log.info("CAMUS: %d frames without a ground truth skipped (testing patients)", skipped)
    if not images:
        raise DataError(
            f"no CAMUS frame with a ground truth under '{root}' for views {data.views} and phases {data.phases} "
            "(expected patientXXXX/patientXXXX_2CH_ED.mhd or .nii.gz with a matching _gt file)"
        )
    native = data.size is None
    full = ArrayDataset(
        images if native else stack_images(images, image_paths, None, labels=False),
        targets if native else stack_images(targets, gt_paths, None, labels=True),
        num_classes=2,
        class_names=("background", CAMUS_LABELS[data.label]),
        names=names,
        spacing=spacing if native else None,
    )
    parts = split_groups(groups, (data.val_fraction, data.test_fraction), data.seed)
    train, val, test = (full.subset(p) for p in parts)
    info = {"source": str(root), "label": CAMUS_LABELS[data.label], "split": "seeded, by patient"}
    info["groups"] = dict(zip(names, groups))  # cross-validation folds keep a patient together too
    for key, part in zip(("train", "val", "test"), parts):
        info[f"{key}_patients"] = sorted({groups[i] for i in part})
    return Splits(train, val, test if len(test) else None, info=info)


CAMUS = Reader(CamusData, build_camus, "segmentation")
