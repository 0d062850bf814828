"""Geometry-preserving reading and writing for prediction: masks come back in the input's format.

:mod:`medbalance.data.io` reads *training* images (one 2D image per file, no geometry). A
prediction must instead be written where a viewer overlays it on its source: same format,
same size, and for the formats that carry it the same physical geometry (spacing, origin,
direction). This module reads any input that ``medbalance predict`` accepts as a stack of 2D
slices for a 2D network, and writes the label stack back in the input's format:

=====================  ==================================  ====================================
input                  read as                             mask written as
=====================  ==================================  ====================================
PNG, TIFF, BMP         one slice (Pillow)                  same format; binary 0/255, else
                                                           class indices
JPEG, GIF              one slice (Pillow)                  PNG (JPEG is lossy: it would blur
                                                           the labels)
``.npy``               one slice                           ``.npy`` uint8 class indices
NIfTI, MHD/MHA, NRRD   every slice of a 2D image or 3D     same format, class indices (binary
                       volume (SimpleITK)                  0/1), geometry kept
DICOM (``.dcm``)       every frame (SimpleITK)             DICOM, class indices, geometry and
                                                           patient / study identifiers kept
=====================  ==================================  ====================================

Intensities are scaled as at training time (:func:`medbalance.data.io.read_image`): 8-bit
data divided by 255, anything else min-max scaled per slice (a 2D network saw each training
image scaled on its own).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medbalance._paths import resolve_inside
from medbalance.data.io import (
    IMAGE_SUFFIXES,
    MEDICAL_SUFFIXES,
    channels_first,
    image_stem,
    image_suffix,
    read_image,
    read_itk,
    read_raw,
    write_mask,
)
from medbalance.errors import DataError

__all__ = [
    "PREDICT_SUFFIXES",
    "Geometry",
    "ImageInfo",
    "list_inputs",
    "mask_path",
    "claim_outputs",
    "read_slices",
    "read_native",
    "write_labels",
]

_ITK_SUFFIXES = (*MEDICAL_SUFFIXES, ".dcm")
#: Inputs ``medbalance predict`` accepts.
PREDICT_SUFFIXES = (*IMAGE_SUFFIXES, ".dcm")
# Formats whose masks would be lossy or palette-mangled: written as PNG.
_AS_PNG = (".jpg", ".jpeg", ".gif")
# DICOM tags copied to a mask so that it stays with its patient and study.
_DICOM_IDENTITY = ("0010|0010", "0010|0020", "0010|0030", "0010|0040", "0008|0020", "0020|000d", "0020|0052")


@dataclass(frozen=True)
class Geometry:
    """Physical placement of an image, in SimpleITK order (x, y[, z])."""

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`write_labels` needs to write a mask like its input.

    Attributes:
        path: the input file.
        suffix: its lower-case format suffix (``.nii.gz`` in two parts).
        shape: spatial shape as read, ``(H, W)`` for a 2D image, ``(D, H, W)`` for a volume.
        geometry: spacing / origin / direction of SimpleITK formats, ``None`` for raster images.
        dicom_tags: identity tags of a DICOM input (copied to its mask).
    """

    path: Path
    suffix: str
    shape: tuple[int, ...]
    geometry: Geometry | None = None
    dicom_tags: tuple[tuple[str, str], ...] = ()


def list_inputs(path: str | Path) -> list[Path]:
    """The files of ``path`` that ``predict`` accepts: the file itself, or a folder's files sorted.

    Raises:
        DataError: when ``path`` does not exist, is a file of another format, or a folder
            holding none.
    """
    path = Path(path)
    if path.is_file():
        if image_suffix(path) not in PREDICT_SUFFIXES:
            raise DataError(f"input '{path}' has format '{image_suffix(path)}'; expected one of {PREDICT_SUFFIXES}")
        return [path]
    if not path.is_dir():
        raise DataError(f"input '{path}' does not exist")
    files = sorted(
        p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and image_suffix(p) in PREDICT_SUFFIXES
    )
    if not files:
        raise DataError(f"'{path}' holds no images ({', '.join(PREDICT_SUFFIXES)})")
    return files


def _scale(slices: np.ndarray, path: Path) -> np.ndarray:
    """``(N, H, W[, C])`` raw values to float32 in [0, 1]: 8-bit / 255, else min-max per slice."""
    if slices.dtype == np.uint8:
        return slices.astype(np.float32) / 255.0
    out = slices.astype(np.float32)
    if not np.isfinite(out).all():
        raise DataError(f"image '{path}' contains NaN or infinite values")
    axes = tuple(range(1, out.ndim))
    low, high = out.min(axis=axes, keepdims=True), out.max(axis=axes, keepdims=True)
    return np.where(high > low, (out - low) / np.where(high > low, high - low, 1.0), 0.0).astype(np.float32)


def _channels(slices: np.ndarray, channels: int, path: Path) -> np.ndarray:
    """``(N, H, W[, C])`` to ``(N, channels, H, W)``: colour to grey or grey repeated, as ``read_image``."""
    if slices.ndim == 3:
        slices = slices[..., None]
    if channels == 1 and slices.shape[-1] != 1:
        slices = slices[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        slices = slices[..., None]
    elif channels == 3 and slices.shape[-1] == 1:
        raise _grey_into_colour(path)
    elif slices.shape[-1] != channels:
        raise DataError(f"image '{path}' has {slices.shape[-1]} channels; the run expects {channels}")
    return np.ascontiguousarray(np.moveaxis(slices, -1, 1))


def _grey_into_colour(path: Path) -> DataError:
    # A colour run fed a grey image would see three equal channels it never saw in training.
    return DataError(f"image '{path}' is grey (1 channel) but the run was trained on 3-channel (colour) images")


def _is_grey(path: Path) -> bool:
    """Whether a raster or ``.npy`` image has one channel, from its header (nothing decoded)."""
    try:
        if image_suffix(path) == ".npy":
            shape = np.load(path, allow_pickle=False, mmap_mode="r").shape
            ends = (shape[0], shape[-1]) if len(shape) == 3 else ()
            return len(shape) == 2 or (1 in ends and 3 not in ends)
        with Image.open(path) as img:  # a palette image is read as its indices: one channel
            return img.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "F", "P")
    except Exception:  # unreadable: read_image reports it in one line
        return False


def read_slices(path: str | Path, *, channels: int = 1) -> tuple[np.ndarray, ImageInfo]:
    """Read an input image or volume as a stack of 2D slices for a 2D network.

    Args:
        path: a file of one of :data:`PREDICT_SUFFIXES`.
        channels: the network's input channels (colour and grey are converted).

    Returns:
        float32 slices ``(N, channels, H, W)`` in [0, 1] (``N = 1`` for a 2D image, ``D`` for a
        ``(D, H, W)`` volume) and the :class:`ImageInfo` to write the mask with.

    Raises:
        DataError: unreadable file, unsupported format, more than three dimensions.
    """
    path = Path(path)
    suffix = image_suffix(path)
    if suffix in PREDICT_SUFFIXES and suffix not in _ITK_SUFFIXES:
        if channels == 3 and _is_grey(path):
            raise _grey_into_colour(path)
        image = read_image(path, channels=channels)
        return image[None], ImageInfo(path, suffix, tuple(image.shape[1:]))
    if suffix not in _ITK_SUFFIXES:
        raise DataError(f"input '{path}' has format '{suffix}'; expected one of {PREDICT_SUFFIXES}")
    import SimpleITK as sitk

    image = read_itk(path)
    if image.GetDimension() not in (2, 3):
        raise DataError(f"'{path}' has {image.GetDimension()} dimensions; expected a 2D image or a 3D volume")
    array = sitk.GetArrayFromImage(image)  # (H, W) or (D, H, W), plus a trailing axis for vector pixels
    volume = image.GetDimension() == 3
    slices = array if volume else array[None]
    geometry = Geometry(tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()))
    tags = tuple((k, image.GetMetaData(k)) for k in _DICOM_IDENTITY if image.HasMetaDataKey(k))
    shape = tuple(slices.shape[:3]) if volume else tuple(slices.shape[1:3])
    info = ImageInfo(path, suffix, shape, geometry, tags if suffix == ".dcm" else ())
    return _channels(_scale(slices, path), channels, path), info


def read_native(path: str | Path, *, channels: int = 1) -> tuple[np.ndarray, ImageInfo]:
    """Read an input at its native size with its stored intensities, for a native-geometry run.

    Returns:
        ``(channels, *spatial)`` in the file's dtype (a 2D image or a 3D volume; the run's
        normalisation is applied by the caller) and the :class:`ImageInfo` to write the mask with.

    Raises:
        DataError: unreadable file, unsupported format or shape.
    """
    path = Path(path)
    suffix = image_suffix(path)
    if suffix in PREDICT_SUFFIXES and suffix not in _ITK_SUFFIXES:
        image, _ = read_raw(path, channels=None)  # decoded once, converted below as training did
        if channels == 3 and image.shape[0] == 1:
            raise _grey_into_colour(path)
        if image.shape[0] != channels:
            image = channels_first(np.moveaxis(image, 0, -1), image.ndim - 1, channels, path)
        return image, ImageInfo(path, suffix, tuple(image.shape[1:]))
    if suffix not in _ITK_SUFFIXES:
        raise DataError(f"input '{path}' has format '{suffix}'; expected one of {PREDICT_SUFFIXES}")
    import SimpleITK as sitk

    itk = read_itk(path)
    if itk.GetDimension() not in (2, 3):
        raise DataError(f"'{path}' has {itk.GetDimension()} dimensions; expected a 2D image or a 3D volume")
    array = sitk.GetArrayFromImage(itk)
    geometry = Geometry(tuple(itk.GetSpacing()), tuple(itk.GetOrigin()), tuple(itk.GetDirection()))
    tags = tuple((k, itk.GetMetaData(k)) for k in _DICOM_IDENTITY if itk.HasMetaDataKey(k))
    if channels == 3 and itk.GetNumberOfComponentsPerPixel() == 1:
        raise _grey_into_colour(path)
    image = channels_first(array, itk.GetDimension(), channels, path)
    return image, ImageInfo(path, suffix, tuple(image.shape[1:]), geometry, tags if suffix == ".dcm" else ())


def mask_path(out_dir: str | Path, path: str | Path) -> Path:
    """Where the mask of input ``path`` goes in ``out_dir``: same stem and format (JPEG and GIF become PNG).

    Example:
        >>> mask_path("out", "scans/case1.nii.gz").as_posix(), mask_path("out", "a.JPG").as_posix()
        ('out/case1.nii.gz', 'out/a.png')
    """
    path = Path(path)
    suffix = image_suffix(path)
    return Path(out_dir) / f"{image_stem(path)}{'.png' if suffix in _AS_PNG else suffix}"


def claim_outputs(out_dir: str | Path, targets: list[Path], source: str | Path) -> None:
    """Create ``out_dir`` once sure that no output in ``targets`` exists or is named twice.

    Every output is named before any work, so a clash stops the command before it writes.

    Raises:
        DataError: an output exists already, or two inputs of ``source`` map to one output.
    """
    if Path(out_dir).is_symlink() and not Path(out_dir).exists():
        raise DataError(f"--out '{out_dir}' is a dangling symbolic link; name a real folder")
    clash = next((t for t in targets if os.path.lexists(t)), None)  # a dangling link too: it would write elsewhere
    if clash is not None:
        raise DataError(f"'{clash}' already exists; choose an empty --out folder (nothing is overwritten)")
    if len(set(targets)) != len(targets):
        raise DataError(f"two inputs in '{source}' share a file name stem; their masks would overwrite each other")
    for target in targets:
        resolve_inside(out_dir, target)
    Path(out_dir).mkdir(parents=True, exist_ok=True)


def write_labels(path: str | Path, labels: np.ndarray, info: ImageInfo, *, binary: bool) -> Path:
    """Write predicted labels like the input described by ``info``.

    Args:
        path: output file; its suffix picks the format (see :func:`mask_path`).
        labels: integer labels ``(N, H, W)`` as predicted for the slices of :func:`read_slices`.
        info: the input's :class:`ImageInfo`.
        binary: a binary task; raster masks are then written 0/255, SimpleITK masks 0/1.

    Returns:
        The path written.

    Raises:
        ValueError: if ``labels`` does not have the input's shape or does not fit in uint8.
    """
    path = Path(path)
    labels = np.asarray(labels)
    expected = info.shape if len(info.shape) == 3 else (1, *info.shape)
    if labels.shape == tuple(info.shape) and len(info.shape) == 2:
        labels = labels[None]  # one 2D image
    if labels.shape != expected:
        raise ValueError(f"labels must have shape {expected} (the input's slices), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"labels must lie in [0, 255] to be written as uint8, got [{labels.min()}, {labels.max()}]")
    path.parent.mkdir(parents=True, exist_ok=True)
    if info.geometry is None:
        if image_suffix(path) == ".npy":
            np.save(path, labels[0].astype(np.uint8))
        else:
            write_mask(path, labels[0], binary=binary)
        return path
    import SimpleITK as sitk

    array = labels.astype(np.uint8)
    mask = sitk.GetImageFromArray(array if len(info.shape) == 3 else array[0])
    mask.SetSpacing(info.geometry.spacing)
    mask.SetOrigin(info.geometry.origin)
    mask.SetDirection(info.geometry.direction)
    for key, value in info.dicom_tags:
        mask.SetMetaData(key, value)
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(path))
    if info.dicom_tags:
        mask.SetMetaData("0008|103e", "medbalance prediction")
        writer.KeepOriginalImageUIDOn()  # keeps the study UID copied above; series and instance UIDs stay new
    writer.Execute(mask)
    return path
