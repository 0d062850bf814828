"""Post-processing of predicted label maps: nnU-Net's "keep only the largest component", hole filling.

nnU-Net decides on its cross-validation whether removing all but the largest connected
component of each foreground class improves the out-of-fold Dice, and applies it to every
later prediction. medbalance makes both operations recipe options (``evaluation:
{largest_component, fill_holes}``) applied wherever a run turns logits into labels:
validation, the test scores, ``evaluate``, ``predict``, the fold ensemble; ``export``
records them in the model's ``postprocessing`` metadata. Probabilities are never changed.

Per foreground class ``c`` in increasing order, on one case's label map:

- ``largest_component``: of the connected components of ``labels == c`` (face connectivity:
  4-neighbours in 2D, 6 in 3D, ``scipy.ndimage.label``'s default), only the largest stays;
  the others become background (0). Ties go to the component met first in C order.
- ``fill_holes``: background pixels enclosed by class ``c`` (not connected to the image
  border through background or other classes' pixels outside ``c``: ``scipy.ndimage.binary_fill_holes``
  of ``labels == c``) become ``c``; other classes' pixels inside ``c`` stay.

Example:
    >>> labels = np.array([[1, 1, 0, 0, 1],
    ...                    [1, 0, 1, 0, 0],
    ...                    [1, 1, 1, 0, 0]])
    >>> postprocess_labels(labels, largest_component=True, fill_holes=True)
    array([[1, 1, 0, 0, 0],
           [1, 1, 1, 0, 0],
           [1, 1, 1, 0, 0]])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import ndimage

if TYPE_CHECKING:
    from medbalance.data.datasets import ArrayDataset
    from medbalance.engine.run import LoadedRun

__all__ = ["postprocess_labels", "postprocess_batch", "compare_postprocessing", "VARIANTS"]

#: The settings :func:`compare_postprocessing` scores, by name.
VARIANTS = {
    "none": {},
    "largest_component": {"largest_component": True},
    "fill_holes": {"fill_holes": True},
    "both": {"largest_component": True, "fill_holes": True},
}


def postprocess_labels(labels: np.ndarray, *, largest_component: bool = False, fill_holes: bool = False) -> np.ndarray:
    """One case's label map ``(*spatial)`` after the chosen operations (a new array; the input is kept).

    Args:
        labels: integer labels of one case, 0 = background, any number of spatial axes.
        largest_component: keep only the largest connected component of each foreground class.
        fill_holes: fill the background holes enclosed by each foreground class with that class.

    Returns:
        An array of the same shape and dtype.
    """
    out = np.array(labels, copy=True)
    if not (largest_component or fill_holes):
        return out
    for c in np.unique(out):
        if c == 0:
            continue
        mask = out == c
        if largest_component:
            components, count = ndimage.label(mask)
            if count > 1:
                sizes = np.bincount(components.ravel())
                sizes[0] = 0  # background of the mask
                out[mask & (components != sizes.argmax())] = 0
                mask = out == c
        if fill_holes:
            out[ndimage.binary_fill_holes(mask) & (out == 0)] = c
    return out


def postprocess_batch(
    labels: torch.Tensor, *, largest_component: bool = False, fill_holes: bool = False
) -> torch.Tensor:
    """:func:`postprocess_labels` on each case of ``(N, *spatial)`` labels; same device and dtype."""
    if not (largest_component or fill_holes):
        return labels
    cases = [
        postprocess_labels(case, largest_component=largest_component, fill_holes=fill_holes)
        for case in labels.cpu().numpy()
    ]
    return torch.from_numpy(np.stack(cases)).to(labels.device)


def compare_postprocessing(run: LoadedRun, data: ArrayDataset) -> dict:
    """Mean foreground Dice of a native-geometry run's labels on ``data`` with each of :data:`VARIANTS`.

    The decision nnU-Net makes on its cross-validation: score the run's own validation split
    (or a fold's), never the test split, and set the keys that raise the mean. The run predicts
    each case once (:func:`medbalance.engine.run.predict_image`, without the run's own
    post-processing); every variant post-processes those labels.

    Returns:
        ``{"cases": [names], "dice": {variant: [per case]}, "mean": {variant: mean}}``; a case's
        Dice is the mean over the foreground classes present in its ground truth (classes absent
        from it are left out, as ``evaluation.empty: skip``; a case with none is left out).
    """
    from medbalance.engine.run import predict_image

    own = run.task.largest_component, run.task.fill_holes
    run.task.largest_component = run.task.fill_holes = False
    try:
        names, dice = [], {name: [] for name in VARIANTS}
        for i in range(len(data)):
            target = np.asarray(data.target[i])
            if data.ignore_index is not None:
                target = np.where(target == data.ignore_index, -1, target)
            classes = [c for c in np.unique(target) if c > 0]
            if not classes:
                continue
            _, labels = predict_image(run, data.images[i], spacing=data.spacing_of(i))
            names.append(data.names[i])
            for name, settings in VARIANTS.items():
                pred = postprocess_labels(labels, **settings)
                scored = target >= 0
                per_class = [
                    2 * np.sum((pred == c) & (target == c)) / (np.sum((pred == c) & scored) + np.sum(target == c))
                    for c in classes
                ]
                dice[name].append(float(np.mean(per_class)))
    finally:
        run.task.largest_component, run.task.fill_holes = own
    return {
        "cases": names,
        "dice": dice,
        "mean": {name: float(np.mean(v)) if v else float("nan") for name, v in dice.items()},
    }
