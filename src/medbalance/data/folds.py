"""k-fold splits of a run's train + val pool, read and written as nnU-Net's ``splits_final.json``.

nnU-Net v2 keeps its folds in ``splits_final.json``: a JSON list with one ``{"train": [case
ids], "val": [case ids]}`` per fold. medbalance writes the same file with its case names as ids
and reads one written by nnU-Net, so both tools can train on the same folds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from medbalance._atomic import atomic_write_text
from medbalance.config import DEFAULT_FOLDS, CrossValidation, RunConfig
from medbalance.data.datasets import ArrayDataset, Splits
from medbalance.errors import ConfigError, DataError

__all__ = [
    "make_folds",
    "read_splits",
    "write_splits",
    "cv_pool",
    "pool_folds",
    "fold_splits",
    "is_cv_dir",
    "with_fold",
]

log = logging.getLogger(__name__)


def make_folds(
    names: Sequence[str], folds: int, *, seed: int = 0, groups: Sequence[str] | None = None
) -> list[dict[str, list[str]]]:
    """Seeded k-fold split of case ``names``; a group (patient) never straddles two folds.

    The sorted unique groups (each case its own group without ``groups``) are shuffled with
    ``seed`` and cut into ``folds`` parts of sizes differing by at most one group, so the
    result depends on the seed and the set of names, never on their order.

    Returns:
        nnU-Net's format: one ``{"train": [...], "val": [...]}`` per fold, names sorted.

    Example:
        >>> folds = make_folds(["a", "b", "c", "d"], 2, seed=0)
        >>> len(folds), sorted(folds[0]["val"] + folds[1]["val"])
        (2, ['a', 'b', 'c', 'd'])
    """
    names = [str(n) for n in names]
    groups = names if groups is None else [str(g) for g in groups]
    if len(groups) != len(names):
        raise ValueError(f"groups must give one group per name: {len(groups)} groups for {len(names)} names")
    unique, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    if len(unique) < folds:
        what = "groups" if len(unique) < len(names) else "cases"
        raise DataError(f"{len(unique)} {what} cannot be cut into {folds} folds (cv.folds)")
    parts = np.array_split(np.random.default_rng(seed).permutation(len(unique)), folds)
    out = []
    for part in parts:
        val = np.isin(inverse, part)
        out.append(
            {
                "train": sorted(n for n, v in zip(names, val) if not v),
                "val": sorted(n for n, v in zip(names, val) if v),
            }
        )
    return out


def read_splits(path: str | Path, *, key: str = "cv.splits") -> list[dict[str, list[str]]]:
    """Read an nnU-Net ``splits_final.json`` (a list of ``{"train": [...], "val": [...]}``).

    ``key`` is the config key that named the file (shown when it is missing).

    Raises:
        DataError: a missing or unreadable file, or one not in that format (one line naming it).
    """
    path = Path(path)
    try:
        folds = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"splits file '{path}' does not exist ({key})") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"cannot read splits file '{path}': {str(exc).splitlines()[0]}") from None
    expected = 'a JSON list of {"train": [case ids], "val": [case ids]} (nnU-Net\'s splits_final.json)'
    if not isinstance(folds, list) or not folds:
        raise DataError(f"splits file '{path}' is not {expected}")
    for k, fold in enumerate(folds):
        if not isinstance(fold, dict) or not {"train", "val"} <= set(fold):
            raise DataError(f"fold {k} of splits file '{path}' lacks 'train' or 'val' (fold {k} must be {expected})")
        for key in ("train", "val"):
            if not isinstance(fold[key], list) or not all(isinstance(n, str) for n in fold[key]):
                raise DataError(f"'{key}' of fold {k} in splits file '{path}' is not a list of case ids")
        both = set(fold["train"]) & set(fold["val"])
        if both:
            raise DataError(f"fold {k} of splits file '{path}' has case '{sorted(both)[0]}' in both train and val")
    return [{"train": list(f["train"]), "val": list(f["val"])} for f in folds]


def write_splits(path: str | Path, folds: list[dict[str, list[str]]]) -> Path:
    """Write ``folds`` as nnU-Net's ``splits_final.json`` (atomically; indent 4 as nnU-Net)."""
    path = Path(path)
    atomic_write_text(path, json.dumps([{"train": f["train"], "val": f["val"]} for f in folds], indent=4) + "\n")
    return path


def _concat(a: ArrayDataset, b: ArrayDataset, names: list[str]) -> ArrayDataset:
    def join(x, y):
        return np.concatenate([x, y]) if isinstance(x, np.ndarray) and isinstance(y, np.ndarray) else [*x, *y]

    spacing = None
    if a.spacing is not None or b.spacing is not None:
        spacing = [a.spacing_of(i) for i in range(len(a))] + [b.spacing_of(i) for i in range(len(b))]
    return ArrayDataset(
        join(a.images, b.images),
        join(a.target, b.target),
        num_classes=a.num_classes,
        class_names=a.class_names,
        names=names,
        extras={k: join(v, b.extras[k]) for k, v in a.extras.items() if k in b.extras},
        ignore_index=a.ignore_index,
        spacing=spacing,
        normalization=a.normalization,
        scorers=a.scorers,
    )


def cv_pool(splits: Splits) -> tuple[ArrayDataset, list[str]]:
    """The train + val pool that cross-validation divides, and each case's group.

    Case ids are the case names; when train and val reuse names (generated phantoms number
    each split from 0) they become ``train-<name>`` and ``val-<name>``. A case's group is
    ``splits.info["groups"][name]`` where the reader records one (a patient), else its name.
    """
    names = [*splits.train.names, *splits.val.names]
    if len(set(names)) < len(names):
        names = [*(f"train-{n}" for n in splits.train.names), *(f"val-{n}" for n in splits.val.names)]
        if len(set(names)) < len(names):
            raise DataError("the data's case names repeat, so they cannot serve as cross-validation case ids")
    recorded = splits.info.get("groups") or {}
    original = [*splits.train.names, *splits.val.names]
    groups = [str(recorded.get(n, new)) for n, new in zip(original, names)]
    return _concat(splits.train, splits.val, names), groups


def pool_folds(cv: CrossValidation, pool: ArrayDataset, groups: Sequence[str]) -> list[dict[str, list[str]]]:
    """The folds of ``cv`` over ``pool``: read from ``cv.splits`` or drawn; checked against the pool.

    Raises:
        ConfigError: ``cv.folds`` disagrees with the file's fold count.
        DataError: the file names a case the data does not have.
    """
    if cv.splits is None:
        return make_folds(pool.names, cv.folds or DEFAULT_FOLDS, seed=cv.seed, groups=groups)
    folds = read_splits(cv.splits)
    if cv.folds is not None and cv.folds != len(folds):
        raise ConfigError(f"cv.folds is {cv.folds} but splits file '{cv.splits}' holds {len(folds)} folds")
    known = set(pool.names)
    for k, fold in enumerate(folds):
        for key in ("train", "val"):
            unknown = [n for n in fold[key] if n not in known]
            if unknown:
                raise DataError(
                    f"case '{unknown[0]}' in '{key}' of fold {k} of splits file '{cv.splits}' is not in the data's "
                    f"train + val pool ({len(unknown)} unknown; e.g. '{pool.names[0]}' is a known id)"
                )
    return folds


def fold_splits(splits: Splits, cv: CrossValidation) -> Splits:
    """``splits`` with train and val replaced by fold ``cv.fold`` of the train + val pool; test unchanged.

    ``info`` records the fold (``cv``), its case names and every fold (``splits_final``,
    written by the run as ``splits_final.json``).
    """
    pool, groups = cv_pool(splits)
    folds = pool_folds(cv, pool, groups)
    if cv.fold is None or cv.fold >= len(folds):
        where = f"splits file '{cv.splits}'" if cv.splits else "cv.folds"
        raise ConfigError(f"fold {cv.fold} does not exist: {where} gives {len(folds)} folds, 0 to {len(folds) - 1}")
    index = {n: i for i, n in enumerate(pool.names)}
    fold = folds[cv.fold]
    train, val = [index[n] for n in fold["train"]], [index[n] for n in fold["val"]]  # in the order of the file
    left_out = len(pool) - len(train) - len(val)
    if left_out:
        log.warning("fold %d leaves %d case(s) of the train + val pool out of both train and val", cv.fold, left_out)
    source = str(cv.splits) if cv.splits else f"drawn, seed {cv.seed}"
    info = {
        **splits.info,
        "train_names": [pool.names[i] for i in train],
        "val_names": [pool.names[i] for i in val],
        "cv": {"fold": cv.fold, "folds": len(folds), "splits": source},
        "splits_final": folds,
    }
    return Splits(pool.subset(train), pool.subset(val), splits.test, info=info)


def is_cv_dir(path: str | Path) -> bool:
    """Whether ``path`` is a cross-validation folder: ``config.yaml`` and ``splits_final.json`` but,
    unlike a run of one fold, no ``checkpoints/``."""
    path = Path(path)
    return (
        (path / "splits_final.json").is_file()
        and (path / "config.yaml").is_file()
        and not (path / "checkpoints").exists()
    )


def with_fold(cfg: RunConfig, fold: int | str) -> RunConfig:
    """``cfg`` training fold ``fold`` (``"all"``: every fold); a config without ``cv`` gets the default one.

    Raises:
        ConfigError: a fold the folds do not have (one line).
    """
    cv = (cfg.cv or CrossValidation()).model_dump()
    try:
        new = CrossValidation.model_validate({**cv, "fold": None if fold == "all" else fold})
    except ValidationError as err:
        reason = err.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"invalid value for '--fold': {reason}") from None
    return cfg.model_copy(update={"cv": new})
