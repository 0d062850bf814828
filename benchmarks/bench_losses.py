"""Forward + backward time of every segmentation loss, beside MONAI's equivalent and plain CE.

For each loss of :data:`medbalance.losses.LOSSES` that applies to segmentation logits, one
group times ``loss(logits, target).backward()`` on logits (8, 7, 128, 128) (softmax, integer
labels) and (8, 1, 128, 128) (sigmoid, binary labels): medbalance first, then MONAI's loss
computing the same quantity where MONAI has one, then ``F.cross_entropy`` /
``F.binary_cross_entropy_with_logits`` as the floor every loss pays at least once. The
column ``ours/this`` > 1 means medbalance is faster.

MONAI argument mapping (equal values are tested in ``tests/test_losses*.py``): labels are
given to MONAI as ``(N, 1, H, W)`` with ``to_onehot_y=True`` for softmax; ``softmax=True``
for C = 7 and ``sigmoid=True`` for C = 1. MONAI's ``DiceFocalLoss`` has no softmax focal term,
so at C = 7 it is timed as the loss a MONAI user would pick, not as the same quantity.
"""

from __future__ import annotations

from collections.abc import Callable

import monai
import torch
import torch.nn.functional as F
from monai import losses as ML

from benchmarks.harness import Case, Group, Row, run_groups
from medbalance.losses import LOSSES, build_loss

__all__ = ["run"]

# Losses that need class counts get these (CoNIC-like proportions, background first).
_COUNTS = [83975, 126, 10308, 1855, 551, 103, 3081]
# LDAM accepts segmentation maps but is a long-tail classification loss (with a cosine
# classifier head, SPEC 10); its cost on a segmentation map is not a figure users need.
_CLASSIFICATION_ONLY = {"ldam"}


def _monai(name: str, binary: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    act = {"sigmoid": True} if binary else {"softmax": True, "to_onehot_y": True}
    factories = {
        "dice": lambda: ML.DiceLoss(**act),
        "iou": lambda: ML.DiceLoss(jaccard=True, **act),
        "tversky": lambda: ML.TverskyLoss(alpha=0.3, beta=0.7, **act),
        "generalized_dice": lambda: ML.GeneralizedDiceLoss(**act),
        "dice_ce": lambda: ML.DiceCELoss(**act),
        "bce_dice": lambda: ML.DiceCELoss(**act),
        # MONAI's focal term is a sigmoid focal even with softmax=True: the same cost, not the same value
        "dice_focal": lambda: ML.DiceFocalLoss(gamma=2.0, **act),
        "focal": lambda: ML.FocalLoss(gamma=2.0, **({"to_onehot_y": True, "use_softmax": True} if not binary else {})),
    }
    factory = factories.get(name)
    return None if factory is None else factory()


def _step(loss: Callable, logits: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    def fn() -> None:
        logits.grad = None
        loss(logits, target).backward()

    return fn


def run(*, quick: bool = False, device: str = "cpu", channels_last: bool = False) -> list[Row]:
    """Time every applicable loss on multi-class and binary logits (``quick``: 2x32x32)."""
    batch, side = (2, 32) if quick else (8, 128)
    warmup, repeats = (1, 2) if quick else (2, 9)
    generator = torch.Generator().manual_seed(0)
    groups = []
    for channels in (7, 1):
        binary = channels == 1
        logits = (3 * torch.randn(batch, channels, side, side, generator=generator)).to(device).requires_grad_()
        labels = torch.randint(0, 2 if binary else channels, (batch, side, side), generator=generator).to(device)
        ours_target = labels
        monai_target = labels.unsqueeze(1).float() if binary else labels.unsqueeze(1)
        counts = _COUNTS[:2] if binary else _COUNTS
        floor = (
            (lambda z, y: F.binary_cross_entropy_with_logits(z, y)) if binary else (lambda z, y: F.cross_entropy(z, y))
        )
        floor_target = labels.unsqueeze(1).float() if binary else labels
        for name in LOSSES:
            if name in _CLASSIFICATION_ONLY:
                continue
            ours = build_loss(name, class_counts=counts, binary=binary).to(device)
            cases = [Case(impl=f"medbalance {name}", fn=_step(ours, logits, ours_target), items=batch, params=0)]
            theirs = _monai(name, binary)
            if theirs is not None:
                cases.append(
                    Case(
                        impl=f"monai {type(theirs).__name__}",
                        fn=_step(theirs, logits, monai_target),
                        items=batch,
                        params=0,
                    )
                )
            cases.append(Case(impl="torch CE (floor)", fn=_step(floor, logits, floor_target), items=batch, params=0))
            extra = {"device": device, "monai": monai.__version__}
            groups.append(Group(name=f"loss {name} {batch}x{channels}x{side}x{side}", cases=cases, extra=extra))
    return run_groups(groups, warmup=warmup, repeats=repeats)
