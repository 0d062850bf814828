"""Forward + backward time of every segmentation loss, beside MONAI's equivalent and plain CE.

For each loss of :data:`medbalance.losses.LOSSES` that applies to segmentation logits, one
group times ``loss(logits, target).backward()`` on logits (8, 7, 128, 128) (softmax, integer
labels) and (8, 1, 128, 128) (sigmoid, binary labels): medbalance first, then MONAI's loss
computing the same quantity where MONAI has one, then ``F.cross_entropy`` /
``F.binary_cross_entropy_with_logits`` as the floor every loss pays at least once (binary:
given the float mask, and given the int64 labels medbalance gets, converted inside the
call). The column ``ours/this`` > 1 means medbalance is faster.

MONAI argument mapping (equal values are tested in ``tests/test_losses*.py``): labels are
given to MONAI as ``(N, 1, H, W)`` with ``to_onehot_y=True`` for softmax; ``softmax=True``
for C = 7 and ``sigmoid=True`` for C = 1. MONAI's ``DiceFocalLoss`` has no softmax focal term,
so at C = 7 it is timed as the loss a MONAI user would pick, not as the same quantity.

Both libraries get the same int64 label map, as a view ``(N, 1, H, W)`` for MONAI: at C = 7
MONAI one-hot encodes it inside the timed call, and at C = 1 it multiplies it into the
probabilities as it is. On the binary shape a second MONAI row gets the labels already
converted to float32 outside the timed call (what a MONAI pipeline loading float masks
hands it), so the cost of that conversion, which medbalance pays inside the call, is
visible rather than hidden.

``python -m benchmarks.bench_losses [--repeats R] [--losses a,b]`` times the same cases by
CPU time instead (``time.process_time`` per call, 1 thread, cases interleaved, min and
median): on a machine shared with other jobs the time a call spends descheduled does not
count, so ratios stay readable when wall-clock medians are not.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import monai
import torch
import torch.nn.functional as F
from monai import losses as ML

from benchmarks.harness import Case, Group, Row, interleaved_times, run_groups
from medbalance.losses import LOSSES, build_loss

__all__ = ["cpu_times", "run"]

# Losses that need class counts get these (CoNIC-like proportions, background first).
_COUNTS = [83975, 126, 10308, 1855, 551, 103, 3081]
# LDAM and label-aware smoothing accept segmentation maps but are long-tail classification
# losses (LDAM with a cosine head, SPEC 10; smoothing in MiSLAS stage 2); their cost on a
# segmentation map is not a figure users need.
_CLASSIFICATION_ONLY = {"ldam", "label_aware_smoothing"}


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


def _groups(*, quick: bool, device: str) -> list[Group]:
    """One group per applicable loss and shape: medbalance, MONAI where it has the loss, the floor."""
    batch, side = (2, 32) if quick else (8, 128)
    generator = torch.Generator().manual_seed(0)
    groups = []
    for channels in (7, 1):
        binary = channels == 1
        logits = (3 * torch.randn(batch, channels, side, side, generator=generator)).to(device).requires_grad_()
        labels = torch.randint(0, 2 if binary else channels, (batch, side, side), generator=generator).to(device)
        ours_target = labels
        monai_target = labels.unsqueeze(1)
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
                label = f"monai {type(theirs).__name__}"
                cases.append(Case(impl=label, fn=_step(theirs, logits, monai_target), items=batch, params=0))
                if binary:
                    float_step = _step(theirs, logits, floor_target)
                    cases.append(Case(impl=f"{label} (float target)", fn=float_step, items=batch, params=0))
            cases.append(Case(impl="torch CE (floor)", fn=_step(floor, logits, floor_target), items=batch, params=0))
            if binary:  # the floor given what medbalance is given: the int64 labels
                int_floor = _step(lambda z, y: floor(z, y.unsqueeze(1).float()), logits, labels)
                cases.append(Case(impl="torch CE (floor, int labels)", fn=int_floor, items=batch, params=0))
            extra = {"device": device, "monai": monai.__version__}
            groups.append(Group(name=f"loss {name} {batch}x{channels}x{side}x{side}", cases=cases, extra=extra))
    return groups


def run(*, quick: bool = False, device: str = "cpu", channels_last: bool = False) -> list[Row]:
    """Time every applicable loss on multi-class and binary logits (``quick``: 2x32x32)."""
    warmup, repeats = (1, 2) if quick else (3, 21)
    return run_groups(_groups(quick=quick, device=device), warmup=warmup, repeats=repeats)


def _cpu_seconds(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def cpu_times(groups: Sequence[Group], *, warmup: int = 3, repeats: int = 30) -> list[tuple[str, str, float, float]]:
    """``(group, impl, min ms, median ms)`` of CPU time per call, the cases of a group interleaved."""
    results = []
    for group in groups:
        times = interleaved_times(group, warmup=warmup, repeats=repeats, clock=_cpu_seconds)
        for case, case_times in zip(group.cases, times):
            results.append((group.name, case.impl, 1e3 * min(case_times), 1e3 * statistics.median(case_times)))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_losses", description=__doc__)
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per case")
    parser.add_argument("--losses", default="", help="comma-separated loss names (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # process_time counts every thread: one keeps it a time per call
    wanted = [n for n in args.losses.split(",") if n]
    groups = [g for g in _groups(quick=False, device="cpu") if not wanted or g.name.split()[1] in wanted]
    print(f"CPU time per call, 1 thread, load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}")
    print("| benchmark | impl | min ms | median ms | time ours / this (min) | time ours / this (median) |")
    print("|---|---|---:|---:|---:|---:|")
    reference: tuple[float, float] = (1.0, 1.0)
    for name, impl, best, median in cpu_times(groups, repeats=args.repeats):
        if impl.startswith("medbalance"):
            reference = (best, median)
            ratios = "- | -"
        else:
            ratios = f"{reference[0] / best:.2f} | {reference[1] / median:.2f}"
        print(f"| {name} | {impl} | {best:.3f} | {median:.3f} | {ratios} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
