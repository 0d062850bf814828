"""Plain numpy (float64) re-derivations for the long-tail pieces of seed 001 / SPEC sections 6 and 10.

Written from the formulas, with loops where that keeps them obviously right; no torch, no code
shared with the library.
"""

from __future__ import annotations

import math

import numpy as np


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def ce(z: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax cross entropy of logits ``(N, C)`` and labels ``(N,)``."""
    lp = log_softmax(z)
    return float(np.mean([-lp[i, y[i]] for i in range(len(y))]))


def longtail_sizes(counts: list[int], ir: float, n_max: int | None = None) -> list[int]:
    """SPEC 6: rank classes by size; rank i keeps min(count, round(N_max * IR^(-i/(K-1))))."""
    present = [c for c in range(len(counts)) if counts[c] > 0]
    ranked = sorted(present, key=lambda c: (-counts[c], c))
    head = counts[ranked[0]] if n_max is None else min(counts[ranked[0]], n_max)
    out = [0] * len(counts)
    k = len(ranked)
    for i, c in enumerate(ranked):
        want = head if k == 1 else max(1, math.floor(head * ir ** (-i / (k - 1)) + 0.5))
        out[c] = min(counts[c], want)
    return out


def label_aware_eps(counts: list[float], head: float = 0.3, tail: float = 0.0) -> np.ndarray:
    n = np.asarray(counts, dtype=np.float64)
    return np.array([tail + (head - tail) * math.sin(math.pi * (v - n.min()) / (2 * (n.max() - n.min()))) for v in n])


def label_aware_smoothing(z: np.ndarray, y: np.ndarray, counts: list[float], head: float = 0.3, tail: float = 0.0):
    """MiSLAS: (1 - eps_y) * NLL + eps_y * mean_c(-log p_c), averaged over samples."""
    eps = label_aware_eps(counts, head, tail)
    lp = log_softmax(z)
    return float(np.mean([(1 - eps[y[i]]) * -lp[i, y[i]] + eps[y[i]] * -lp[i].mean() for i in range(len(y))]))


def bilateral(z_c: np.ndarray, z_r: np.ndarray, y_c: np.ndarray, y_r: np.ndarray, lam: float) -> float:
    """BBN: z = lam z_c + (1 - lam) z_r; lam CE(z, y_c) + (1 - lam) CE(z, y_r)."""
    z = lam * z_c + (1 - lam) * z_r
    return lam * ce(z, y_c) + (1 - lam) * ce(z, y_r)
