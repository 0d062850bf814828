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
