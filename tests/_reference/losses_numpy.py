"""Plain numpy (float64) re-derivations of the losses in ``medbalance.losses``.

Written from the formulas in SPEC section 2 with explicit loops over classes where that keeps
them obviously right; no torch, no code shared with the library.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def dense_target(logits: np.ndarray, target: np.ndarray, ignore_index: int | None = None):
    """Return ``(G, valid)``: float ``(N, C, *spatial)`` target and bool ``(N, *spatial)`` mask."""
    n, c = logits.shape[:2]
    spatial = logits.shape[2:]
    if np.issubdtype(target.dtype, np.floating):
        return target.astype(np.float64), np.ones((n, *spatial), dtype=bool)
    labels = target.reshape((n, *spatial)).astype(np.int64)
    valid = np.ones_like(labels, dtype=bool) if ignore_index is None else labels != ignore_index
    labels = np.where(valid, labels, 0)
    if c == 1:
        g = labels[:, None].astype(np.float64)
    else:
        g = np.stack([(labels == k) for k in range(c)], axis=1).astype(np.float64)
    return g * valid[:, None], valid


def cross_entropy(
    logits: np.ndarray,
    target: np.ndarray,
    *,
    weight=None,
    include_background: bool = True,
    ignore_index: int | None = None,
    reduction: str = "mean",
):
    x = logits.astype(np.float64)
    g, valid = dense_target(x, target, ignore_index)
    c = x.shape[1]
    if c == 1:
        p = sigmoid(x[:, 0])
        pos = 1.0 if weight is None else float(weight[0])
        y = g[:, 0]
        per = -(pos * y * np.log(p) + (1.0 - y) * np.log1p(-p))
        norm = np.ones_like(per)
    else:
        w = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64).copy()
        if not include_background:
            w[0] = 0.0
        logp = np.log(softmax(x))
        per = np.zeros(g[:, 0].shape)
        norm = np.zeros(g[:, 0].shape)
        for k in range(c):
            per -= w[k] * g[:, k] * logp[:, k]
            norm += w[k] * g[:, k]
        if weight is None and include_background:
            norm = np.ones_like(per)
    per, norm = per * valid, norm * valid
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / norm.sum() if norm.sum() > 0 else 0.0


def dice_loss(
    logits: np.ndarray,
    target: np.ndarray,
    *,
    smooth: float = 1e-5,
    include_background: bool = True,
    weight=None,
    batch_reduction: str = "image",
    squared: bool = False,
    two_sided: bool = False,
    ignore_index: int | None = None,
    reduction: str = "mean",
):
    x = logits.astype(np.float64)
    g, valid = dense_target(x, target, ignore_index)
    c = x.shape[1]
    w = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64)
    if c == 1:
        p = sigmoid(x)
        if two_sided:
            p, g, w = np.concatenate([1 - p, p], 1), np.concatenate([1 - g, g], 1), np.concatenate([[1.0], w])
    else:
        p = softmax(x)
        if not include_background:
            p, g, w = p[:, 1:], g[:, 1:], w[1:]
    p, g = p * valid[:, None], g * valid[:, None]
    if batch_reduction == "batch":  # pool the batch into one image
        p, g = np.concatenate(list(p), axis=-1)[None], np.concatenate(list(g), axis=-1)[None]
    per_image = []
    for pi, gi in zip(p, g):
        losses = []
        for k in range(pi.shape[0]):
            inter = (pi[k] * gi[k]).sum()
            den = (pi[k] ** 2).sum() + (gi[k] ** 2).sum() if squared else pi[k].sum() + gi[k].sum()
            dice = (2 * inter + smooth) / (den + smooth) if den + smooth > 0 else 1.0
            losses.append(1.0 - dice)
        per_image.append((np.asarray(losses) * w).sum() / w.sum())
    return reduce_images(per_image, batch_reduction, reduction)


def reduce_images(per_image, batch_reduction, reduction):
    """Per-image losses to the result: the pooled value for ``"batch"``, else ``reduction``."""
    per_image = np.asarray(per_image)
    if batch_reduction == "batch":
        return per_image[0]
    if reduction == "none":
        return per_image
    return per_image.sum() if reduction == "sum" else per_image.mean()
