"""Loop-based numpy re-derivation of the metric definitions in SPEC sections 6, 7.6 and 10.

Written from the definitions, not from ``medbalance.metrics``: scores come from boolean
masks of the label maps (not from a confusion matrix), with explicit loops. Slow; only
for small test inputs.
"""

from __future__ import annotations

import numpy as np

SCORE_NAMES = ("dice", "iou", "precision", "recall")


def confusion_matrix_np(preds, target, num_classes, ignore_index=None):
    """(C, C) int64 matrix, rows = target, columns = prediction, one pixel at a time."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for t, p in zip(np.asarray(target).ravel().tolist(), np.asarray(preds).ravel().tolist()):
        if ignore_index is not None and t == ignore_index:
            continue
        cm[t, p] += 1
    return cm


def _pair(pred_mask, true_mask):
    """Scores of one (image, class) pair, or None when the class is absent from both."""
    predicted, actual = int(pred_mask.sum()), int(true_mask.sum())
    if predicted == 0 and actual == 0:
        return None
    inter = int(np.logical_and(pred_mask, true_mask).sum())
    union = int(np.logical_or(pred_mask, true_mask).sum())
    return {
        "dice": 2 * inter / (predicted + actual),
        "iou": inter / union,
        "precision": inter / predicted if predicted else 0.0,
        "recall": inter / actual if actual else 0.0,
    }


def segmentation_scores_np(preds, target, num_classes, *, per_image, ignore_index=None):
    """Dict with the keys of ``segmentation_scores``; per_image averages over dim 0."""
    preds, target = np.asarray(preds), np.asarray(target)
    if per_image:
        images = [(preds[i], target[i]) for i in range(target.shape[0])]
    else:
        images = [(preds, target)]
    kept = []
    for p, t in images:
        keep = np.ones(t.shape, dtype=bool) if ignore_index is None else t != ignore_index
        kept.append((p[keep], t[keep]))

    out = {name: [] for name in SCORE_NAMES}
    empty_per_class, absent = [], []
    for c in range(num_classes):
        pairs = [_pair(p == c, t == c) for p, t in kept]
        scored = [s for s in pairs if s is not None]
        empty_per_class.append(len(pairs) - len(scored))
        if not scored:
            absent.append(c)
        for name in SCORE_NAMES:
            out[name].append(float(np.mean([s[name] for s in scored])) if scored else 1.0)

    for suffix, first in (("", 0), ("_fg", 1)):
        classes = [c for c in range(first, num_classes) if c not in absent]
        for name in SCORE_NAMES:
            values = [out[name][c] for c in classes]
            out[f"mean_{name}{suffix}"] = float(np.mean(values)) if values else 1.0

    accuracies = [float(np.mean(p == t)) for p, t in kept if t.size]
    out["pixel_accuracy"] = float(np.mean(accuracies)) if accuracies else 1.0
    if per_image:
        out["num_images"] = len(images)
    out["empty_pairs"] = sum(empty_per_class)
    out["empty_per_class"] = empty_per_class
    out["absent_classes"] = absent
    return out


def classification_scores_np(preds, target, num_classes):
    """Accuracy and macro scores over classes present in the target (0/0 -> 0)."""
    preds, target = np.asarray(preds).ravel(), np.asarray(target).ravel()
    precision, recall, f1, support = [], [], [], []
    for c in range(num_classes):
        tp = int(np.sum((preds == c) & (target == c)))
        predicted, actual = int(np.sum(preds == c)), int(np.sum(target == c))
        precision.append(tp / predicted if predicted else 0.0)
        recall.append(tp / actual if actual else 0.0)
        f1.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
        support.append(actual)
    present = [c for c in range(num_classes) if support[c] > 0]
    return {
        "accuracy": float(np.mean(preds == target)),
        "macro_precision": float(np.mean([precision[c] for c in present])),
        "macro_recall": float(np.mean([recall[c] for c in present])),
        "macro_f1": float(np.mean([f1[c] for c in present])),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support,
        "num_samples": int(target.size),
        "absent_classes": [c for c in range(num_classes) if support[c] == 0],
    }
