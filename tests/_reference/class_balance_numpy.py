"""Numpy re-derivations of :mod:`medbalance.losses.weights` and :mod:`medbalance.data.stats`,
written from SPEC section 3 and Cui et al. 2019 independently of the library (float64, direct
formulas, explicit loops over images)."""

from __future__ import annotations

import numpy as np


def class_weights_np(fractions, scheme: str) -> np.ndarray:
    """The six weight functions of seed 002 section 4.4, normalised to sum 1."""
    m = np.asarray(fractions, dtype=np.float64)
    p = m / m.sum()
    c = len(p)
    if scheme == "uniform":
        w = np.ones(c)
    elif scheme == "inverse":
        # w_i = sum_j M_j / (C M_i); absent classes get 0
        w = np.array([m.sum() / (c * mi) if mi > 0 else 0.0 for mi in m])
    elif scheme == "exp_increasing":
        w = np.exp(np.e * p)
    elif scheme == "exp_decreasing":
        w = np.exp(-np.e * p)
    elif scheme in ("exp_decreasing_fg", "exp_decreasing_fg_nobg"):
        fg = m[1:]
        q = fg / fg.sum() if fg.sum() > 0 else np.zeros_like(fg)
        bg = np.exp(-np.e * p[0]) if scheme == "exp_decreasing_fg" else 0.0
        w = np.concatenate([[bg], np.exp(-np.e * q)])
    else:
        raise KeyError(scheme)
    return w / w.sum()


def effective_number_weights_np(counts, beta: float) -> np.ndarray:
    """(1 - beta) / (1 - beta^n), scaled to sum to C (LDAM-DRW reference code); 0 for n == 0."""
    n = np.asarray(counts, dtype=np.float64)
    w = np.zeros_like(n)
    present = n > 0
    w[present] = (1.0 - beta) / (1.0 - np.power(beta, n[present]))
    return w * len(n) / w.sum()


def dataset_stats_np(masks, num_classes: int, ignore_index=None):
    """(counts per class, images without foreground) of a list of label maps."""
    counts = np.zeros(num_classes, dtype=np.int64)
    empty = 0
    for mask in masks:
        m = np.asarray(mask).ravel()
        if ignore_index is not None:
            m = m[m != ignore_index]
        for k in range(num_classes):
            counts[k] += int((m == k).sum())
        empty += int(not (m != 0).any())
    return counts, empty
