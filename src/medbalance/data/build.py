"""Turn the ``data`` section of a run config into train / validation / test splits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medbalance._memory import check_data_memory
from medbalance.config import RunConfig
from medbalance.data.datasets import ArrayDataset, Splits
from medbalance.data.kinds import KINDS
from medbalance.data.normalization import fit_normalization
from medbalance.data.readers.phantoms import IntraclassPhantomData, NucleiPhantomData
from medbalance.data.spacing import median_spacing, resample_dataset
from medbalance.data.splits import case_groups, split_cases, split_groups, split_indices  # re-exported
from medbalance.errors import ConfigError

__all__ = [
    "build_splits",
    "source_splits",
    "native_geometry",
    "split_indices",
    "split_groups",
    "case_groups",
    "split_cases",
    "collapse_foreground",
]


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


def source_splits(cfg: RunConfig, given: Splits | None = None) -> Splits:
    """The splits as the data kind reads them (or ``given``), before any treatment of :func:`build_splits`.

    Cross-validation divides their train + val pool: native images, every training case.
    """
    if given is not None:
        return given
    check_data_memory(cfg.data)
    return KINDS[cfg.data.kind].build(cfg.data)


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
    splits = source_splits(cfg, given)
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
