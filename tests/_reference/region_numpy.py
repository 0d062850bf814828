"""Plain numpy (float64) re-derivations of the region losses in ``medbalance.losses.region``.

Written from the formulas of SPEC section 2 and seed 003 (sections 4, 6, 7, 8, 11), with
explicit loops over images and classes; no torch, no code shared with the library. The
target and activation helpers are those of :mod:`tests._reference.losses_numpy`.
"""

from __future__ import annotations

import numpy as np

from tests._reference.losses_numpy import dense_target, reduce_images, sigmoid, softmax


def _prepare(logits, target, include_background, weight, ignore_index):
    """``(P, G, keep, w)``: probabilities and target ``(N, K, M)`` zeroed at ignored elements,
    ``keep`` ``(N, 1, M)`` and class weights ``(K,)``."""
    x = logits.astype(np.float64)
    g, valid = dense_target(x, target, ignore_index)
    n, c = x.shape[:2]
    w = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64)
    p = sigmoid(x) if c == 1 else softmax(x)
    if c > 1 and not include_background:
        p, g, w = p[:, 1:], g[:, 1:], w[1:]
    keep = valid.reshape(n, 1, -1).astype(np.float64)
    return p.reshape(n, p.shape[1], -1) * keep, g.reshape(n, g.shape[1], -1) * keep, keep, w


def _rows(batch_reduction, *arrays):
    """Per image ``[(a_0, b_0, ...), ...]``, or one pooled ``[(a, b, ...)]`` for ``"batch"``."""
    if batch_reduction == "batch":
        return [tuple(np.concatenate(list(a), axis=-1) for a in arrays)]
    return list(zip(*arrays))


def _tversky(p, g, alpha, beta, smooth):
    tp = (p * g).sum()
    fp = (p * (1.0 - g)).sum()
    fn = ((1.0 - p) * g).sum()
    den = tp + alpha * fp + beta * fn + smooth
    return (tp + smooth) / den if den > 0 else 1.0


def focal_tversky_loss(
    logits,
    target,
    *,
    gamma=0.75,
    alpha=0.3,
    beta=0.7,
    smooth=1e-5,
    include_background=True,
    weight=None,
    batch_reduction="image",
    ignore_index=None,
    reduction="mean",
):
    p, g, keep, w = _prepare(logits, target, include_background, weight, ignore_index)
    per_image = []
    for pi, gi in _rows(batch_reduction, p, g):
        losses = [max(1.0 - _tversky(pi[k], gi[k], alpha, beta, smooth), 0.0) ** gamma for k in range(len(w))]
        per_image.append((np.asarray(losses) * w).sum() / w.sum())
    return reduce_images(per_image, batch_reduction, reduction)


def sensitivity_specificity_loss(
    logits,
    target,
    *,
    lam=0.05,
    smooth=1e-5,
    include_background=True,
    weight=None,
    batch_reduction="image",
    ignore_index=None,
    reduction="mean",
):
    p, g, keep, w = _prepare(logits, target, include_background, weight, ignore_index)
    per_image = []
    for pi, gi, ki in _rows(batch_reduction, p, g, keep):
        losses = []
        for k in range(len(w)):
            r, q, valid = gi[k], pi[k], ki[0]
            err = (r - q) ** 2
            miss_den = r.sum() + smooth
            alarm_den = ((1 - r) * valid).sum() + smooth
            miss = (err * r).sum() / miss_den if miss_den > 0 else 0.0
            alarm = (err * (1 - r) * valid).sum() / alarm_den if alarm_den > 0 else 0.0
            losses.append(lam * miss + (1 - lam) * alarm)
        per_image.append((np.asarray(losses) * w).sum() / w.sum())
    return reduce_images(per_image, batch_reduction, reduction)


def generalized_dice_loss(
    logits,
    target,
    *,
    smooth=1e-5,
    include_background=True,
    weight=None,
    batch_reduction="image",
    ignore_index=None,
    reduction="mean",
):
    """Sudre et al.: ``w_l = 1 / V_l^2``; an absent class takes the largest weight present. Binary
    logits count both labels (seed 003: background ``1 - p``, foreground ``p``)."""
    p, g, keep, w = _prepare(logits, target, include_background, weight, ignore_index)
    if logits.shape[1] == 1:
        p, g = np.concatenate([keep - p, p], axis=1), np.concatenate([keep - g, g], axis=1)
        w = np.concatenate([[1.0], w]) if len(w) == 1 else w
    per_image = []
    for pi, gi in _rows(batch_reduction, p, g):
        volumes = gi.sum(axis=1)
        present = volumes > 0
        vw = np.zeros_like(volumes)
        vw[present] = 1.0 / volumes[present] ** 2
        vw[~present] = vw.max()
        vw = vw * w
        num = 2 * sum(vw[k] * (pi[k] * gi[k]).sum() for k in range(len(w))) + smooth
        den = sum(vw[k] * (pi[k].sum() + gi[k].sum()) for k in range(len(w))) + smooth
        per_image.append(1.0 - num / den if den > 0 else 0.0)
    return reduce_images(per_image, batch_reduction, reduction)


def two_sided_dice_loss(logits, target, *, smooth_nr, smooth_dr, batch_reduction="image", ignore_index=None):
    """Seed 003's binary ``DL_2 = 1 - (sum p r + e) / (sum p + r + e) - (sum (1-p)(1-r) + e) / (sum 2 - p - r + e)``,
    with the numerator's and the denominator's ``e`` given separately."""
    p, g, keep, _ = _prepare(logits, target, True, None, ignore_index)
    per_image = []
    for pi, ri, ki in _rows(batch_reduction, p[:, 0], g[:, 0], keep[:, 0]):
        fg = ((pi * ri).sum() + smooth_nr) / ((pi + ri).sum() + smooth_dr)
        bg = (((1 - pi) * (1 - ri) * ki).sum() + smooth_nr) / (((2 - pi - ri) * ki).sum() + smooth_dr)
        per_image.append(1.0 - fg - bg)
    return reduce_images(per_image, batch_reduction, "mean")


def exp_log_loss(
    logits,
    target,
    *,
    gamma_dice=0.3,
    gamma_cross=0.3,
    w_dice=0.8,
    w_cross=0.2,
    class_frequencies=None,
    smooth=1e-5,
    include_background=True,
    weight=None,
    batch_reduction="image",
    ignore_index=None,
    reduction="mean",
):
    """Wong et al. 2018: ``w_dice E_c[(-ln Dice_c)^g_d] + w_cross E_x[w_l v_l (-ln p_l)^g_c]``."""
    p, g, keep, w = _prepare(logits, target, include_background, weight, ignore_index)
    # cross term: every label (binary: background and foreground), weights v with v_0 = 0 when
    # the background is excluded
    x = logits.astype(np.float64)
    n, c = x.shape[:2]
    full, _ = dense_target(x, target, ignore_index)
    full = full.reshape(n, c, -1)
    if c == 1:
        probs = sigmoid(x).reshape(n, 1, -1)
        probs, full = np.concatenate([1 - probs, probs], 1), np.concatenate([1 - full, full], 1)
        v = np.array([1.0, 1.0 if weight is None else float(weight[0])])
    else:
        probs = softmax(x).reshape(n, c, -1)
        v = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64).copy()
        if not include_background:
            v[0] = 0.0
    full = full * keep
    weighted = weight is not None or (c > 1 and not include_background)
    freq = full.sum(axis=(0, 2)) if class_frequencies is None else np.asarray(class_frequencies, dtype=np.float64)
    label_w = np.array([np.sqrt(freq.sum() / f) if f > 0 else 0.0 for f in freq])
    per_image = []
    for pi, gi, fi, qi, ki in _rows(batch_reduction, p, g, full, probs, keep):
        dice_terms = []
        for k in range(len(w)):
            den = pi[k].sum() + gi[k].sum() + smooth
            dice = (2 * (pi[k] * gi[k]).sum() + smooth) / den if den > 0 else 1.0
            dice_terms.append(max(-np.log(dice), 0.0) ** gamma_dice)
        dice_term = (np.asarray(dice_terms) * w).sum() / w.sum()
        total = sum((fi[k] * v[k] * label_w[k] * (-np.log(qi[k])) ** gamma_cross).sum() for k in range(len(v)))
        # elements of a class of weight 0 are not counted; without weights every kept element is
        count = sum(fi[k].sum() for k in range(len(v)) if v[k] > 0) if weighted else ki.sum()
        per_image.append(w_dice * dice_term + w_cross * (total / count if count > 0 else 0.0))
    return reduce_images(per_image, batch_reduction, reduction)
