"""Numpy re-derivation of seed 000's weight maps and losses (SPEC section 5), written from the
formulas with explicit per-pixel loops in float64, independently of the library."""

from __future__ import annotations

import math

import numpy as np


def split_mac_mic_np(prob: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """MaC = P AND GT, MiC = GT AND NOT P with P = prob > threshold, pixel by pixel."""
    mac, mic = np.zeros(gt.shape), np.zeros(gt.shape)
    for idx in np.ndindex(gt.shape):
        if gt[idx] == 1:
            if prob[idx] > threshold:
                mac[idx] = 1.0
            else:
                mic[idx] = 1.0
    return mac, mic


def weight_maps_np(mac: np.ndarray, mic: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights 1 / alpha / 0 for own sub-class / other sub-class / background."""
    w_mac, w_mic = np.zeros(mac.shape), np.zeros(mac.shape)
    for idx in np.ndindex(mac.shape):
        if mac[idx]:
            w_mac[idx], w_mic[idx] = 1.0, alpha
        elif mic[idx]:
            w_mac[idx], w_mic[idx] = alpha, 1.0
    return w_mac, w_mic


def bce_np(logits: np.ndarray, target: np.ndarray) -> float:
    """Mean of -(y log s(z) + (1 - y) log(1 - s(z))) over all elements."""
    total = 0.0
    for z, y in zip(np.asarray(logits, np.float64).ravel(), np.asarray(target, np.float64).ravel()):
        s = 1.0 / (1.0 + math.exp(-z))
        total -= y * math.log(s) + (1.0 - y) * math.log(1.0 - s)
    return total / logits.size


def split_per_class_np(prob: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SPEC 5.9 from ``(N, C, H, W)`` probabilities: ``P`` = argmax; for a pixel of class ``c >= 1``,
    ``MaC_c = 1`` where ``P == c`` and ``MiC_c = 1`` elsewhere, pixel by pixel."""
    n, c = prob.shape[:2]
    mac, mic = np.zeros(prob.shape), np.zeros(prob.shape)
    for idx in np.ndindex(gt.shape):
        label = gt[idx]
        if label == 0:
            continue
        scores = [prob[(idx[0], k, *idx[1:])] for k in range(c)]
        predicted = max(range(c), key=lambda k: (scores[k], -k))  # first maximum, as argmax
        (mac if predicted == label else mic)[(idx[0], label, *idx[1:])] = 1.0
    return mac, mic


def soft_ce_np(logits: np.ndarray, target: np.ndarray) -> float:
    """Mean over pixels of ``-sum_c t_c log softmax(z)_c``, logits and target ``(N, C, H, W)``."""
    logits, target = np.asarray(logits, np.float64), np.asarray(target, np.float64)
    total, count = 0.0, 0
    for idx in np.ndindex(logits.shape[:1] + logits.shape[2:]):
        z = [logits[(idx[0], k, *idx[1:])] for k in range(logits.shape[1])]
        top = max(z)
        log_norm = top + math.log(sum(math.exp(v - top) for v in z))
        total -= sum(target[(idx[0], k, *idx[1:])] * (z[k] - log_norm) for k in range(len(z)))
        count += 1
    return total / count


def path_target_np(w: np.ndarray) -> np.ndarray:
    """A multi-class path's soft target: the class maps of ``w`` and background ``1 - sum_c w_c``."""
    out = np.array(w, np.float64)
    out[:, 0] = 1.0 - out[:, 1:].sum(1)
    return out
