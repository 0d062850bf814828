"""Sliding-window inference: :func:`medbalance.engine.sliding_window_inference` vs MONAI's
``sliding_window_inference``, the same network, window, overlap, Gaussian blend and batch.

Usage::

    python -m benchmarks sliding                        # 565x584 (DRIVE) and 1024x1024, windows 128 and 64
    python -m benchmarks sliding --quick                # seconds-long smoke run
    python -m benchmarks sliding --sides 565x584 --windows 128 --repeats 9 --threads 2

The network is ``medbalance.nets.UNet(3, 1, base_channels=16)`` in ``eval()`` (3-channel
input like DRIVE's RGB, one binary logit), its weights as constructed (contiguous). One
image per call, overlap 0.5, ``mode="gaussian"``, ``sigma_scale=0.125``, 4 windows per
network call. Three cases per image size and window, timed round-robin
(:func:`benchmarks.harness.run_groups`):

* ``medbalance`` -- the defaults, ``channels_last="auto"``: the UNet's
  ``prefers_channels_last`` puts the window batches in ``channels_last`` on CPU;
* ``medbalance NCHW`` -- ``channels_last=False``: the same layout as MONAI, which isolates
  what the bookkeeping alone gains;
* ``monai`` -- ``monai.inferers.sliding_window_inference`` under ``torch.inference_mode()``.

Every row's ``extra`` holds ``max_abs_diff``, the largest difference of its output from
MONAI's (computed once, before the timings). ``--channels-last`` puts the network's weights in
``channels_last`` for all three cases (MONAI's convolutions then run in that layout too).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

import torch

from benchmarks.harness import Case, Group, Row, report, run_groups, start
from medbalance.engine import sliding_window_inference
from medbalance.nets import UNet

__all__ = ["main", "run", "sliding_rows"]

log = logging.getLogger("benchmarks")

SIDES = ((565, 584), (1024, 1024))
WINDOWS = (128, 64)
OVERLAP = 0.5
BATCH = 4


def _ours(net: torch.nn.Module, image: torch.Tensor, window: int, channels_last: bool | str) -> Callable[[], object]:
    return lambda: sliding_window_inference(
        image, net, patch_size=window, overlap=OVERLAP, batch_size=BATCH, channels_last=channels_last
    )


def _monai(net: torch.nn.Module, image: torch.Tensor, window: int) -> Callable[[], object]:
    from monai.inferers import sliding_window_inference as monai_sliding_window

    def call() -> torch.Tensor:
        with torch.inference_mode():
            return monai_sliding_window(
                image, (window, window), BATCH, net, overlap=OVERLAP, mode="gaussian", sigma_scale=0.125
            )

    return call


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
    """Time ours (``channels_last`` auto and off) and MONAI's on one random image per size and window."""
    torch.manual_seed(0)
    net = UNet(3, 1, base_channels=base).eval().to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in net.parameters())
    groups = []
    for height, width in sides:
        image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(1)).to(device)
        for window in windows:
            cases = {
                "medbalance": _ours(net, image, window, "auto"),
                "medbalance NCHW": _ours(net, image, window, False),
                "monai": _monai(net, image, window),
            }
            reference = cases["monai"]()
            group = Group(
                f"sliding {height}x{width} w{window} b{base}",
                [Case(impl, fn, items=1, params=params) for impl, fn in cases.items()],
                extra={"overlap": OVERLAP, "batch": BATCH, "device": device, "net_channels_last": channels_last},
            )
            diffs = {impl: (fn() - reference).abs().max().item() for impl, fn in cases.items() if impl != "monai"}
            log.info("%s: max |ours - monai| %s", group.name, diffs)
            groups.append((group, diffs))
    rows = run_groups([g for g, _ in groups], warmup=warmup, repeats=repeats)
    diffs = {g.name: d for g, d in groups}
    for row in rows:
        row.extra["max_abs_diff"] = diffs[row.name].get(row.impl, 0.0)
    return rows


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
    args = parser.parse_args(argv)
    start(args.threads)
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
