"""Reading and writing 2D images and masks.

Formats: PNG, JPEG, TIFF, BMP, GIF and ``.npy`` (Pillow / numpy), and the medical formats
MetaImage (``.mhd`` + ``.raw``, ``.mha``), NIfTI (``.nii``, ``.nii.gz``) and NRRD through
SimpleITK. A medical file must hold one 2D image (a volume with a single slice is accepted).
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import re
import struct
import sys
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from tokenize import TokenError

import numpy as np
from PIL import Image

from medbalance._memory import check_allocation
from medbalance.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "MEDICAL_SUFFIXES",
    "DataError",
    "image_stem",
    "image_suffix",
    "read_image",
    "read_itk",
    "check_header_data",
    "read_mask",
    "read_raw",
    "read_labels",
    "channels_first",
    "write_mask",
    "list_images",
    "check_layout",
]

#: Read through SimpleITK (``.raw`` is the data file of an ``.mhd`` header, never listed itself).
MEDICAL_SUFFIXES = (".mhd", ".mha", ".nii", ".nii.gz", ".nrrd")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".npy", *MEDICAL_SUFFIXES)


def image_suffix(path: Path) -> str:
    """The lower-case format suffix of ``path``, two-part for ``.nii.gz``.

    Example:
        >>> image_suffix(Path("patient0001_2CH_ED.nii.gz")), image_suffix(Path("a.PNG"))
        ('.nii.gz', '.png')
    """
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def image_stem(path: Path) -> str:
    """The file name without its format suffix (``a.nii.gz`` -> ``a``), what masks are matched by."""
    return path.name[: len(path.name) - len(image_suffix(path))]


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and image_suffix(p) in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def check_layout(folder: str | Path, *, task: str) -> None:
    """Refuse a folder whose layout belongs to the other task.

    A classification reader takes every sub-folder as a class, so a segmentation folder
    (``images/`` + ``masks/``) would silently become two classes named "images" and "masks".

    Raises:
        DataError: a classification folder holding ``images/`` and ``masks/``.
    """
    folder = Path(folder)
    if task == "classification" and (folder / "images").is_dir() and (folder / "masks").is_dir():
        raise DataError(
            f"data folder '{folder}' is a segmentation folder (images/ + masks/); a classification task needs "
            "one sub-folder per class"
        )


@contextlib.contextmanager
def _c_stderr_captured() -> Iterator[list[str]]:
    """Capture what C++ code prints to file descriptor 2 (ITK's MetaIO does), into the yielded list."""
    sys.stderr.flush()
    saved = os.dup(2)
    printed: list[str] = []
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield printed
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            printed.append(tmp.read().decode("utf-8", errors="replace"))


def sitk_reason(exc: RuntimeError) -> str:
    """The one useful line of a SimpleITK exception (its first line is a C++ source location)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    error = next((line for line in lines if "ERROR:" in line), lines[-1] if lines else "unreadable")
    error = error.split("ERROR:", 1)[-1].strip()
    # ITK's "Reason:" line is strerror of a stale errno ("No such file" for a truncated .raw): left out
    return re.sub(r"^\w+IO\(0x[0-9a-f]+\): ", "", error)  # "MetaImageIO(0x55d0...): "


# MetaIO element sizes in bytes (metaTypes.h: MET_LONG / MET_ULONG are 4 bytes).
_MET_SIZES = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG": 4,
    "MET_ULONG": 4,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}


def _data_file(header: Path, name: str, key: str) -> Path:
    """The data file a header names, refused unless it lies in the header's own folder."""
    if not name or "%" in name or name.upper() == "LIST" or " " in name.strip():
        raise DataError(f"'{header}': {key} '{name}' names several files; expected one data file beside it")
    folder = header.resolve().parent
    data = (header.parent / name).resolve()
    if Path(name).is_absolute() or data.parent != folder:
        raise DataError(f"'{header}': {key} '{name}' lies outside the header's folder '{header.parent}'; refused")
    return data


def _check_metaimage(path: Path) -> None:
    """An ``.mhd``/``.mha`` header whose data file stays beside it and holds exactly the bytes it announces."""
    fields: dict[str, str] = {}
    offset = 0
    with open(path, "rb") as fh:
        for raw in iter(lambda: fh.readline(4096), b""):
            offset += len(raw)
            key, sep, value = raw.decode("latin-1").partition("=")
            if not sep:
                continue
            fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile":
                break
            if offset > 1 << 16:
                break  # no header is this long; ITK will say what is wrong
    name = fields.get("ElementDataFile")
    try:
        dims = [int(v) for v in fields.get("DimSize", "").split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
        skip = int(fields.get("HeaderSize", "0"))
    except ValueError:
        raise DataError(f"'{path}': DimSize, ElementNumberOfChannels or HeaderSize is not a whole number") from None
    if name is None or not dims:
        return  # not a MetaImage header: ITK refuses it
    if any(d < 1 for d in dims) or channels < 1:
        raise DataError(f"'{path}': DimSize {dims} x {channels} channel(s); expected positive sizes")
    item = _MET_SIZES.get(fields.get("ElementType", ""))
    if item is None:
        return  # an element type ITK will name in its own error
    expected = math.prod(dims) * channels * item
    check_allocation(expected, what=f"'{path}' (DimSize {dims}, {fields['ElementType']})")
    if name.upper() == "LOCAL":
        data, have = path, path.stat().st_size - offset
    else:
        data = _data_file(path, name, "ElementDataFile")
        if not data.is_file():
            raise DataError(f"'{path}': its data file '{name}' does not exist beside it")
        have = data.stat().st_size
    if fields.get("CompressedData", "False").lower() == "true":
        return  # the compressed size says nothing about the pixels; ITK checks the stream
    have -= max(skip, 0)
    if have != expected and not (skip == -1 and have > expected):
        raise DataError(
            f"'{data}' holds {have} bytes of pixels but the header '{path.name}' announces {expected} "
            f"(DimSize {' x '.join(map(str, dims))}, {channels} channel(s) of {fields['ElementType']})"
        )


def _check_nrrd(path: Path) -> None:
    """An NRRD whose detached data file (``data file:``) stays beside the header."""
    with open(path, "rb") as fh:
        for raw in iter(lambda: fh.readline(4096), b""):
            line = raw.decode("latin-1").strip()
            if not line:
                return  # end of the header: the data is attached
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() in ("data file", "datafile"):
                _data_file(path, value.strip(), "data file")
                return


def _nifti_needs(header: bytes) -> tuple[int, int] | None:
    """``(vox_offset, data bytes)`` a NIfTI-1/2 header announces, or ``None`` if it is not one."""
    for order in ("<", ">"):
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            dim = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            dim = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
            break
    else:
        return None
    if not 1 <= dim[0] <= 7 or any(d < 1 for d in dim[1 : dim[0] + 1]) or bitpix <= 0:
        return None  # ITK says what is wrong with such a header
    return offset, math.prod(dim[1 : dim[0] + 1]) * bitpix // 8


def _check_nifti(path: Path) -> None:
    """A ``.nii``/``.nii.gz`` that holds every voxel its header announces (a truncated file is refused)."""
    opener = gzip.open if image_suffix(path) == ".nii.gz" else open
    try:
        with opener(path, "rb") as fh:
            header = fh.read(540)
            needs = _nifti_needs(header)
            if needs is None:
                return
            offset, size = needs
            check_allocation(size, what=f"'{path}'")
            have = len(header)
            while chunk := fh.read(1 << 20):  # a .nii.gz only tells its length by being read
                have += len(chunk)
                if have >= offset + size:
                    break
    except (OSError, EOFError, zlib.error) as exc:  # gzip: truncated stream, bad CRC
        raise DataError(f"cannot read image '{path}': {str(exc).splitlines()[0] or type(exc).__name__}") from None
    if have < offset + size:
        raise DataError(
            f"image '{path}' is truncated: {max(have - offset, 0)} of the {size} bytes of voxels its header announces"
        )


def check_header_data(path: str | Path) -> None:
    """Check what a medical header announces against its data, before ITK reads it.

    MetaImage: the data file must lie in the header's folder (an absolute or ``../`` path is
    refused) and hold exactly the announced bytes. NRRD: a detached data file must lie in the
    header's folder. NIfTI: the file must hold every voxel. MetaImage and NIfTI: the image must
    fit in the memory still free.

    Raises:
        DataError: one line naming the file.
    """
    path = Path(path)
    suffix = image_suffix(path)
    check = {".mhd": _check_metaimage, ".mha": _check_metaimage, ".nrrd": _check_nrrd}.get(suffix)
    check = _check_nifti if suffix in (".nii", ".nii.gz") else check
    if check is None:
        return
    try:
        check(path)
    except DataError:
        raise
    # a hostile header can name a path the OS refuses (NUL byte, too long, a link loop) or hold
    # numbers Python cannot convert (a NaN offset)
    except (OSError, ValueError, OverflowError, RuntimeError) as exc:
        reason = getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(f"cannot read image '{path}': {reason}") from None


def read_itk(path: str | Path):
    """``SimpleITK.ReadImage(path)``; a failure is a one-line :class:`DataError` with ITK's
    reason and what its C++ code printed to stderr (kept out of the user's terminal)."""
    import SimpleITK as sitk  # only needed for medical formats

    if Path(path).is_file():
        check_header_data(path)
    with _c_stderr_captured() as printed:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            failure = sitk_reason(exc)
        else:
            failure = None
    if failure is not None:
        detail = " ".join(printed[0].split())  # MetaIO says what is wrong ("data not read completely") here
        raise DataError(f"cannot read image '{path}': {failure}" + (f" ({detail})" if detail else "")) from None
    return image


def _load_medical(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    image = read_itk(path)
    size = image.GetSize()  # (W, H[, D]) in ITK order
    if len(size) > 3 or (len(size) == 3 and size[2] != 1):
        raise DataError(f"'{path}' is a volume of size {size} (ITK order); expected a 2D image")
    arr = sitk.GetArrayFromImage(image)  # (H, W) or (1, H, W), with a trailing axis for vector pixels
    return arr[0] if len(size) == 3 else arr


def _load_volume(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A medical image or volume as stored: ``(H, W[, C])`` or ``(D, H, W[, C])``, spacing in array order."""
    import SimpleITK as sitk

    image = read_itk(path)
    size = image.GetSize()
    if len(size) > 3:
        raise DataError(f"'{path}' has {len(size)} dimensions (ITK size {size}); expected a 2D image or a 3D volume")
    arr = sitk.GetArrayFromImage(image)
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    if len(size) == 3 and size[2] == 1:  # a one-slice volume is a 2D image
        return arr[0], spacing[1:]
    return arr, spacing


def _load(path: Path) -> np.ndarray:
    arr = _load_any(path)
    if arr.size == 0:
        raise DataError(f"'{path}' holds an empty array of shape {arr.shape}; expected an image")
    return arr


def _load_any(path: Path) -> np.ndarray:
    if image_suffix(path) in MEDICAL_SUFFIXES:
        return _load_medical(path)
    if path.suffix.lower() == ".npy":
        try:
            # Memory-mapped first: a header promising more data than the file holds is refused
            # instead of allocated. numpy parses the header with ast/tokenize, hence their errors.
            return np.array(np.load(path, allow_pickle=False, mmap_mode="r"))
        except (ValueError, OSError, EOFError, SyntaxError, TokenError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"cannot read '{path}': not a valid .npy array ({reason})") from None
    try:
        with Image.open(path) as img:
            img.load()
            frames = getattr(img, "n_frames", 1)
            if img.mode in ("I;16", "I;16B", "I", "F", "L", "1", "P"):
                arr = np.asarray(img.convert("L") if img.mode == "1" else img)
            else:
                arr = np.asarray(img.convert("RGB"))
    # An untrusted file can make Pillow's decoders raise almost anything (OSError, ValueError,
    # TypeError "Missing dimensions", SyntaxError, EOFError, struct.error, DecompressionBombError
    # for a huge header, found by tests/test_fuzz.py); the block calls nothing but Pillow.
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot read image '{path}': {reason}") from None
    if frames > 1:
        raise DataError(f"'{path}' holds {frames} frames (a stack); expected a single 2D image")
    return arr


def read_image(path: str | Path, *, channels: int = 1) -> np.ndarray:
    """Read an image as float32 ``(channels, H, W)`` scaled to [0, 1].

    Integer images are divided by their dtype's maximum (255 for 8-bit); float ``.npy``
    arrays are taken as they are; medical formats other than 8-bit are min-max scaled per
    image (their intensities have no fixed range). Colour is converted to grey for ``channels=1`` and grey is
    repeated for ``channels=3``.
    """
    path = Path(path)
    arr = _load(path)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)  # channel-first .npy
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4)):
        raise DataError(f"image '{path}' has shape {arr.shape}; expected (H, W) or (H, W, C) with C in 1, 3, 4")
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]  # RGBA: the alpha channel is not image content
    if image_suffix(path) in MEDICAL_SUFFIXES and arr.dtype != np.uint8:
        # Medical intensities (CT in Hounsfield units, MR) have no fixed range: min-max per image.
        arr = arr.astype(np.float32)
        low, high = (float(arr.min()), float(arr.max())) if arr.size and np.isfinite(arr).all() else (0.0, 1.0)
        arr = (arr - low) / (high - low) if high > low else np.zeros_like(arr)
    elif np.issubdtype(arr.dtype, np.integer):
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
    if values.size and values[0] < 0:
        raise DataError(f"mask '{path}' has label {values[0]:g}; expected class indices >= 0")
    if len(values) <= 2 and values.max(initial=0) == 255:
        return (arr == 255).astype(np.int64)
    return arr.astype(np.int64)


def write_mask(path: str | Path, labels: np.ndarray, *, binary: bool) -> None:
    """Write a label map as an 8-bit PNG: binary masks as 0/255, class maps as indices."""
    labels = np.asarray(labels)
    out = (labels > 0).astype(np.uint8) * 255 if binary else labels.astype(np.uint8)
    Image.fromarray(out).save(path, format="PNG")  # not from the suffix: a sample may be named ""


def channels_first(arr: np.ndarray, spatial_dims: int, channels: int | None, path: Path) -> np.ndarray:
    """``(*spatial[, C])`` to ``(channels, *spatial)`` in the stored dtype (grey from colour, grey repeated).

    Raises:
        DataError: a shape that is not ``spatial_dims`` axes plus 1, 3 or 4 channels, or a
            channel count that cannot become ``channels`` (naming ``path``).
    """
    if arr.ndim == spatial_dims:
        arr = arr[..., None]
    if arr.shape[-1] == 4:
        arr = arr[..., :3]  # RGBA: the alpha channel is not image content
    if arr.ndim != spatial_dims + 1 or arr.shape[-1] not in (1, 3):
        raise DataError(f"image '{path}' has shape {arr.shape}; expected {spatial_dims}D with 1, 3 or 4 channels")
    if channels is None:  # as stored
        pass
    elif channels == 1 and arr.shape[-1] == 3:
        grey = arr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        arr = (np.round(grey) if np.issubdtype(arr.dtype, np.integer) else grey).astype(arr.dtype)[..., None]
    elif channels == 3 and arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] != channels:
        raise DataError(f"image '{path}' has {arr.shape[-1]} channels; expected {channels}")
    return np.ascontiguousarray(np.moveaxis(arr, -1, 0))


def read_raw(path: str | Path, *, channels: int | None = 1) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read an image or volume at its native size, with its stored intensities and spacing.

    Unlike :func:`read_image`, nothing is rescaled: 8-bit files stay ``uint8`` and CT stays in
    Hounsfield units, so that a per-dataset :mod:`~medbalance.data.normalization` can be fitted.
    Medical formats (NIfTI, MetaImage, NRRD) may hold 3D volumes.

    Returns:
        ``(channels, *spatial)`` in the file's dtype (``bool`` as ``uint8``; ``channels=None``:
        the stored channels, RGBA without alpha), and the spacing in array axis order
        (``(1.0, 1.0)`` for raster formats).

    Raises:
        DataError: unreadable file, an unsupported shape, non-finite values.
    """
    path = Path(path)
    if image_suffix(path) in MEDICAL_SUFFIXES:
        arr, spacing = _load_volume(path)
        spatial = len(spacing)
    else:
        arr = _load(path)
        if path.suffix.lower() == ".npy" and arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = np.moveaxis(arr, 0, -1)  # channel-first .npy
        spatial = 2
        spacing = (1.0, 1.0)
    if arr.size == 0:
        raise DataError(f"'{path}' holds an empty array of shape {arr.shape}; expected an image")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise DataError(f"image '{path}' contains NaN or infinite values")
    return channels_first(arr, spatial, channels, path), spacing


def read_labels(path: str | Path) -> np.ndarray:
    """Read a label map (2D or a 3D volume) as ``uint8`` class indices at its native size.

    The rules of :func:`read_mask` apply (0/255 masks become 0/1, JPEG masks are thresholded
    at 128); labels must lie in ``[0, 255]``.

    Raises:
        DataError: unreadable file, non-integer or out-of-range labels, colour channels that differ.
    """
    path = Path(path)
    if image_suffix(path) not in MEDICAL_SUFFIXES:
        labels = read_mask(path)
    else:
        arr, _ = _load_volume(path)
        if np.issubdtype(arr.dtype, np.floating) and (not np.isfinite(arr).all() or (arr != np.round(arr)).any()):
            raise DataError(f"mask '{path}' holds non-integer values; expected class indices")
        values = np.unique(arr)
        if values.size and values[0] < 0:
            raise DataError(f"mask '{path}' has label {values[0]:g}; expected class indices >= 0")
        labels = (arr == 255) if len(values) <= 2 and values.max(initial=0) == 255 else arr
    if labels.size and labels.max() > 255:
        raise DataError(f"mask '{path}' has label {int(labels.max())}; expected class indices up to 255")
    return np.ascontiguousarray(labels, dtype=np.uint8)
