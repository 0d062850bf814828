"""Plain numpy (float64) re-derivations of the pixel / sample-wise and long-tail losses:
weighted CE (seed 003), focal (seeds 002/003 and torchvision's sigmoid form), online
bootstrapping (seed 002), CSCE, LDAM-DRW and the dynamic losses (seed 001).

Written from the formulas, with explicit loops over classes, images and samples; no torch.
"""

from __future__ import annotations

import numpy as np

from tests._reference.losses_numpy import cross_entropy, dense_target, sigmoid, softmax


def _reduce(per: np.ndarray, valid: np.ndarray, reduction: str, norm: np.ndarray | None = None):
    per = per * valid
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    denominator = valid.sum() if norm is None else (norm * valid).sum()
    return per.sum() / denominator if denominator > 0 else 0.0


def _class_probs(logits: np.ndarray, target: np.ndarray, ignore_index):
    """``(P, G, valid)`` over ``K = max(C, 2)`` classes: binary becomes (1 - p, p)."""
    x = logits.astype(np.float64)
    g, valid = dense_target(x, target, ignore_index)
    if x.shape[1] == 1:
        p = sigmoid(x)
        return np.concatenate([1 - p, p], 1), np.concatenate([1 - g, g], 1) * valid[:, None], valid
    return softmax(x), g, valid


def wce(logits, target, *, count_from="prediction", include_background=True, ignore_index=None, reduction="mean"):
    """Seed 003: w_c = (N - n_c) / n_c per foreground class (1 when n_c is 0 or N), then CE."""
    x = logits.astype(np.float64)
    g, valid = dense_target(x, target, ignore_index)
    mass = g if count_from == "target" else (sigmoid(x) if x.shape[1] == 1 else softmax(x))
    total = valid.sum()
    w = []
    for c in range(x.shape[1]):
        n = (mass[:, c] * valid).sum()
        w.append((total - n) / max(n, 1.0) if 0 < n < total else 1.0)
    if x.shape[1] > 1:
        w[0] = 1.0
    return cross_entropy(
        logits, target, weight=w, include_background=include_background, ignore_index=ignore_index, reduction=reduction
    )


def focal(
    logits, target, *, gamma=2.0, alpha=None, weight=None, include_background=True, ignore_index=None, reduction="mean"
):
    """``-sum_k a_k w_k y_k (1 - p_k)^gamma log p_k``, plain mean over counted elements."""
    p, g, valid = _class_probs(logits, target, ignore_index)
    k = p.shape[1]
    if alpha is None:
        a = np.ones(k)
    elif np.ndim(alpha) == 0:
        a = np.array([1 - alpha] + [alpha] * (k - 1))
    else:
        a = np.asarray(alpha, dtype=np.float64)
    w = np.ones(k)
    if weight is not None:
        w = np.concatenate([[1.0], weight]) if logits.shape[1] == 1 else np.asarray(weight, dtype=np.float64).copy()
    if not include_background and logits.shape[1] > 1:
        w[0] = 0.0
    per = np.zeros(valid.shape)
    for c in range(k):
        per -= a[c] * w[c] * g[:, c] * (1 - p[:, c]) ** gamma * np.log(p[:, c])
    return _reduce(per, valid, reduction)


def sigmoid_focal_torchvision(logits, target, *, alpha=0.25, gamma=2.0, reduction="mean"):
    """torchvision.ops.sigmoid_focal_loss: ``alpha_t (1 - p_t)^gamma BCE`` element-wise."""
    x, y = logits.astype(np.float64), target.astype(np.float64)
    p = sigmoid(x)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    p_t = p * y + (1 - p) * (1 - y)
    loss = bce * (1 - p_t) ** gamma
    if alpha is not None and alpha >= 0:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def hard_pixel_selection(logits, target, *, hard_num, ignore_index=None):
    """Bool ``(N, *spatial)``: per image the ``hard_num`` valid pixels of largest mean |p - y|."""
    x = logits.astype(np.float64)
    g, valid = dense_target(x, target, ignore_index)
    p = sigmoid(x) if x.shape[1] == 1 else softmax(x)
    selected = np.zeros(valid.shape, dtype=bool)
    for i in range(x.shape[0]):
        d = np.abs(p[i] - g[i]).mean(axis=0).ravel()
        candidates = np.flatnonzero(valid[i].ravel())
        order = candidates[np.argsort(-d[candidates], kind="stable")]
        chosen = np.zeros(d.size, dtype=bool)
        chosen[order[:hard_num]] = True
        selected[i] = chosen.reshape(valid[i].shape)
    return selected


def online_bootstrapping(
    logits, target, *, hard_num, weight=None, include_background=True, ignore_index=None, reduction="mean"
):
    """Cross entropy (binary: BCE with positive weight) over the selected pixels only."""
    x = logits.astype(np.float64)
    g, valid = dense_target(x, target, ignore_index)
    keep = hard_pixel_selection(logits, target, hard_num=hard_num, ignore_index=ignore_index)
    c = x.shape[1]
    if c == 1:
        p = sigmoid(x[:, 0])
        pos = 1.0 if weight is None else float(weight[0])
        per = -(pos * g[:, 0] * np.log(p) + (1 - g[:, 0]) * np.log(1 - p))
        return _reduce(per, keep, reduction)
    w = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64).copy()
    if not include_background:
        w[0] = 0.0
    logp = np.log(softmax(x))
    per, norm = np.zeros(valid.shape), np.zeros(valid.shape)
    for k in range(c):
        per -= w[k] * g[:, k] * logp[:, k]
        norm += w[k] * g[:, k]
    weighted = weight is not None or not include_background
    return _reduce(per, keep, reduction, norm if weighted else None)


def hard_pixel_fractions(logits, target, *, hard_num, ignore_index=None):
    _, g, _ = _class_probs(logits, target, ignore_index)
    keep = hard_pixel_selection(logits, target, hard_num=hard_num, ignore_index=ignore_index)
    counts = np.array([(g[:, k] * keep).sum() for k in range(g.shape[1])])
    return counts / counts.sum() if counts.sum() > 0 else counts


def effective_weights(counts, beta):
    """Cui et al.: (1 - beta) / (1 - beta^n), scaled to sum to the number of classes."""
    n = np.asarray(counts, dtype=np.float64)
    raw = (1 - beta) / (1 - np.power(beta, n))
    return raw * len(n) / raw.sum()


def _weighted_softmax_ce(z, g, valid, w, reduction):
    logp = np.log(softmax(z))
    per, norm = np.zeros(valid.shape), np.zeros(valid.shape)
    for k in range(z.shape[1]):
        per -= w[k] * g[:, k] * logp[:, k]
        norm += w[k] * g[:, k]
    return _reduce(per, valid, reduction, norm)


def csce(logits, target, *, class_counts, beta=0.9999, include_background=True, ignore_index=None, reduction="mean"):
    x = logits.astype(np.float64)
    _, g, valid = _class_probs(logits, target, ignore_index)
    z = np.concatenate([np.zeros_like(x), x], 1) if x.shape[1] == 1 else x
    w = effective_weights(class_counts, beta)
    if not include_background and x.shape[1] > 1:
        w[0] = 0.0
    return _weighted_softmax_ce(z, g, valid, w, reduction)


def ldam(
    logits,
    target,
    *,
    class_counts,
    max_margin=0.5,
    scale=30.0,
    drw_start=0.8,
    beta=0.9999,
    progress=0.0,
    ignore_index=None,
    reduction="mean",
):
    """Per sample: subtract m_y from the true-class logit (soft: (sum_c m_c y_c) y), scale, CE."""
    x = logits.astype(np.float64)
    _, g, valid = _class_probs(logits, target, ignore_index)
    z = np.concatenate([np.zeros_like(x), x], 1) if x.shape[1] == 1 else x.copy()
    n = np.asarray(class_counts, dtype=np.float64)
    m = n**-0.25
    m = m * max_margin / m.max()
    shifted = np.empty_like(z)
    for i in np.ndindex(valid.shape):
        yi = g[(i[0], slice(None), *i[1:])]
        zi = z[(i[0], slice(None), *i[1:])]
        shifted[(i[0], slice(None), *i[1:])] = scale * (zi - (m * yi).sum() * yi)
    drw = drw_start is not None and progress >= drw_start
    w = effective_weights(n, beta) if drw else np.ones(len(n))
    if not drw:
        per = np.zeros(valid.shape)
        logp = np.log(softmax(shifted))
        for k in range(z.shape[1]):
            per -= g[:, k] * logp[:, k]
        return _reduce(per, valid, reduction)
    return _weighted_softmax_ce(shifted, g, valid, w, reduction)


def dynamic(first: float, second: float, progress: float) -> float:
    theta = 1.0 - progress**2
    return theta * first + (1.0 - theta) * second
