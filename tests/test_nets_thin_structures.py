"""Every segmentation net learns a thin-structure phantom beyond the all-foreground Dice (issue 19, item 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medbalance.losses import DiceCELoss
from medbalance.nets import SEGMENTATION_NETS, build_net


def thin_lines(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noisy images with three random straight lines about 2.5 px wide (~10-15% of the pixels)."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    images, masks = [], []
    for _ in range(n):
        mask = np.zeros((size, size), bool)
        for _ in range(3):
            angle, centre = g.uniform(0, np.pi), g.uniform(0.2 * size, 0.8 * size, 2)
            mask |= np.abs((xx - centre[0]) * np.sin(angle) - (yy - centre[1]) * np.cos(angle)) < 1.25
        images.append(mask + g.normal(0.0, 0.4, (size, size)))
        masks.append(mask)
    return torch.tensor(np.array(images), dtype=torch.float32)[:, None], torch.tensor(np.array(masks)).long()


def _dice(logits: torch.Tensor, target: torch.Tensor) -> float:
    pred, truth = (logits[:, 0] > 0).float(), target.float()
    return float(2 * (pred * truth).sum() / (pred.sum() + truth.sum()))


@pytest.mark.slow
@pytest.mark.parametrize("name", SEGMENTATION_NETS)
def test_learns_thin_structures_beyond_all_foreground(name, one_thread):
    torch.manual_seed(0)
    x, y = thin_lines(64, 32, seed=0)
    x_val, y_val = thin_lines(16, 32, seed=1)
    net = build_net(name, in_channels=1, num_classes=1, base_channels=8)
    loss_fn = DiceCELoss()
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(0)
    for _ in range(150):
        batch = torch.randint(0, len(x), (8,), generator=order)
        out = net(x[batch])
        loss = loss_fn(out[0] if isinstance(out, (list, tuple)) else out, y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.inference_mode():
        logits = net.eval()(x_val)
    share = float(y_val.float().mean())
    all_foreground = 2 * share / (1 + share)
    assert _dice(logits, y_val) > all_foreground + 0.05, f"{name}: no better than predicting every pixel"
