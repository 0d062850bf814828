"""Seeded train / val / test splits of cases: by case, or by subject (group) so that a patient sits in one split."""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medbalance.errors import DataError

__all__ = ["split_indices", "split_groups", "case_groups", "split_cases"]


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
