"""Multi-class nuclei datasets of seed 002: CoNIC / Lizard, MoNuSAC, and the shared CoNSeP patches.

Layouts:

* **CoNIC** (Lizard patches): ``<path>/images.npy`` uint8 ``(N, 256, 256, 3)`` and
  ``<path>/labels.npy`` ``(N, 256, 256, 2)`` holding the instance map and the class map
  (0 background, 1 neutrophil, 2 epithelial, 3 lymphocyte, 4 plasma, 5 eosinophil,
  6 connective).
* **MoNuSAC**: ``<path>/<patient>/<image>.tif`` with ``<image>.xml`` beside it; each
  ``<Annotation>`` names its class in ``<Attribute Name=...>`` and holds ``<Region>`` polygons
  (``<Vertices><Vertex X= Y=/>``). :func:`convert_monusac` rasterises them once into PNG class
  maps (1 epithelial, 2 lymphocyte, 3 macrophage, 4 neutrophil) in a cache folder.
* **consep_patches256** (``../shared/data``): ``images/{train,test}/<tile>_<k>.jpg`` and
  ``seg_mask/{split}/<stem>.png`` (0 background, 1 other, 2 inflammatory, 3 epithelial,
  4 spindle); the official train/test tiles are kept and validation tiles are carved out of
  train (a tile's 16 patches touch each other, so they never straddle two splits).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw
from pydantic import Field

from medbalance.data.catalog import SharedData
from medbalance.data.datasets import ArrayDataset, Splits
from medbalance.data.folder import resize_images
from medbalance.data.io import list_images, read_image, read_labels, read_mask, read_raw
from medbalance.data.schema import Reader, _Segmentation, _Split
from medbalance.data.splits import split_groups, split_indices
from medbalance.errors import DataError

__all__ = [
    "CONIC_CLASSES",
    "MONUSAC_CLASSES",
    "CONSEP_CLASSES",
    "read_conic",
    "build_conic",
    "rasterize_monusac_xml",
    "convert_monusac",
    "read_monusac",
    "build_monusac",
    "load_consep",
    "ConicData",
    "MonusacData",
    "CONIC",
    "MONUSAC",
]

log = logging.getLogger(__name__)

CONIC_CLASSES = ("background", "neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil", "connective")
MONUSAC_CLASSES = ("background", "epithelial", "lymphocyte", "macrophage", "neutrophil")
CONSEP_CLASSES = ("background", "other", "inflammatory", "epithelial", "spindle")
# MoNuSAC's test set marks unsure regions "Ambiguous"; they stay background rather than fail the read.
_MONUSAC_SKIPPED = ("ambiguous",)


class ConicData(_Segmentation, _Split):
    """CoNIC / Lizard: ``images.npy`` (N, 256, 256, 3) and ``labels.npy`` (instance, class)."""

    kind: Literal["conic"] = "conic"
    path: str
    size: int | None = Field(None, ge=8)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)


class MonusacData(_Segmentation, _Split):
    """MoNuSAC: per-image XML polygons, rasterised once into ``cache``."""

    kind: Literal["monusac"] = "monusac"
    path: str
    cache: str | None = None
    size: int | None = Field(None, ge=8)  # None: native size (the seed resized to 512)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)


def _resized(images: np.ndarray, labels: np.ndarray, size: int | None) -> tuple[np.ndarray, np.ndarray]:
    if size is None or images.shape[-2:] == (size, size):
        return images, labels
    return resize_images(images, size), resize_images(labels, size, labels=True)


def _split(full: ArrayDataset, parts: Sequence[np.ndarray], info: dict) -> Splits:
    train, val, test = parts
    names = {f"{k}_names": [full.names[i] for i in idx] for k, idx in zip(("train", "val", "test"), parts)}
    return Splits(
        full.subset(train), full.subset(val), full.subset(test) if len(test) else None, info={**info, **names}
    )


# ----------------------------------------------------------------------------- CoNIC
def read_conic(path: str | Path, *, size: int | None = None) -> ArrayDataset:
    """Read CoNIC / Lizard arrays into one dataset (RGB images in [0, 1], class maps).

    Args:
        path: folder holding ``images.npy`` and ``labels.npy``.
        size: resize to ``size x size`` (bilinear images, nearest labels); None keeps 256.

    Returns:
        An :class:`ArrayDataset` with images ``(N, 3, H, W)``, targets ``(N, H, W)`` and the 7
        :data:`CONIC_CLASSES`; the instance map is not kept (semantic segmentation).

    Raises:
        DataError: a missing or unreadable file, or arrays of the wrong shape, dtype or values.
    """
    root = Path(path)
    arrays = {}
    for name in ("images", "labels"):
        file = root / f"{name}.npy"
        if not file.is_file():
            raise DataError(f"CoNIC folder '{root}' has no {name}.npy")
        try:
            arrays[name] = np.load(file, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"cannot read '{file}': not a valid .npy array ({exc})") from None
    images, labels = arrays["images"], arrays["labels"]
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataError(f"'{root / 'images.npy'}' is {images.dtype} {images.shape}; expected uint8 (N, H, W, 3)")
    if labels.shape != images.shape[:3] + (2,):
        raise DataError(
            f"'{root / 'labels.npy'}' has shape {labels.shape}; expected {images.shape[:3] + (2,)} "
            "(instance map, class map) to match images.npy"
        )
    target = np.asarray(labels[..., 1], dtype=np.int64)
    if target.size and (target.min() < 0 or target.max() >= len(CONIC_CLASSES)):
        raise DataError(
            f"'{root / 'labels.npy'}' has class {int(target.max())} in its class map "
            f"(expected values in [0, {len(CONIC_CLASSES)}))"
        )
    x = np.moveaxis(np.asarray(images, dtype=np.float32) / 255.0, -1, 1)
    x, target = _resized(x, target, size)
    return ArrayDataset(
        x,
        target,
        num_classes=len(CONIC_CLASSES),
        class_names=CONIC_CLASSES,
        names=[f"conic_{i:05d}" for i in range(len(x))],
    )


def build_conic(data: ConicData) -> Splits:
    """Seeded train / val / test split of CoNIC (``data.kind: conic``)."""
    full = read_conic(data.path, size=data.size)
    parts = split_indices(len(full), (data.val_fraction, data.test_fraction), data.seed)
    return _split(full, parts, {"source": "conic", "path": str(data.path)})


# ----------------------------------------------------------------------------- MoNuSAC
def rasterize_monusac_xml(xml_path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise one MoNuSAC annotation file into a class map.

    Polygons are filled with ``PIL.ImageDraw.polygon`` (outline included) in file order, so
    where two regions overlap the later one wins.

    Args:
        xml_path: the ``<image>.xml`` file.
        shape: ``(H, W)`` of its image.

    Returns:
        uint8 ``(H, W)`` with values in ``[0, 5)`` (:data:`MONUSAC_CLASSES`).

    Raises:
        DataError: unreadable XML, an unknown class name, or a vertex that is not a number.
    """
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"cannot read MoNuSAC annotation '{xml_path}': {exc}") from None
    lookup = {name: i for i, name in enumerate(MONUSAC_CLASSES) if i}
    mask = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(mask)
    for annotation in root.iter("Annotation"):
        attribute = annotation.find("./Attributes/Attribute")
        if attribute is None:
            attribute = annotation.find(".//Attribute")
        name = (attribute.get("Name", "") if attribute is not None else "").strip().lower()
        if name in _MONUSAC_SKIPPED:
            continue
        if name not in lookup:
            raise DataError(
                f"'{xml_path}' has an annotation of class '{name}'; expected one of: {', '.join(MONUSAC_CLASSES[1:])}"
            )
        for region in annotation.iter("Region"):
            try:
                points = [(float(v.get("X")), float(v.get("Y"))) for v in region.iter("Vertex")]
            except (TypeError, ValueError):
                raise DataError(f"'{xml_path}' has a vertex without numeric X and Y") from None
            if len(points) >= 3:
                draw.polygon(points, fill=lookup[name], outline=lookup[name])
    return np.asarray(mask)


def _monusac_pairs(root: Path) -> list[tuple[Path, Path]]:
    """``(image, xml)`` pairs of ``root/<patient>/``, sorted."""
    if not root.is_dir():
        raise DataError(f"MoNuSAC folder '{root}' does not exist")
    pairs = []
    for patient in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for image in list_images(patient):
            xml = image.with_suffix(".xml")
            if not xml.is_file():
                raise DataError(f"MoNuSAC image '{image}' has no annotation '{xml.name}' beside it")
            pairs.append((image, xml))
    if not pairs:
        raise DataError(f"MoNuSAC folder '{root}' holds no <patient>/<image>.tif with an .xml beside it")
    return pairs


def convert_monusac(root: str | Path, cache: str | Path | None = None) -> list[Path]:
    """Rasterise every MoNuSAC XML once into ``<cache>/<patient>/<image>.png``.

    A mask newer than its XML is kept, so a second call costs a directory listing.

    Args:
        root: the MoNuSAC folder (``<root>/<patient>/<image>.tif`` + ``.xml``).
        cache: where the class maps go; None: ``<root>/.medbalance_masks``.

    Returns:
        The mask paths, in the order of the images.
    """
    root = Path(root)
    cache = Path(cache) if cache is not None else root / ".medbalance_masks"
    out = []
    written = 0
    for image, xml in _monusac_pairs(root):
        mask_path = cache / image.parent.name / f"{image.stem}.png"
        if not mask_path.is_file() or mask_path.stat().st_mtime < xml.stat().st_mtime:
            try:
                with Image.open(image) as img:
                    width, height = img.size
            except (OSError, SyntaxError) as exc:
                raise DataError(f"cannot read image '{image}': {exc}") from None
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rasterize_monusac_xml(xml, (height, width))).save(mask_path)
            written += 1
        out.append(mask_path)
    if written:
        log.info("rasterised %d MoNuSAC annotation(s) into %s", written, cache)
    return out


def read_monusac(
    root: str | Path, *, cache: str | Path | None = None, size: int | None = 512
) -> tuple[ArrayDataset, list[str]]:
    """Read MoNuSAC (converting the XML annotations first if needed).

    Args:
        root: the MoNuSAC folder.
        cache: mask cache folder (see :func:`convert_monusac`).
        size: resize every image to ``size x size`` (the seed uses 512); None keeps every
            image at its native size with its stored ``uint8`` values (the images differ in size).

    Returns:
        The dataset (RGB images, :data:`MONUSAC_CLASSES`) and the patient of each image.
    """
    root = Path(root)
    pairs = _monusac_pairs(root)
    masks = convert_monusac(root, cache)
    images, targets = [], []
    for (image, _), mask in zip(pairs, masks):
        if size is None:  # native size, stored values
            x, y = read_raw(image, channels=3)[0][None], read_labels(mask)[None]
        else:
            x, y = read_image(image, channels=3)[None], read_mask(mask)[None]
        if x.shape[-2:] != y.shape[-2:]:
            raise DataError(f"mask '{mask}' is {y.shape[-2:]} but image '{image}' is {x.shape[-2:]}; delete the cache")
        x, y = _resized(x, y, size)
        images.append(x[0])
        targets.append(y[0])
    data = ArrayDataset(
        images,
        targets,
        num_classes=len(MONUSAC_CLASSES),
        class_names=MONUSAC_CLASSES,
        names=[image.stem for image, _ in pairs],
    )
    return data, [image.parent.name for image, _ in pairs]


def build_monusac(data: MonusacData) -> Splits:
    """Train / val / test split of MoNuSAC by patient (``data.kind: monusac``)."""
    full, patients = read_monusac(data.path, cache=data.cache, size=data.size)
    parts = split_groups(patients, (data.val_fraction, data.test_fraction), data.seed)
    return _split(full, parts, {"source": "monusac", "path": str(data.path)})


# ----------------------------------------------------------------------------- CoNSeP patches
def _read_pairs(image_dir: Path, mask_dir: Path, channels: int, size: int | None) -> ArrayDataset:
    paths = list_images(image_dir) if image_dir.is_dir() else []
    if not paths:
        raise DataError(f"'{image_dir}' holds no images")
    images, targets = [], []
    for path in paths:
        mask = mask_dir / f"{path.stem}.png"
        if not mask.is_file():
            raise DataError(f"image '{path}' has no class map '{mask}'")
        # native size: stored uint8 intensities, normalised per dataset by the run
        images.append(read_image(path, channels=channels) if size is not None else read_raw(path, channels=channels)[0])
        targets.append(read_mask(mask) if size is not None else read_labels(mask))
        if targets[-1].shape != images[-1].shape[-2:]:
            raise DataError(f"mask '{mask}' is {targets[-1].shape} but its image is {images[-1].shape[-2:]}")
    x, y = _resized(np.stack(images), np.stack(targets), size)
    if y.max(initial=0) >= len(CONSEP_CLASSES):
        raise DataError(f"'{mask_dir}' has class {int(y.max())} (expected values in [0, {len(CONSEP_CLASSES)}))")
    return ArrayDataset(
        x, y, num_classes=len(CONSEP_CLASSES), class_names=CONSEP_CLASSES, names=[p.stem for p in paths]
    )


def load_consep(root: Path, data: SharedData) -> Splits:
    """The shared ``consep_patches256`` set: official test split, validation tiles from train.

    ``data.val_fraction`` is the fraction of the 27 training *tiles* held out (seeded by
    ``data.seed``); ``data.test_fraction`` is unused (the official 14 test tiles are the test).
    """
    if data.imbalance_ratio is not None:
        raise DataError("consep_patches256 is a segmentation set; data.imbalance_ratio applies to classification")
    channels = data.channels or 3
    train_all = _read_pairs(root / "images" / "train", root / "seg_mask" / "train", channels, data.size)
    test = _read_pairs(root / "images" / "test", root / "seg_mask" / "test", channels, data.size)
    tiles = [name.rsplit("_", 1)[0] for name in train_all.names]
    train_idx, val_idx, _ = split_groups(tiles, (data.val_fraction, 0.0), data.seed)
    return Splits(
        train_all.subset(train_idx),
        train_all.subset(val_idx),
        test,
        info={
            "source": "consep_patches256",
            "split": "official test tiles; validation tiles carved from train",
            "val_tiles": sorted({tiles[i] for i in val_idx}),
            "train_names": [train_all.names[i] for i in train_idx],
            "val_names": [train_all.names[i] for i in val_idx],
            "test_names": list(test.names),
        },
    )


CONIC = Reader(ConicData, build_conic, "segmentation")
MONUSAC = Reader(MonusacData, build_monusac, "segmentation")
