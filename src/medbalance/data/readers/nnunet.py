"""nnU-Net v2's raw dataset layout, how most segmentation datasets are shared::

    DatasetXXX_Name/dataset.json
                    imagesTr/<case>_0000<file_ending>   (one file per channel, 4-digit channel index)
                    imagesTr/<case>_0001<file_ending>
                    labelsTr/<case><file_ending>
                    imagesTs/<case>_0000<file_ending>   (optional, no labels: for `medbalance predict`)
                    splits_final.json                    (optional: nnU-Net's cross-validation folds)

``dataset.json`` gives ``channel_names`` (``{"0": "CT", ...}``), ``labels`` (name -> integer,
``background`` 0, consecutive; an ``ignore`` label, nnU-Net's highest value, becomes the
dataset's ``ignore_index``), ``numTraining`` and ``file_ending``. Region-based labels (a list
of integers per name) are accepted only when each list holds one integer. Images keep their
native size, stored intensities and spacing (2D ``.png`` ... or 3D ``.nii.gz``, ``.mha`` ...).
A natural 2D image may hold several channels in one file (RGB in ``<case>_0000.png``), as in
nnU-Net.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from medbalance.data.cache import cached_dataset
from medbalance.data.datasets import ArrayDataset, Splits
from medbalance.data.io import image_stem, image_suffix, read_labels, read_raw
from medbalance.data.schema import Reader, _Grouping, _Segmentation
from medbalance.data.splits import split_cases
from medbalance.errors import DataError

__all__ = ["build_nnunet", "read_nnunet", "read_dataset_json", "channel_cases", "read_case", "NnunetData", "NNUNET"]


class NnunetData(_Segmentation, _Grouping):
    """nnU-Net v2's raw layout: ``imagesTr/<case>_<XXXX>``, ``labelsTr/<case>``, ``dataset.json``.

    Split seeded by ``val_fraction`` / ``test_fraction`` (by subject with ``groups``), or fold
    ``fold`` of the dataset folder's ``splits_final.json`` (its train / val; no test split).
    """

    kind: Literal["nnunet"] = "nnunet"
    path: str
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    seed: int = 0
    fold: int | None = Field(None, ge=0)
    cache: bool = True  # decoded arrays memory-mapped from $MEDBALANCE_CACHE (medbalance.data.cache)


def _fail(path: Path, message: str) -> DataError:
    return DataError(f"'{path}': {message}")


def read_dataset_json(path: str | Path) -> dict:
    """Read and check nnU-Net's ``dataset.json``.

    Returns:
        ``{"channels": [names in channel order], "classes": [names by label value],
        "ignore": int or None, "num_training": int, "file_ending": str}``.

    Raises:
        DataError: one line naming the file and the field (missing, wrong type, region-based
            labels, labels that are not ``0..K-1`` with ``background`` 0, a misplaced ``ignore``).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "dataset.json"
        >>> _ = p.write_text('{"channel_names": {"0": "T2"}, "labels": {"background": 0, "tumour": [1]},'
        ...                  ' "numTraining": 4, "file_ending": ".nii.gz"}')
        >>> read_dataset_json(p)["classes"]
        ['background', 'tumour']
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"'{path.parent}' has no dataset.json (expected nnU-Net's raw layout)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _fail(path, f"not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise _fail(path, f"expected a JSON object, found {type(raw).__name__}")
    for key in ("channel_names", "labels", "numTraining", "file_ending"):
        if key not in raw:
            raise _fail(path, f"missing field '{key}'")
    channels = raw["channel_names"]
    if not isinstance(channels, dict) or not channels:
        raise _fail(path, f"'channel_names' must map channel indices to names, found {channels!r}")
    if sorted(channels) != [str(i) for i in range(len(channels))]:
        raise _fail(path, f"'channel_names' keys must be 0..{len(channels) - 1}, found {sorted(channels)}")
    labels = raw["labels"]
    if not isinstance(labels, dict) or not labels:
        raise _fail(path, f"'labels' must map names to integers, found {labels!r}")
    values: dict[str, int] = {}
    for name, value in labels.items():
        if isinstance(value, list) and len(value) == 1:
            value = value[0]  # a region of one label is that label
        if isinstance(value, list):
            raise _fail(path, f"label '{name}' is a region {value}; region-based labels are not supported")
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
            raise _fail(path, f"label '{name}' must be an integer in [0, 255], found {value!r}")
        values[name] = value
    ignore = values.pop("ignore", None)
    if values.get("background") != 0:
        raise _fail(path, f"'labels' must give 'background': 0, found {labels.get('background')!r}")
    by_value = sorted(values.items(), key=lambda item: item[1])
    if [v for _, v in by_value] != list(range(len(by_value))):
        raise _fail(path, f"'labels' must be consecutive 0..{len(by_value) - 1}, found {sorted(values.values())}")
    if ignore is not None and ignore != len(by_value):
        raise _fail(path, f"the 'ignore' label must be the highest, {len(by_value)}, found {ignore}")
    count, ending = raw["numTraining"], raw["file_ending"]
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise _fail(path, f"'numTraining' must be a positive integer, found {count!r}")
    if not isinstance(ending, str) or not ending.startswith("."):
        raise _fail(path, f"'file_ending' must be a suffix such as '.nii.gz', found {ending!r}")
    return {
        "channels": [str(channels[str(i)]) for i in range(len(channels))],
        "classes": [name for name, _ in by_value],
        "ignore": ignore,
        "num_training": count,
        "file_ending": ending,
    }


def _read_case(root: Path, case: str, info: dict) -> tuple[np.ndarray, tuple[float, ...]]:
    # channel files _0000, _0001 ... until channel_names is covered (an RGB _0000.png covers three)
    parts, spacing, wanted = [], None, len(info["channels"])
    while sum(len(p) for p in parts) < wanted:
        path = root / "imagesTr" / f"{case}_{len(parts):04d}{info['file_ending']}"
        if not path.is_file():
            raise DataError(f"case '{case}' has no channel file '{path.name}' in '{path.parent}'")
        image, pixel = read_raw(path, channels=None)
        if parts and image.shape[1:] != parts[0].shape[1:]:
            raise DataError(f"'{path.name}' is {image.shape[1:]} but channel 0 of '{case}' is {parts[0].shape[1:]}")
        spacing = spacing or pixel
        parts.append(image)
    image = np.concatenate(parts) if len(parts) > 1 else parts[0]
    if len(image) != wanted:
        raise DataError(f"case '{case}' has {len(image)} image channels but dataset.json names {wanted}")
    return image, spacing


def read_nnunet(root: str | Path) -> ArrayDataset:
    """Read the labelled cases (``labelsTr``) of a dataset in nnU-Net v2's raw layout.

    Returns:
        One sample per ``labelsTr`` file, named by case, sorted: channels stacked in channel
        order (stored dtype), labels as ``uint8``, class names from ``labels``, the ``ignore``
        label as ``ignore_index``, each case's spacing.

    Raises:
        DataError: a bad ``dataset.json`` (see :func:`read_dataset_json`), a missing folder or
            channel file, ``numTraining`` that differs from the cases found, an image and label
            of different sizes, or a label value ``dataset.json`` does not name.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"nnU-Net dataset folder '{root}' does not exist")
    info = read_dataset_json(root / "dataset.json")
    ending = info["file_ending"]
    for folder in ("imagesTr", "labelsTr"):
        if not (root / folder).is_dir():
            raise DataError(f"'{root}' has no '{folder}/' folder (expected nnU-Net's raw layout)")
    label_paths = sorted(p for p in (root / "labelsTr").iterdir() if p.name.endswith(ending) and p.name[0] != ".")
    if len(label_paths) != info["num_training"]:
        raise DataError(
            f"'{root / 'dataset.json'}' says numTraining {info['num_training']} but "
            f"'{root / 'labelsTr'}' holds {len(label_paths)} '*{ending}' files"
        )
    num_classes, ignore = len(info["classes"]), info["ignore"]
    images, targets, spacing, cases = [], [], [], []
    for path in label_paths:
        case = path.name[: -len(ending)]
        image, pixel = _read_case(root, case, info)
        labels = read_labels(path)
        if image.shape[1:] != labels.shape:
            raise DataError(f"case '{case}': image is {image.shape[1:]} but its label '{path.name}' is {labels.shape}")
        wrong = np.setdiff1d(np.unique(labels), [*range(num_classes), *([ignore] if ignore is not None else [])])
        if wrong.size:
            raise DataError(f"label '{path}' holds value {int(wrong[0])}, which dataset.json's 'labels' does not name")
        images.append(image)
        targets.append(labels)
        spacing.append(pixel)
        cases.append(case)
    if len({t.ndim for t in targets}) > 1:
        raise DataError(f"'{root}' mixes 2D images and 3D volumes; keep one kind per dataset")
    return ArrayDataset(
        images,
        targets,
        num_classes=num_classes,
        class_names=info["classes"],
        names=cases,
        spacing=spacing,
        ignore_index=ignore,
    )


def channel_cases(files: Sequence[Path]) -> list[tuple[Path, list[Path]]]:
    """Group input files named ``<case>_<XXXX><ext>`` (as in ``imagesTs/``) by case.

    Returns:
        ``(case path, channel files in channel order)`` per case, sorted by case; the case path
        is ``<folder>/<case><ext>``, the name nnU-Net gives the case's prediction.

    Raises:
        DataError: a file without the 4-digit channel suffix, or a case whose channels are not
            ``0000, 0001, ...`` without a gap.

    Example:
        >>> [(c.name, [f.name for f in fs]) for c, fs in channel_cases([Path("a_0001.png"), Path("a_0000.png")])]
        [('a.png', ['a_0000.png', 'a_0001.png'])]
    """
    cases: dict[Path, dict[int, Path]] = {}
    for path in files:
        match = re.fullmatch(r"(.+)_(\d{4})", image_stem(path))
        if match is None:
            raise DataError(f"'{path.name}' is not named <case>_<XXXX>{image_suffix(path)} (nnU-Net's channel files)")
        cases.setdefault(path.parent / f"{match.group(1)}{image_suffix(path)}", {})[int(match.group(2))] = path
    for case, channels in cases.items():
        if sorted(channels) != list(range(len(channels))):
            found, last = sorted(channels), len(channels) - 1
            raise DataError(f"case '{image_stem(case)}' has channel files {found}; expected 0..{last}")
    return [(case, [cases[case][k] for k in sorted(cases[case])]) for case in sorted(cases)]


def read_case(paths: Sequence[Path], *, channels: int):
    """Read one case's channel files for ``predict`` and stack them (:func:`medbalance.data.medical.read_native`).

    Returns:
        ``(channels, *spatial)`` stored values and the first file's ``ImageInfo`` (its geometry).

    Raises:
        DataError: channel files of different sizes, or not ``channels`` channels in all.
    """
    from medbalance.data.medical import read_native

    parts = [read_native(path, channels=None) for path in paths]
    first, info = parts[0]
    for (image, _), path in zip(parts[1:], paths[1:]):
        if image.shape[1:] != first.shape[1:]:
            raise DataError(f"'{path.name}' is {image.shape[1:]} but '{paths[0].name}' is {first.shape[1:]}")
    image = np.concatenate([image for image, _ in parts])
    if len(image) != channels:
        raise DataError(
            f"'{paths[0].name}' and its channel files hold {len(image)} channels; the run expects {channels}"
        )
    return image, info


def _fold_indices(root: Path, cases: list[str], fold: int) -> tuple[np.ndarray, np.ndarray]:
    from medbalance.data.folds import read_splits  # data.folds imports config, which imports this module

    path = root / "splits_final.json"
    folds = read_splits(path, key="data.fold")
    if fold >= len(folds):
        raise DataError(f"data.fold is {fold} but '{path}' holds {len(folds)} folds (0..{len(folds) - 1})")
    index = {case: i for i, case in enumerate(cases)}
    out = []
    for part in ("train", "val"):
        missing = [c for c in folds[fold][part] if c not in index]
        if missing:
            raise DataError(f"'{path}' fold {fold} names case '{missing[0]}', which labelsTr does not hold")
        if not folds[fold][part]:
            raise DataError(f"'{path}' fold {fold} has an empty '{part}' list")
        out.append(np.sort([index[c] for c in folds[fold][part]]))
    return out[0], out[1]


def build_nnunet(data: NnunetData) -> Splits:
    """Read a dataset in nnU-Net's raw layout and split its labelled cases.

    The split is seeded (``val_fraction``, ``test_fraction``, ``seed``; by subject with
    ``groups``), or with ``fold: K`` the train / val cases of fold ``K`` of the dataset's
    ``splits_final.json`` (then ``test_fraction`` must be 0).

    Raises:
        DataError: see :func:`read_nnunet`, :func:`medbalance.data.folds.read_splits`; a fold out of range or
            naming an unknown case; ``fold`` with ``test_fraction`` or ``groups``.
    """
    root = Path(data.path)
    read_dataset_json(root / "dataset.json")  # a missing folder or bad dataset.json, named before the cache looks
    full = cached_dataset(root, {"reader": "nnunet"}, lambda: read_nnunet(root), enabled=data.cache)
    cases = list(full.names)
    if data.fold is not None:
        if data.test_fraction > 0 or data.groups is not None:
            raise DataError(
                "data.fold takes train / val from splits_final.json; drop data.test_fraction and data.groups"
            )
        train_idx, val_idx = _fold_indices(root, cases, data.fold)
        test_idx = np.zeros(0, dtype=np.int64)
    else:
        train_idx, val_idx, test_idx = split_cases(cases, data, root=root)
    return Splits(
        full.subset(train_idx),
        full.subset(val_idx),
        full.subset(test_idx) if len(test_idx) else None,
        info={
            "source": str(root),
            "fold": data.fold,
            "train_names": [cases[i] for i in train_idx],
            "val_names": [cases[i] for i in val_idx],
            "test_names": [cases[i] for i in test_idx],
        },
    )


NNUNET = Reader(NnunetData, build_nnunet, "segmentation")
