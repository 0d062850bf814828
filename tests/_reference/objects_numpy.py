"""Connected objects by a plain breadth-first flood fill (4-connectivity), the reference for ``object_sizes``."""

from __future__ import annotations

from collections import deque

import numpy as np


def object_sizes_np(masks: np.ndarray, num_classes: int) -> list[list[int]]:
    """Per class, the sorted sizes of its 4-connected objects over every image of ``masks`` (N, H, W)."""
    sizes: list[list[int]] = [[] for _ in range(num_classes)]
    for mask in masks:
        seen = np.zeros(mask.shape, bool)
        for start in zip(*np.nonzero(mask > 0)):
            if seen[start]:
                continue
            label, size, queue = mask[start], 0, deque([start])
            seen[start] = True
            while queue:
                y, x = queue.popleft()
                size += 1
                for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                    inside = 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1]
                    if inside and not seen[ny, nx] and mask[ny, nx] == label:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
            sizes[label].append(size)
    return [sorted(s) for s in sizes]
