"""Classification datasets of seed 001 in their published layouts: BreaKHis, ChestX-ray (Kermany)
and MedMNIST ``.npz`` files, plus the shared PneumoniaMNIST / BreastMNIST copies.

Every builder returns :class:`~medbalance.data.datasets.Splits` and, given an
``imbalance_ratio``, applies the long-tail protocol of SPEC section 6
(:func:`medbalance.data.longtail.longtail_splits`: a seeded long-tailed training subset and
balanced validation / test sets, the kept indices recorded in ``Splits.info``).

``protocol: seed001`` follows seed 001's section 4.2 instead (:func:`build_breakhis`,
:func:`build_chestxray`): its image geometry, its validation / test sets, and long-tailed
training subsets drawn from what is left (``Splits.info["protocol"]``). Those images are stored
as ``uint8`` (a fraction of float32's memory at 350 x 230) and read through a fixed ``x / 255``
normalisation, the values of the default path.
"""

from __future__ import annotations

import logging
import re
import tokenize
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from medbalance.data.catalog import SharedData
from medbalance.data.datasets import ArrayDataset, Splits
from medbalance.data.folder import resize_images
from medbalance.data.io import list_images, read_image
from medbalance.data.longtail import balanced_indices, longtail_indices, longtail_splits
from medbalance.data.normalization import Normalization
from medbalance.data.schema import Reader, _LongtailOption, _Protocol, _Split
from medbalance.data.splits import split_groups, split_indices
from medbalance.errors import DataError

# More classes than any MedMNIST task has (11), with room: beyond it a label is damage, not a class.
_MAX_CLASSES = 1000
# What numpy raises for a damaged .npz / .npy (a short file is EOFError, a bad header SyntaxError).
_NPZ_ERRORS = (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError, zipfile.BadZipFile)

__all__ = [
    "BREAKHIS_CLASSES",
    "CHESTXRAY_CLASSES",
    "MEDMNIST_CLASS_NAMES",
    "build_breakhis",
    "build_chestxray",
    "build_medmnist",
    "detect_layout",
    "find_breakhis_root",
    "find_chestxray_root",
    "load_medmnist_shared",
    "read_medmnist",
    "seed001_breakhis_shape",
    "seed001_chestxray",
    "seed001_eval_image",
    "BreakhisData",
    "ChestXrayData",
    "MedmnistData",
    "BREAKHIS",
    "CHESTXRAY",
    "MEDMNIST",
]

log = logging.getLogger(__name__)

#: BreaKHis tumour types as ``(benign|malignant, folder name)``, in label order.
BREAKHIS_CLASSES: tuple[tuple[str, str], ...] = (
    ("benign", "adenosis"),
    ("benign", "fibroadenoma"),
    ("benign", "phyllodes_tumor"),
    ("benign", "tubular_adenoma"),
    ("malignant", "ductal_carcinoma"),
    ("malignant", "lobular_carcinoma"),
    ("malignant", "mucinous_carcinoma"),
    ("malignant", "papillary_carcinoma"),
)
#: Kermany chest X-ray class folders, in label order.
CHESTXRAY_CLASSES = ("NORMAL", "PNEUMONIA")
#: Class names of the MedMNIST sets we know, by file-name prefix (MedMNIST ``INFO`` labels).
MEDMNIST_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "pneumoniamnist": ("normal", "pneumonia"),
    "breastmnist": ("malignant", "normal_or_benign"),
}
_MAGNIFICATIONS = ("40X", "100X", "200X", "400X")
# SOB_B_A-14-22549AB-40-001: tumour class, type, patient id, magnification, image number.
_BREAKHIS_NAME = re.compile(r"^SOB_[BM]_[A-Z]+-(?P<patient>\d+-[0-9A-Za-z]+)-(?P<mag>\d+)-\d+$")
_SEARCH_DEPTH = 4
# Seed 001 section 4.2: BreaKHis (700 x 460) is scaled to 350 x 230 (W x H) for 224 x 224 crops.
_SEED001_BREAKHIS_HW = (230, 350)
_SEED001_CROP = 224
# Section 4.2 calls the original BreaKHis training set (IR 11.59) its IR-10 set.
_SEED001_ORIGINAL_IR = 10.0


class BreakhisData(_LongtailOption, _Split, _Protocol):
    """BreaKHis folder tree (8 tumour types); split by patient (``protocol: seed001``: by image,
    80 per class for validation and test, random 224 x 224 training crops of 350 x 230 images)."""

    kind: Literal["breakhis"] = "breakhis"
    path: str
    magnification: Literal["all", "40X", "100X", "200X", "400X"] = "all"
    size: int = Field(64, ge=8)
    channels: Literal[1, 3] = 3
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)


class ChestXrayData(_LongtailOption, _Protocol):
    """Kermany chest X-ray layout ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}`` (``protocol:
    seed001``: 1/4 scale, centre crop, 1/2 scale to 224 x 224, the whole official test split)."""

    kind: Literal["chestxray"] = "chestxray"
    path: str
    size: int = Field(64, ge=8)
    channels: Literal[1, 3] = 1
    seed: int = 0


class MedmnistData(_LongtailOption):
    """A MedMNIST ``.npz`` file with its own train / val / test split."""

    kind: Literal["medmnist"] = "medmnist"
    path: str
    seed: int = 0


# ----------------------------------------------------------------------------- helpers
def _find_dir(path: Path, has: Sequence[str], what: str) -> Path:
    """``path`` or the shallowest folder below it (breadth-first, sorted) holding every name in ``has``."""
    if not path.is_dir():
        raise DataError(f"'{path}' is not a folder (expected a {what})")
    level = [path]
    for _ in range(_SEARCH_DEPTH + 1):
        for folder in level:
            if all((folder / name).is_dir() for name in has):
                return folder
        level = [
            c for folder in level for c in sorted(folder.iterdir()) if c.is_dir() and not c.name.startswith(("_", "."))
        ]
    raise DataError(f"'{path}' holds no folder with {', '.join(n + '/' for n in has)} (expected a {what})")


def _square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop of a ``(C, H, W)`` image, resized to ``(C, size, size)``."""
    h, w = image.shape[1:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[:, top : top + side, left : left + side]
    return crop if side == size else resize_images(np.ascontiguousarray(crop[None]), size)[0]


def _read_all(paths: Sequence[Path], *, channels: int, size: int) -> np.ndarray:
    # Resized one by one: a BreaKHis image is 700x460x3 floats, thousands would not fit in memory.
    return np.stack([_square(read_image(p, channels=channels), size) for p in paths]).astype(np.float32)


def _centre(image: np.ndarray, side: int) -> np.ndarray:
    """Centre ``side x side`` crop of a ``(C, H, W)`` image (sides at least ``side``)."""
    h, w = image.shape[1:]
    top, left = (h - side) // 2, (w - side) // 2
    return np.ascontiguousarray(image[:, top : top + side, left : left + side])


def _as_uint8(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A ``[0, 1]`` float ``(C, H, W)`` image resized (bilinear) to ``shape`` as 8-bit values."""
    return resize_images(image[None] * np.float32(255), shape, dtype=np.uint8)[0]


def _eight_bit(images: list[np.ndarray], target: np.ndarray, names: list[str], classes: Sequence[str]) -> ArrayDataset:
    channels = int(images[0].shape[0])
    return ArrayDataset(
        images,
        target,
        num_classes=len(classes),
        class_names=list(classes),
        names=names,
        normalization=Normalization("uint8", mean=(0.0,) * channels, std=(1.0,) * channels),
    )


def _seed001_info(train: np.ndarray, imbalance_ratio: float | None, *, num_classes: int, **extra) -> dict:
    """``Splits.info["protocol"]``: what the training set became, and which files evaluate."""
    counts = np.bincount(train, minlength=num_classes)
    return {
        "name": "seed001",
        "imbalance_ratio": imbalance_ratio,
        "imbalance_ratio_reached": float(counts.max() / counts[counts > 0].min()),
        "train_counts": counts.tolist(),
        **extra,
    }


def _take_eval(
    target: np.ndarray, per_class: int, seed: int, classes: Sequence[str], *, sets: int, where: str
) -> list[np.ndarray]:
    """``sets`` disjoint balanced index sets of ``per_class`` per class, then the rest (sorted indices)."""
    counts = np.bincount(target, minlength=len(classes))
    short = [f"{c} ({n})" for c, n in zip(classes, counts) if n <= sets * per_class]
    if short:
        raise DataError(
            f"{where}: protocol seed001 takes {sets} x {per_class} images per class (data.eval_per_class) "
            f"and trains on the rest, but class(es) {', '.join(short)} have no more"
        )
    left, out = np.arange(len(target)), []
    for k in range(sets):
        chosen = left[balanced_indices(target[left], num_classes=len(classes), per_class=per_class, seed=seed + k)]
        out.append(chosen)
        left = np.setdiff1d(left, chosen)
    return [*out, left]


def _train_subset(target: np.ndarray, imbalance_ratio: float | None, *, seed: int, classes: int) -> np.ndarray:
    if imbalance_ratio is None:
        return np.arange(len(target))
    return longtail_indices(target, imbalance_ratio, num_classes=classes, seed=seed)


# ----------------------------------------------------------------------------- BreaKHis
def seed001_breakhis_shape(size: int = _SEED001_CROP) -> tuple[int, int]:
    """``(H, W)`` of seed 001's scaled BreaKHis images for crops of ``size`` (230 x 350 at 224).

    Seed 001 section 4.2 scales the 700 x 460 images to 350 x 230 and samples 224 x 224; another
    ``size`` scales both alike.

    Example:
        >>> seed001_breakhis_shape(), seed001_breakhis_shape(112)
        ((230, 350), (115, 175))
    """
    return tuple(round(side * size / _SEED001_CROP) for side in _SEED001_BREAKHIS_HW)  # type: ignore[return-value]


def _breakhis_seed001(data: BreakhisData, root: Path, paths: list[Path], target: np.ndarray) -> Splits:
    """Seed 001 section 4.2 on BreaKHis: image-level balanced test and validation sets of
    ``eval_per_class`` (80) images per class, the rest (IR 11.59, the seed's "IR 10") for training,
    long-tailed by ``imbalance_ratio`` 50 / 100; training images 350 x 230 (cropped per batch by
    ``augment.crop``), evaluation images their centre ``size x size``."""
    classes = [t for _, t in BREAKHIS_CLASSES]
    test, val, pool = _take_eval(target, data.eval_per_class, data.seed, classes, sets=2, where=f"BreaKHis '{root}'")
    ratio = data.imbalance_ratio
    if ratio == _SEED001_ORIGINAL_IR:
        ratio = None  # the original class sizes
    train = pool[_train_subset(target[pool], ratio, seed=data.seed, classes=len(classes))]
    shape = seed001_breakhis_shape(data.size)

    def read(idx: np.ndarray, *, crop: bool) -> ArrayDataset:
        images = [_seed001_uint8(read_image(paths[i], channels=data.channels), data, crop=crop) for i in idx]
        return _eight_bit(images, target[idx], [paths[i].stem for i in idx], classes)

    info = {
        "source": str(root),
        "magnification": data.magnification,
        "protocol": _seed001_info(
            target[train],
            data.imbalance_ratio,
            num_classes=len(classes),
            train_shape=list(shape),
            eval_per_class=data.eval_per_class,
            val_files=[str(paths[i].relative_to(root)) for i in val],
            test_files=[str(paths[i].relative_to(root)) for i in test],
        ),
    }
    return Splits(read(train, crop=False), read(val, crop=True), read(test, crop=True), info=info)


def find_breakhis_root(path: str | Path) -> Path:
    """The folder holding ``benign/`` and ``malignant/``: ``path`` or one up to 4 levels below it.

    Accepts the BreaKHis tree from any level: ``BreaKHis_v1/``, ``histology_slides/``,
    ``histology_slides/breast/``.
    """
    return _find_dir(Path(path), ("benign", "malignant"), "BreaKHis tree with benign/ and malignant/")


def _breakhis_files(root: Path, magnification: str) -> tuple[list[Path], list[int], list[str]]:
    paths, labels, patients = [], [], []
    mags = _MAGNIFICATIONS if magnification == "all" else (magnification,)
    for label, (kind, tumour) in enumerate(BREAKHIS_CLASSES):
        type_dir = root / kind / "SOB" / tumour
        if not type_dir.is_dir():
            raise DataError(f"BreaKHis tree '{root}' lacks '{kind}/SOB/{tumour}/' (expected all 8 tumour types)")
        found = 0
        for patient_dir in sorted(p for p in type_dir.iterdir() if p.is_dir()):
            for mag in mags:
                if not (patient_dir / mag).is_dir():
                    continue
                for path in list_images(patient_dir / mag):
                    match = _BREAKHIS_NAME.match(path.stem)
                    # Patient id from the file name (14-22549AB); the folder name when it is not BreaKHis-like.
                    patients.append(match["patient"] if match else patient_dir.name)
                    paths.append(path)
                    labels.append(label)
                    found += 1
        if not found:
            raise DataError(f"BreaKHis tree '{root}' has no {magnification} images under '{kind}/SOB/{tumour}/'")
    return paths, labels, patients


def _split_patients(
    labels: np.ndarray, patients: Sequence[str], fractions: tuple[float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient-level split stratified by class: each patient (with the class of most of its images)
    is split among the patients of that class, so every class reaches every split."""
    votes: dict[str, Counter] = {}
    for y, patient in zip(labels.tolist(), patients):
        votes.setdefault(patient, Counter())[y] += 1
    patient_class = {p: max(sorted(v), key=v.__getitem__) for p, v in votes.items()}
    parts: list[set[str]] = [set(), set(), set()]
    for label in sorted(set(patient_class.values())):
        members = sorted(p for p, c in patient_class.items() if c == label)
        if len(members) < 3:
            raise DataError(
                f"class {BREAKHIS_CLASSES[label][1]} has {len(members)} patient(s); a patient-level "
                "train/val/test split needs at least 3"
            )
        for part, idx in zip(parts, split_groups(members, fractions, seed)):
            part.update(members[i] for i in idx)
    patients = np.asarray(patients)
    return tuple(np.flatnonzero(np.isin(patients, sorted(part))) for part in parts)  # type: ignore[return-value]


def build_breakhis(data: BreakhisData) -> Splits:
    """BreaKHis histology (8 tumour types), split by patient, optionally long-tailed.

    Layout: ``<root>/{benign,malignant}/SOB/<type>/<patient>/<40X|100X|200X|400X>/*.png``
    (``root`` found by :func:`find_breakhis_root`); file names such as
    ``SOB_B_A-14-22549AB-40-001.png`` carry the patient id ``14-22549AB``. Patients are split
    class by class with ``val_fraction`` / ``test_fraction``, so no patient sits in two
    splits. Images are centre-cropped to a square and resized to ``size``.

    ``protocol: seed001`` (seed 001 section 4.2) splits by image instead: ``eval_per_class`` (80)
    images per class for the test and for the validation set, the rest for training (the
    original class sizes, IR 11.59, are the seed's "IR 10": ``imbalance_ratio`` 10 keeps them,
    50 and 100 draw long-tailed subsets). Training images are scaled to 350 x 230
    (:func:`seed001_breakhis_shape`) for the random ``size x size`` (224) crops of
    ``augment.crop``, drawn per training batch; validation and test images are their centre crop.

    Raises:
        DataError: no BreaKHis tree, a tumour type missing or without images at the chosen
            magnification, a class with fewer than 3 patients, an unreadable image.
    """
    root = find_breakhis_root(data.path)
    paths, labels, patients = _breakhis_files(root, data.magnification)
    target = np.asarray(labels, dtype=np.int64)
    if data.protocol == "seed001":
        return _breakhis_seed001(data, root, paths, target)
    parts = _split_patients(target, patients, (data.val_fraction, data.test_fraction), data.seed)
    full = ArrayDataset(
        _read_all(paths, channels=data.channels, size=data.size),
        target,
        num_classes=len(BREAKHIS_CLASSES),
        class_names=[t for _, t in BREAKHIS_CLASSES],
        names=[p.stem for p in paths],
    )
    train, val, test = (full.subset(idx) for idx in parts)
    info = {
        "source": str(root),
        "magnification": data.magnification,
        "patients": {split: sorted({patients[i] for i in idx}) for split, idx in zip(("train", "val", "test"), parts)},
    }
    return longtail_splits(
        Splits(train, val, test if len(test) else None, info=info),
        data.imbalance_ratio,
        n_max=data.n_max,
        seed=data.seed,
        balanced_test=data.balanced_test,
    )


# ----------------------------------------------------------------------------- ChestX-ray
def find_chestxray_root(path: str | Path) -> Path:
    """The folder holding ``train/`` and ``test/`` (Kermany layout): ``path`` or one below it."""
    return _find_dir(Path(path), ("train", "test"), "chest X-ray folder with train/ and test/")


def _chestxray_files(folder: Path) -> tuple[list[Path], list[int]]:
    paths, labels = [], []
    for label, name in enumerate(CHESTXRAY_CLASSES):
        class_dir = folder / name
        if not class_dir.is_dir():
            raise DataError(f"'{folder}' has no '{name}/' folder (expected {', '.join(CHESTXRAY_CLASSES)})")
        found = list_images(class_dir)
        if not found:
            raise DataError(f"'{class_dir}' holds no images")
        paths += found
        labels += [label] * len(found)
    return paths, labels


def _chestxray_name(path: Path) -> str:
    return f"{path.parent.parent.name}/{path.parent.name}/{path.stem}"


def _read_chestxray_split(folder: Path, *, channels: int, size: int) -> ArrayDataset:
    paths, labels = _chestxray_files(folder)
    return ArrayDataset(
        _read_all(paths, channels=channels, size=size),
        np.asarray(labels, dtype=np.int64),
        num_classes=len(CHESTXRAY_CLASSES),
        class_names=[n.lower() for n in CHESTXRAY_CLASSES],
        names=[_chestxray_name(p) for p in paths],
    )


def seed001_chestxray(image: np.ndarray, size: int = _SEED001_CROP) -> np.ndarray:
    """Seed 001's chest X-ray geometry (section 4.2) of a ``[0, 1]`` float ``(C, H, W)`` image, as ``uint8``.

    The seed scales every image to 1/4, crops the centre and scales it by 1/2 to 224 x 224: the
    crop is therefore ``2 * size`` square (448), or the largest centred square of a smaller image.

    Example:
        >>> seed001_chestxray(np.ones((1, 2000, 1600), np.float32)).shape
        (1, 224, 224)
    """
    quarter = tuple(max(1, round(side / 4)) for side in image.shape[1:])
    small = _as_uint8(image, quarter)  # type: ignore[arg-type]
    square = _centre(small, min(2 * size, *quarter))
    return resize_images(square[None], size, dtype=np.uint8)[0]


def _chestxray_seed001(data: ChestXrayData, root: Path) -> Splits:
    """Seed 001 section 4.2 on ChestX-ray: the whole official test split (234 normal / 390
    pneumonia), a validation set of ``eval_per_class`` per class drawn from the training pool
    (``train/`` plus the 16 images of ``val/``), the rest for training, long-tailed by
    ``imbalance_ratio`` (10, 50, 100: the seed deletes training images for each)."""
    paths, labels = _chestxray_files(root / "train")
    if (root / "val").is_dir():
        more, more_labels = _chestxray_files(root / "val")
        paths, labels = paths + more, labels + more_labels
    target = np.asarray(labels, dtype=np.int64)
    classes = [n.lower() for n in CHESTXRAY_CLASSES]
    val, pool = _take_eval(target, data.eval_per_class, data.seed, classes, sets=1, where=f"'{root}'")
    train = pool[_train_subset(target[pool], data.imbalance_ratio, seed=data.seed, classes=2)]
    test_paths, test_labels = _chestxray_files(root / "test")

    def read(files: Sequence[Path], y: np.ndarray) -> ArrayDataset:
        images = [_seed001_uint8(read_image(p, channels=data.channels), data) for p in files]
        return _eight_bit(images, y, [_chestxray_name(p) for p in files], classes)

    info = {
        "source": str(root),
        "protocol": _seed001_info(
            target[train],
            data.imbalance_ratio,
            num_classes=len(classes),
            eval_per_class=data.eval_per_class,
            val_files=[_chestxray_name(paths[i]) for i in val],
        ),
    }
    return Splits(
        read([paths[i] for i in train], target[train]),
        read([paths[i] for i in val], target[val]),
        read(test_paths, np.asarray(test_labels, dtype=np.int64)),
        info=info,
    )


def build_chestxray(data: ChestXrayData) -> Splits:
    """Pediatric chest X-rays (Kermany et al. 2018): ``{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``.

    The source's split is kept (it is patient-level). Without a ``val/`` folder (the Mendeley
    release has only train / test) a seeded 10% of the training images validates. Images
    are centre-cropped to a square and resized to ``size`` (seed 001 crops the centre too).

    ``protocol: seed001`` (seed 001 section 4.2): :func:`seed001_chestxray` geometry, the whole
    official test split (not balanced), ``eval_per_class`` (80) images per class of the training
    pool for validation, ``imbalance_ratio`` applied to the remaining training images only.

    Raises:
        DataError: no such layout, a class folder missing or empty, an unreadable image, a class
            with no more than ``eval_per_class`` training images under ``seed001``.
    """
    root = find_chestxray_root(data.path)
    if data.protocol == "seed001":
        return _chestxray_seed001(data, root)
    read = {"channels": data.channels, "size": data.size}
    train = _read_chestxray_split(root / "train", **read)
    test = _read_chestxray_split(root / "test", **read)
    if (root / "val").is_dir():
        val = _read_chestxray_split(root / "val", **read)
    else:
        train_idx, val_idx, _ = split_indices(len(train), (0.1, 0.0), data.seed)
        train, val = train.subset(train_idx), train.subset(val_idx)
    splits = Splits(train, val, test, info={"source": str(root)})
    return longtail_splits(
        splits, data.imbalance_ratio, n_max=data.n_max, seed=data.seed, balanced_test=data.balanced_test
    )


def _seed001_uint8(image: np.ndarray, data: BreakhisData | ChestXrayData, *, crop: bool = True) -> np.ndarray:
    """Seed 001's geometry of a ``[0, 1]`` float ``(C, H, W)`` image as stored (``uint8``); BreaKHis
    without ``crop`` is a training image (350 x 230 at ``size`` 224), cropped per batch later."""
    if isinstance(data, ChestXrayData):
        return seed001_chestxray(image, data.size)
    scaled = _as_uint8(image, seed001_breakhis_shape(data.size))
    return _centre(scaled, data.size) if crop else scaled


def seed001_eval_image(image: np.ndarray, data: BreakhisData | ChestXrayData) -> np.ndarray:
    """A new ``[0, 1]`` float ``(C, H, W)`` image as ``protocol: seed001`` evaluates: the
    validation / test geometry (BreaKHis: 350 x 230 and its centre; ChestX-ray:
    :func:`seed001_chestxray`), float32 in ``[0, 1]`` (``medbalance predict`` uses it).

    Example:
        >>> data = BreakhisData(path="x", protocol="seed001")
        >>> seed001_eval_image(np.ones((3, 460, 700), np.float32), data).shape
        (3, 224, 224)
    """
    return _seed001_uint8(image, data).astype(np.float32) / np.float32(255)


# ----------------------------------------------------------------------------- MedMNIST
def _check_npz_members(path: Path, keys: Sequence[str]) -> None:
    """Refuse a member whose header claims more data than the archive holds.

    numpy allocates the array a member's header describes before reading it, so a damaged or
    crafted header (``shape (10**12,)``) would exhaust memory instead of failing.
    """
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    with zipfile.ZipFile(path) as archive:
        for key in keys:
            info = archive.getinfo(f"{key}.npy")
            with archive.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version not in readers:
                    raise DataError(f"'{path.name}' member '{key}' has .npy format version {version}")
                shape, _, dtype = readers[version](fh)
            claimed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            if dtype.hasobject or claimed > info.file_size:
                raise DataError(
                    f"'{path.name}' member '{key}' claims a {dtype} array of shape {shape} "
                    f"but holds {info.file_size} bytes"
                )


def read_medmnist(
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    size: int | None = None,
    channels: int | None = None,
) -> Splits:
    """A MedMNIST ``.npz`` (keys ``{train,val,test}_{images,labels}``) with its own split.

    Args:
        path: the ``.npz`` file.
        class_names: one per class (default: :data:`MEDMNIST_CLASS_NAMES` by file-name
            prefix, else ``class0``, ...).
        size: resize to ``size x size`` (``None``: keep 28 / 64 / ...).
        channels: 1 or 3 (``None``: as stored; grey is repeated for 3, colour averaged for 1).

    Returns:
        Splits with images float32 in ``[0, 1]``, ``(N, C, H, W)``.

    Raises:
        DataError: missing or unreadable file, a missing key, multi-label or 3-D data.
    """
    path = Path(path)
    try:
        arrays = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"MedMNIST file '{path}' does not exist") from None
    except _NPZ_ERRORS as exc:
        raise DataError(f"cannot read MedMNIST file '{path}': {exc or type(exc).__name__}") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise DataError(f"'{path.name}' is a single .npy array, not a MedMNIST .npz archive")
    with arrays:
        missing = [
            f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels") if f"{s}_{k}" not in arrays
        ]
        if missing:
            raise DataError(f"'{path.name}' lacks key(s) {', '.join(missing)} (expected the MedMNIST layout)")
        try:  # members are read lazily: a damaged one fails here
            _check_npz_members(path, [f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels")])
            raw = {s: (arrays[f"{s}_images"], arrays[f"{s}_labels"]) for s in ("train", "val", "test")}
        except _NPZ_ERRORS as exc:
            raise DataError(f"cannot read MedMNIST file '{path}': {exc or type(exc).__name__}") from None
    for split, (_, y) in raw.items():
        if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
            raise DataError(f"'{path.name}' {split}_labels has dtype {y.dtype}; expected integer class labels")
        if y.size and not 0 <= int(y.min()) <= int(y.max()) < _MAX_CLASSES:
            raise DataError(
                f"'{path.name}' {split}_labels holds {int(y.min())}..{int(y.max())}; "
                f"expected class indices in [0, {_MAX_CLASSES})"
            )
    sizes = [y.size for _, y in raw.values()]
    if not all(sizes):
        raise DataError(f"'{path.name}' has an empty split (labels per split: {sizes})")
    num_classes = max(int(y.max()) + 1 for _, y in raw.values())
    if class_names is None:
        prefix = next((k for k in MEDMNIST_CLASS_NAMES if path.stem.startswith(k)), None)
        class_names = MEDMNIST_CLASS_NAMES[prefix] if prefix else [f"class{i}" for i in range(num_classes)]
    if len(class_names) < num_classes:
        raise DataError(f"'{path.name}' has label {num_classes - 1} but only {len(class_names)} class names")
    num_classes = len(class_names)
    out = {}
    for split, (images, labels) in raw.items():
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1:
            raise DataError(f"'{path.name}' {split}_labels has shape {labels.shape}; multi-label data is not supported")
        if images.ndim == 4 and images.shape[-1] in (1, 3):
            images = np.moveaxis(images, -1, 1)
        elif images.ndim == 3:
            images = images[:, None]
        else:
            raise DataError(
                f"'{path.name}' {split}_images has shape {images.shape}; expected (N, H, W) or (N, H, W, C)"
            )
        scale = float(np.iinfo(images.dtype).max) if np.issubdtype(images.dtype, np.integer) else 1.0
        x = images.astype(np.float32) / scale
        if channels == 1 and x.shape[1] == 3:
            x = x.mean(axis=1, keepdims=True)
        elif channels == 3 and x.shape[1] == 1:
            x = np.repeat(x, 3, axis=1)
        if size is not None and x.shape[-2:] != (size, size):
            x = resize_images(x, size)
        out[split] = ArrayDataset(
            x,
            labels.astype(np.int64),
            num_classes=num_classes,
            class_names=class_names,
            names=[f"{split}_{i:05d}" for i in range(len(x))],
        )
    return Splits(out["train"], out["val"], out["test"], info={"source": str(path)})


def build_medmnist(data: MedmnistData) -> Splits:
    """A MedMNIST ``.npz`` with its own train / val / test split, optionally long-tailed."""
    splits = read_medmnist(data.path)
    return longtail_splits(
        splits, data.imbalance_ratio, n_max=data.n_max, seed=data.seed, balanced_test=data.balanced_test
    )


def load_medmnist_shared(root: Path, data: SharedData) -> Splits:
    """PneumoniaMNIST / BreastMNIST of ``../shared/data`` (source split; ``*_reconstructed.npz`` first).

    ``val_fraction`` / ``test_fraction`` do not apply: the MedMNIST split is kept.
    """
    candidates = [root / f"{root.name}_reconstructed.npz", root / f"{root.name}.npz"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DataError(f"'{root}' holds neither {candidates[0].name} nor {candidates[1].name}")
    splits = read_medmnist(
        path, class_names=MEDMNIST_CLASS_NAMES.get(root.name), size=data.size, channels=data.channels
    )
    splits.info["dataset"] = root.name
    return longtail_splits(
        splits, data.imbalance_ratio, n_max=data.n_max, seed=data.seed, balanced_test=data.balanced_test
    )


def detect_layout(path: str | Path) -> str | None:
    """The ``data.kind`` of a classification dataset at ``path``: ``"medmnist"`` (an ``.npz``),
    ``"breakhis"``, ``"chestxray"``, or ``None`` (e.g. a generic one-folder-per-class tree)."""
    path = Path(path)
    if path.suffix == ".npz":
        return "medmnist"
    for kind, find in (("breakhis", find_breakhis_root), ("chestxray", find_chestxray_root)):
        try:
            find(path)
        except DataError:
            continue
        return kind
    return None


BREAKHIS = Reader(BreakhisData, build_breakhis, "classification")
CHESTXRAY = Reader(ChestXrayData, build_chestxray, "classification")
MEDMNIST = Reader(MedmnistData, build_medmnist, "classification")
