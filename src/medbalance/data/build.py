"""Turn the ``data`` section of a run config into train / validation / test splits."""

from __future__ import annotations

import csv
import importlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medbalance._memory import check_data_memory
from medbalance.config import (
    FolderData,
    IntraclassPhantomData,
    LongtailPhantomData,
    NucleiPhantomData,
    Phantom3DData,
    RunConfig,
)
from medbalance.data import phantoms
from medbalance.data.cache import cached_dataset
from medbalance.data.datasets import ArrayDataset, Splits
from medbalance.data.folder import read_folder
from medbalance.data.longtail import longtail_splits
from medbalance.data.normalization import fit_normalization
from medbalance.data.phantom3d import PHANTOM3D_CLASSES, organ_lesion_phantoms
from medbalance.data.spacing import median_spacing, resample_dataset
from medbalance.errors import ConfigError, DataError
from medbalance.metrics.evaluation import RegionRecall

__all__ = [
    "build_splits",
    "native_geometry",
    "split_indices",
    "split_groups",
    "case_groups",
    "split_cases",
    "collapse_foreground",
]

# data.kind -> "module:function" building its Splits; imported only when used.
READERS = {
    "camus": "medbalance.data.readers.camus:build_camus",
    "conic": "medbalance.data.readers.nuclei:build_conic",
    "monusac": "medbalance.data.readers.nuclei:build_monusac",
    "breakhis": "medbalance.data.readers.classification:build_breakhis",
    "chestxray": "medbalance.data.readers.classification:build_chestxray",
    "medmnist": "medbalance.data.readers.classification:build_medmnist",
    "shared": "medbalance.data.catalog:build_shared",
    "nnunet": "medbalance.data.readers.nnunet:build_nnunet",
}

# Phantom splits use disjoint seed streams so that validation/test never share an image with train.
_SPLIT_OFFSETS = {"train": 0, "val": 1_000_003, "test": 2_000_003}


def _from_phantoms(ps: phantoms.PhantomSet, num_classes: int) -> ArrayDataset:
    if ps.regions is None:
        return ArrayDataset(ps.images, ps.target, num_classes=num_classes, class_names=ps.class_names)
    # the intra-class phantom scores the recall of its majority and minority sub-regions
    return ArrayDataset(
        ps.images,
        ps.target,
        num_classes=num_classes,
        class_names=ps.class_names,
        extras={"regions": ps.regions},
        scorers=(RegionRecall,),
    )


def split_indices(n: int, fractions: tuple[float, float], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train / val / test index split; val and test get at least one item when asked for."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * fractions[0])) if fractions[0] > 0 else 0
    n_test = max(1, round(n * fractions[1])) if fractions[1] > 0 else 0
    if n - n_val - n_test < 1:
        raise ValueError(f"{n} samples cannot be split into train/val/test with fractions {fractions}")
    return np.sort(order[n_val + n_test :]), np.sort(order[:n_val]), np.sort(order[n_val : n_val + n_test])


def split_groups(
    groups: Sequence[str], fractions: tuple[float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train / val / test split of samples by group (patient): a group sits in one split.

    Groups are split by :func:`split_indices` on the sorted unique group names, so the result
    depends on the seed and the set of groups, never on file order.

    Example:
        >>> tr, va, te = split_groups(["p1", "p1", "p2", "p3", "p3", "p4", "p5"], (0.2, 0.2), 0)
        >>> sorted(set(tr) | set(va) | set(te)) == list(range(7))
        True
    """
    names, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    parts = split_indices(len(names), fractions, seed)
    return tuple(np.flatnonzero(np.isin(inverse, part)) for part in parts)  # type: ignore[return-value]


def case_groups(stems: Sequence[str], groups: str, *, root: str | Path | None = None) -> list[str]:
    r"""The subject (group) of each case: ``groups`` is a regular expression whose one capture
    group, searched in each file stem, names the subject, or a ``.csv`` file with ``case,group``
    columns (``case`` = the file stem; a relative path is looked up in the working folder, then
    in ``root``).

    Raises:
        DataError: a stem the pattern does not match, a CSV that is missing, lacks the columns,
            or has no row for a case (each naming the stem or file).

    Example:
        >>> case_groups(["021_left", "021_right", "022_left"], r"^(\d+)_")
        ['021', '021', '022']
    """
    if not groups.lower().endswith(".csv"):
        pattern, out = re.compile(groups), []
        for stem in stems:
            match = pattern.search(stem)
            if match is None or match.group(1) is None:
                raise DataError(f"data.groups pattern '{groups}' does not match the file stem '{stem}'")
            out.append(match.group(1))
        return out
    path = Path(groups)
    if not path.is_file() and root is not None and (Path(root) / path).is_file():
        path = Path(root) / path
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise DataError(f"data.groups file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read data.groups file '{path}': {exc}") from None
    if not rows or not {"case", "group"} <= set(rows[0]):
        raise DataError(f"data.groups file '{path}' needs a header with 'case' and 'group' columns")
    table = {row["case"].strip(): (row["group"] or "").strip() for row in rows}
    missing = [stem for stem in stems if not table.get(stem)]
    if missing:
        raise DataError(f"data.groups file '{path}' has no group for case '{missing[0]}' ({len(missing)} missing)")
    return [table[stem] for stem in stems]


def split_cases(
    stems: Sequence[str], data, *, root: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train / val / test split of cases by ``data.val_fraction`` / ``test_fraction`` /
    ``seed`` of a ``data`` section (folder, nnunet): by subject (:func:`split_groups`) when
    ``data.groups`` is set, else by case. ``stems`` are the cases' file stems.

    Raises:
        DataError: see :func:`case_groups`; every case in one group.
    """
    fractions = (data.val_fraction, data.test_fraction)
    if data.groups is None:
        return split_indices(len(stems), fractions, data.seed)
    groups = case_groups(stems, data.groups, root=root)
    if len(set(groups)) < 2:
        raise DataError(f"data.groups puts all {len(stems)} cases in one group '{groups[0]}'; nothing to split")
    return split_groups(groups, fractions, data.seed)


def _name_classes(data: ArrayDataset, names: Sequence[str]) -> ArrayDataset:
    if len(names) != data.num_classes:
        raise ConfigError(
            f"data.classes lists {len(names)} names but the data has {data.num_classes} classes: "
            f"found {list(names)}, expected {data.num_classes} names in label order for {list(data.class_names)}"
        )
    return _with(data, class_names=tuple(names))


def collapse_foreground(data: ArrayDataset) -> ArrayDataset:
    """The same images with every foreground class merged into one (background 0, foreground 1).

    ``ignore_index`` pixels stay ignored; label maps keep their dtype.
    """

    def merge(t: np.ndarray) -> np.ndarray:
        merged = (t > 0).astype(t.dtype)
        return merged if data.ignore_index is None else np.where(t == data.ignore_index, t, merged)

    return ArrayDataset(
        data.images,
        merge(data.target) if isinstance(data.target, np.ndarray) else [merge(t) for t in data.target],
        num_classes=2,
        class_names=("background", "foreground"),
        names=data.names,
        extras=data.extras,
        ignore_index=data.ignore_index,
        spacing=data.spacing,
        normalization=data.normalization,
        scorers=data.scorers,
    )


def _reader(kind: str):
    module, _, function = READERS[kind].partition(":")
    return getattr(importlib.import_module(module), function)


def _each(splits: Splits, change, **info) -> Splits:
    return Splits(
        change(splits.train),
        change(splits.val),
        change(splits.test) if splits.test is not None else None,
        info={**splits.info, **info},
    )


def native_geometry(cfg: RunConfig) -> bool:
    """Whether ``cfg``'s data keeps its native size (a segmentation source without ``data.size``)."""
    data = cfg.data
    return (
        cfg.task == "segmentation"
        and not isinstance(data, (IntraclassPhantomData, NucleiPhantomData))
        and getattr(data, "size", None) is None
    )


def build_splits(cfg: RunConfig, given: Splits | None = None) -> Splits:
    """Build (or read) the datasets a run trains, validates and tests on.

    Native-size segmentation data (no ``data.size``) gets the intensity normalisation of
    ``data.normalization`` fitted on its train split (``info["normalization"]``), shared by all
    three splits; with ``data.spacing`` not ``keep`` the train split is then resampled to the
    target spacing (``info["target_spacing"]``; :mod:`medbalance.data.spacing`), the others stay
    native. ``data.classes`` renames the classes (after ``binary``). With ``cv.fold`` set,
    train and val are that fold of the train + val pool (:func:`medbalance.data.folds.fold_splits`).
    ``data.train_limit`` keeps a seeded subset of the training images. ``given`` splits
    (datasets given in Python, ``data.kind: python``) take the place of the config's data and
    get the same treatment.

    Raises:
        ConfigError: ``data.classes`` does not list one name per class; ``data.spacing`` with
            ``data.size``, or with another number of values than the images' axes.
    """
    if given is None and cfg.data.kind == "python":
        raise ConfigError("this run's data was given in Python (data.kind: python); pass the same data again")
    if given is None:
        check_data_memory(cfg.data)
    splits = given if given is not None else _build(cfg)
    if cfg.cv is not None and cfg.cv.fold is not None:  # before the normalisation: fitted on the fold's train
        from medbalance.data.folds import fold_splits

        splits = fold_splits(splits, cfg.cv)
    limit = getattr(cfg.data, "train_limit", None)
    if limit is not None and limit < len(splits.train):  # a quick study: a seeded subset of the training images
        keep = np.sort(np.random.default_rng(0).permutation(len(splits.train))[:limit])
        info = {**splits.info, "train_limit": {"limit": limit, "indices": keep.tolist()}}
        splits = Splits(splits.train.subset(keep), splits.val, splits.test, info=info)
    ignore = getattr(cfg.data, "ignore_index", None)
    if ignore is not None:
        splits = _each(splits, lambda d: _with(d, ignore_index=ignore))
    if getattr(cfg.data, "binary", False) and cfg.task == "segmentation":
        splits = _each(splits, collapse_foreground, binary=True)
    names = getattr(cfg.data, "classes", None)
    if names is not None:  # after `binary`, so the names are those of the classes trained on
        splits = _each(splits, lambda d: _name_classes(d, names))
    if native_geometry(cfg):
        train = splits.train
        norm = fit_normalization(
            train.images, train.target, scheme=cfg.data.normalization, ignore_index=train.ignore_index, seed=cfg.seed
        )
        splits = _each(splits, lambda d: d.with_normalization(norm), normalization=norm.to_dict())
        target = _target_spacing(cfg.data.spacing, splits.train)
        if target is not None:  # train resampled once here; val / test stay native (inference resamples)
            resampled = resample_dataset(splits.train, target)
            splits = Splits(resampled, splits.val, splits.test, info={**splits.info, "target_spacing": list(target)})
    elif getattr(cfg.data, "spacing", "keep") != "keep":
        raise ConfigError(
            f"data.spacing resamples native-size segmentation images, which this {cfg.data.kind} data is not "
            "(leave data.size out, or set data.spacing: keep)"
        )
    return splits


def _target_spacing(setting, train: ArrayDataset) -> tuple[float, ...] | None:
    """``data.spacing`` as a spacing: ``None`` for ``keep``, the train split's for ``median``."""
    if setting == "keep":
        return None
    dims = train.spatial_dims
    if setting == "median":
        shapes = [train.shape(i) for i in range(len(train))]
        return median_spacing([train.spacing_of(i) for i in range(len(train))], shapes)
    if len(setting) != dims:
        raise ConfigError(f"data.spacing {list(setting)} has {len(setting)} values but the images have {dims} axes")
    return tuple(float(s) for s in setting)


def _with(data: ArrayDataset, **changes) -> ArrayDataset:
    out = data.subset(np.arange(len(data)))
    for key, value in changes.items():
        setattr(out, key, value)
    return out


def _build(cfg: RunConfig) -> Splits:
    data = cfg.data
    if data.kind in READERS:
        return _reader(data.kind)(data)
    if isinstance(data, (IntraclassPhantomData, NucleiPhantomData)):
        make = phantoms.intraclass_phantoms if isinstance(data, IntraclassPhantomData) else phantoms.nuclei_phantoms
        sets = {
            split: make(n, size=data.size, seed=data.seed + _SPLIT_OFFSETS[split])
            for split, n in (("train", data.n_train), ("val", data.n_val), ("test", data.n_test))
            if n > 0
        }
        num_classes = len(sets["train"].class_names)
        out = {k: _from_phantoms(v, num_classes) for k, v in sets.items()}
        return Splits(out["train"], out["val"], out.get("test"), info={"source": data.kind})
    if isinstance(data, Phantom3DData):
        sets = {
            split: organ_lesion_phantoms(
                n, shape=data.shape, lesion_share=data.lesion_share, seed=data.seed + _SPLIT_OFFSETS[split]
            )
            for split, n in (("train", data.n_train), ("val", data.n_val), ("test", data.n_test))
            if n > 0
        }
        out = {
            k: ArrayDataset(v.images, v.target, num_classes=3, class_names=PHANTOM3D_CLASSES, spacing=v.spacing)
            for k, v in sets.items()
        }
        return Splits(out["train"], out["val"], out.get("test"), info={"source": data.kind})
    if isinstance(data, LongtailPhantomData):
        counts = phantoms.longtail_counts(data.num_classes, data.n_max, data.imbalance_ratio)
        train = phantoms.longtail_phantoms(counts, size=data.size, seed=data.seed)
        val = phantoms.longtail_phantoms(
            [data.n_val_per_class] * data.num_classes, size=data.size, seed=data.seed + _SPLIT_OFFSETS["val"]
        )
        test = None
        if data.n_test_per_class:
            test = phantoms.longtail_phantoms(
                [data.n_test_per_class] * data.num_classes, size=data.size, seed=data.seed + _SPLIT_OFFSETS["test"]
            )
        num_classes = data.num_classes
        return Splits(
            _from_phantoms(train, num_classes),
            _from_phantoms(val, num_classes),
            _from_phantoms(test, num_classes) if test is not None else None,
            info={"source": data.kind, "class_counts": counts, "imbalance_ratio": data.imbalance_ratio},
        )
    assert isinstance(data, FolderData)
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
    return longtail_splits(splits, data.imbalance_ratio, n_max=data.n_max, seed=data.seed)
