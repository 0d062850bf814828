"""Sliding-window inference: :func:`medbalance.engine.sliding_window_inference` vs MONAI's
``sliding_window_inference``, the same network, window, overlap, Gaussian blend and batch.

Usage::

    python -m benchmarks sliding                        # 565x584 (DRIVE) and 1024x1024, windows 128 and 64
    python -m benchmarks sliding --quick                # seconds-long smoke run
    python -m benchmarks sliding --sides 565x584 --windows 128 --repeats 9 --threads 2

The network is ``medbalance.nets.UNet(3, 1, base_channels=16)`` in ``eval()`` (3-channel input
like DRIVE's RGB, one binary logit), its weights as constructed (contiguous), its BatchNorm affine
parameters drawn at random and running statistics averaged over a few random batches, as a trained
network has them (so that folding changes the weights). One image per call, overlap 0.5,
``mode="gaussian"``, ``sigma_scale=0.125``, 4 windows per network call. Six cases per image size
and window, timed round-robin (:func:`benchmarks.harness.run_groups`):

* ``medbalance`` -- the defaults: ``channels_last="auto"`` (the UNet's
  ``prefers_channels_last`` puts the window batches in ``channels_last`` on CPU) and
  ``inference_copy=True`` (BatchNorms folded into the convolutions, convolutions packed for
  oneDNN with their ReLU fused; the copy is made inside every call and timed with it);
* ``medbalance folded only`` -- the predictor given as ``fold_batchnorm(net)`` with
  ``inference_copy=False``: what folding alone gains;
* ``medbalance as given`` -- ``inference_copy=False``: the network as the user has it;
* ``medbalance NCHW`` -- ``channels_last=False``: MONAI's layout, inference copy;
* ``monai`` -- ``monai.inferers.sliding_window_inference`` under ``torch.inference_mode()``,
  given the network as the user has it (the issue's comparison);
* ``monai inference copy`` -- the same, given our inference copy
  (:func:`medbalance.engine.fold.inference_copy`, made once outside the timing): where the
  gain comes from.

Every row's ``extra`` holds ``max_abs_diff``, the largest difference of its output from
MONAI's (computed once, before the timings). ``--channels-last`` puts the network's weights in
``channels_last`` for all cases (MONAI's convolutions then run in that layout too). ``--cpu``
adds a table of CPU time per call (``time.process_time``, interleaved, medians; it counts
every torch thread, so use it with ``--threads 1`` on a loaded machine).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch

from benchmarks.harness import Case, Group, Row, interleaved_times, report, run_groups, start
from medbalance.engine import sliding_window_inference
from medbalance.engine.fold import fold_batchnorm, inference_copy
from medbalance.nets import UNet

__all__ = ["main", "run", "sliding_rows"]

log = logging.getLogger("benchmarks")

SIDES = ((565, 584), (1024, 1024))
WINDOWS = (128, 64)
OVERLAP = 0.5
BATCH = 4


def _ours(
    net: torch.nn.Module, image: torch.Tensor, window: int, channels_last: bool | str, prepare: bool = True
) -> Callable[[], object]:
    return lambda: sliding_window_inference(
        image,
        net,
        patch_size=window,
        overlap=OVERLAP,
        batch_size=BATCH,
        channels_last=channels_last,
        inference_copy=prepare,
    )


def _monai(net: torch.nn.Module, image: torch.Tensor, window: int) -> Callable[[], object]:
    from monai.inferers import sliding_window_inference as monai_sliding_window

    def call() -> torch.Tensor:
        with torch.inference_mode():
            return monai_sliding_window(
                image, (window, window), BATCH, net, overlap=OVERLAP, mode="gaussian", sigma_scale=0.125
            )

    return call


def _trained_norms(net: torch.nn.Module) -> torch.nn.Module:
    """BatchNorms as training leaves them: affine parameters drawn away from the identity, running
    statistics the average over a few batches of random windows (so outputs keep their scale)."""
    g = torch.Generator().manual_seed(2)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.momentum = None  # a cumulative average over the calibration batches
        net.train()
        for _ in range(3):
            net(torch.rand(4, 3, 64, 64, generator=g))
    for m in norms:
        m.momentum = 0.1
    return net


def sliding_groups(
    sides: Sequence[tuple[int, int]] = SIDES,
    windows: Sequence[int] = WINDOWS,
    *,
    base: int = 16,
    device: str = "cpu",
    channels_last: bool = False,
) -> tuple[list[Group], dict[str, dict[str, float]]]:
    """The groups of every image size and window, and per group the max |case - monai| of each case."""
    torch.manual_seed(0)
    net = _trained_norms(UNet(3, 1, base_channels=base)).eval().to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    folded, prepared = fold_batchnorm(net), inference_copy(net)
    params = sum(p.numel() for p in net.parameters())
    groups, diffs = [], {}
    for height, width in sides:
        image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(1)).to(device)
        for window in windows:
            cases = {
                "medbalance": _ours(net, image, window, "auto"),
                "medbalance folded only": _ours(folded, image, window, "auto", prepare=False),
                "medbalance as given": _ours(net, image, window, "auto", prepare=False),
                "medbalance NCHW": _ours(net, image, window, False),
                "monai": _monai(net, image, window),
                "monai inference copy": _monai(prepared, image, window),
            }
            reference = cases["monai"]()
            group = Group(
                f"sliding {height}x{width} w{window} b{base}",
                [Case(impl, fn, items=1, params=params) for impl, fn in cases.items()],
                extra={"overlap": OVERLAP, "batch": BATCH, "device": device, "net_channels_last": channels_last},
            )
            diffs[group.name] = {impl: (fn() - reference).abs().max().item() for impl, fn in cases.items()}
            diffs[group.name]["max_abs_monai"] = reference.abs().max().item()
            log.info("%s: max |case - monai| %s", group.name, diffs[group.name])
            groups.append(group)
    return groups, diffs


def sliding_rows(
    sides: Sequence[tuple[int, int]] = SIDES,
    windows: Sequence[int] = WINDOWS,
    *,
    base: int = 16,
    device: str = "cpu",
    channels_last: bool = False,
    warmup: int = 1,
    repeats: int = 5,
) -> list[Row]:
    """Wall-clock rows of :func:`sliding_groups`'s cases."""
    groups, diffs = sliding_groups(sides, windows, base=base, device=device, channels_last=channels_last)
    rows = run_groups(groups, warmup=warmup, repeats=repeats)
    for row in rows:
        row.extra["max_abs_diff"] = diffs[row.name][row.impl]
    return rows


def _cpu_clock(fn: Callable[[], object]) -> float:
    begin = time.process_time()
    fn()
    return time.process_time() - begin


def cpu_time_table(groups: Sequence[Group], *, repeats: int) -> str:
    """Median CPU ms (``time.process_time``) per call of every case, interleaved as the wall-clock
    rows, and MONAI's median / this case's (> 1: faster than MONAI given the user's network)."""
    lines = ["| benchmark | impl | median CPU ms | IQR ms | monai / this |", "|---|---|---:|---:|---:|"]
    for group in groups:
        times = interleaved_times(group, warmup=1, repeats=repeats, clock=_cpu_clock)
        medians = [statistics.median(t) for t in times]
        monai = medians[[c.impl for c in group.cases].index("monai")]
        for case, case_times, median in zip(group.cases, times, medians):
            q1, _, q3 = statistics.quantiles(case_times, n=4) if repeats > 1 else (0, 0, 0)
            lines.append(
                f"| {group.name} | {case.impl} | {1e3 * median:.0f} | {1e3 * (q3 - q1):.0f} | {monai / median:.2f} |"
            )
    return "\n".join(lines) + "\n"


def run(*, quick: bool = False, device: str = "cpu", channels_last: bool = False) -> list[Row]:
    """Module protocol of ``python -m benchmarks``: the default sizes (``quick``: one 160x192
    image, windows 64 and 32, width 8, 2 repeats)."""
    if quick:
        return sliding_rows(((160, 192),), (64, 32), base=8, device=device, channels_last=channels_last, repeats=2)
    return sliding_rows(device=device, channels_last=channels_last)


def _side(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    return int(height), int(width or height)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks sliding", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one 160x192 image, windows 64 and 32, width 8")
    parser.add_argument("--sides", default="565x584,1024x1024", help="comma-separated HxW image sizes")
    parser.add_argument("--windows", default="128,64", help="comma-separated window sides")
    parser.add_argument("--base", type=int, default=16, help="UNet base_channels (default 16)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--channels-last", action="store_true", help="the network's weights in channels_last")
    parser.add_argument("--cpu", action="store_true", help="CPU time per call instead of wall-clock rows")
    args = parser.parse_args(argv)
    start(args.threads)
    if args.cpu:
        sides, windows = ([(160, 192)], [64, 32]) if args.quick else ([_side(s) for s in args.sides.split(",")], None)
        groups, diffs = sliding_groups(
            sides,
            windows or [int(w) for w in args.windows.split(",")],
            base=8 if args.quick else args.base,
            device=args.device,
            channels_last=args.channels_last,
        )
        log.info("max |case - monai|: %s", diffs)
        sys.stdout.write(cpu_time_table(groups, repeats=args.repeats))
        return 0
    if args.quick:
        rows = run(quick=True, device=args.device, channels_last=args.channels_last)
    else:
        rows = sliding_rows(
            [_side(s) for s in args.sides.split(",")],
            [int(w) for w in args.windows.split(",")],
            base=args.base,
            device=args.device,
            channels_last=args.channels_last,
            repeats=args.repeats,
        )
    sys.stdout.write(report(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
