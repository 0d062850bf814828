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

import numpy as np
import torch
from scipy import ndimage

__all__ = ["postprocess_labels", "postprocess_batch"]


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
