"""Compute switches, each timed on and off in one interleaved run (issue 10 item 3).

Usage::

    python -m benchmarks.bench_compute [--quick] [--threads N] [--base 16] [--batch 4] [--side 128]
    python -m benchmarks --only compute

Three groups of cases, each group timed round-robin by :func:`benchmarks.harness.run_groups`
so that load drifting on a shared machine affects every case of a group alike:

* **train**: one U-Net training step (forward, Dice + CE, backward, Adam) in fp32 NCHW (the
  reference), ``channels_last``, bf16 autocast, and both -- the switches
  ``--channels-last`` of the nets benchmark and ``precision: bf16-mixed`` of the config; and
  the same training step and the inference pass of every segmentation network in NCHW and
  ``channels_last``, the measurement behind each network's ``prefers_channels_last`` (the
  engine's default layout on CPU, ``channels_last: auto``).
* **infer**: the forward pass of the same U-Net in ``eval()`` with autograd recording (what a
  loop without ``no_grad`` costs), under ``torch.no_grad``, under ``torch.inference_mode``
  (the reference), and in bf16 under ``inference_mode``.
* **argmax**: labels from ``(N, C, H, W)`` logits with ``argmax(dim=1)`` and with
  :func:`medbalance.engine.tasks.channel_argmax` (the segmentation prediction), for C = 2, 4, 7
  and channels_last logits.

``torch.compile`` is not in this module: it fails in the backward pass on this install (see
"torch.compile" in ``benchmarks/RESULTS.md``); ``python -m benchmarks nets --compile`` tries it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable

import torch

from benchmarks.harness import Case, Group, Row, report, run_groups, start
from medbalance.engine.tasks import channel_argmax
from medbalance.losses import build_loss
from medbalance.nets import NETS, SEGMENTATION_NETS

__all__ = ["run", "main"]

log = logging.getLogger("benchmarks")


def _net(base: int, channels_last: bool, name: str = "unet") -> torch.nn.Module:
    torch.manual_seed(0)
    model = NETS[name](1, 2, base_channels=base)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _autocast(bf16: bool, device: str) -> contextlib.AbstractContextManager:
    return torch.autocast(device_type=device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _train_case(
    label: str, *, base: int, x: torch.Tensor, y: torch.Tensor, channels_last: bool, bf16: bool, net: str = "unet"
) -> Case:
    device = x.device.type
    model = _net(base, channels_last, net).to(x.device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    loss_fn = build_loss("dice_ce", class_counts=None, binary=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        with _autocast(bf16, device):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return Case(label, step, len(x), sum(p.numel() for p in model.parameters()))


def _infer_case(label: str, model: torch.nn.Module, x: torch.Tensor, context: Callable[[], object], bf16: bool) -> Case:
    def forward() -> None:
        with context(), _autocast(bf16, x.device.type):
            model(x)

    return Case(label, forward, len(x), sum(p.numel() for p in model.parameters()))


def _argmax_group(shape: tuple[int, ...], *, channels_last: bool, device: str) -> Group:
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    layout = "channels_last" if channels_last else "NCHW"
    cases = [
        Case("channel_argmax (loop)", lambda: channel_argmax(logits), shape[0], 0),
        Case("argmax(dim=1)", lambda: logits.argmax(dim=1), shape[0], 0),
    ]
    return Group(f"argmax {'x'.join(map(str, shape))} {layout}", cases)


def run(
    *,
    quick: bool = False,
    device: str = "cpu",
    channels_last: bool = False,
    base: int = 16,
    batch: int = 4,
    side: int = 128,
) -> list[Row]:
    """Time the compute switches; ``channels_last`` is ignored (it is one of the switches)."""
    del channels_last
    if quick:
        base, batch, side = 8, 2, 64
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, side, side, generator=gen).to(device)
    y = (torch.rand(batch, side, side, generator=gen) > 0.8).long().to(device)
    shape = f"b{base} {batch}x1x{side}x{side}"
    train = Group(
        f"unet train {shape}",
        [
            _train_case("fp32 NCHW", base=base, x=x, y=y, channels_last=False, bf16=False),
            _train_case("fp32 channels_last", base=base, x=x, y=y, channels_last=True, bf16=False),
            _train_case("bf16 autocast NCHW", base=base, x=x, y=y, channels_last=False, bf16=True),
            _train_case("bf16 autocast channels_last", base=base, x=x, y=y, channels_last=True, bf16=True),
        ],
    )
    model = _net(base, False).to(device).eval()
    infer = Group(
        f"unet infer {shape}",
        [
            _infer_case("inference_mode", model, x, torch.inference_mode, bf16=False),
            _infer_case("no_grad", model, x, torch.no_grad, bf16=False),
            _infer_case("autograd on", model, x, contextlib.nullcontext, bf16=False),
            _infer_case("inference_mode bf16", model, x, torch.inference_mode, bf16=True),
        ],
    )
    layouts = (("NCHW", False), ("channels_last", True))
    x_last = x.contiguous(memory_format=torch.channels_last)
    layout = []
    for net in SEGMENTATION_NETS:
        default = {"engine default": "channels_last" if NETS[net].prefers_channels_last else "NCHW"}
        if net != "unet":  # U-Net's is in the train group above
            cases = [
                _train_case(f"fp32 {n}", base=base, x=x, y=y, channels_last=cl, bf16=False, net=net)
                for n, cl in layouts
            ]
            layout.append(Group(f"{net} train {shape}", cases, extra=default))
        cases = [
            _infer_case(
                f"inference_mode {n}",
                _net(base, cl, net).to(device).eval(),
                x_last if cl else x,
                torch.inference_mode,
                bf16=False,
            )
            for n, cl in layouts
        ]
        layout.append(Group(f"{net} infer {shape}", cases, extra=default))
    n, s = (4, 64) if quick else (8, 128)
    argmax = [_argmax_group((n, c, s, s), channels_last=False, device=device) for c in (2, 4, 7)]
    argmax.append(_argmax_group((n, 4, s, s), channels_last=True, device=device))
    warmup, repeats = (1, 3) if quick else (2, 9)
    return run_groups([train, infer, *layout], warmup=warmup, repeats=repeats) + run_groups(
        argmax, warmup=warmup, repeats=3 * repeats
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_compute", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--base", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--side", type=int, default=128)
    args = parser.parse_args(argv)
    start(args.threads)
    rows = run(quick=args.quick, device=args.device, base=args.base, batch=args.batch, side=args.side)
    sys.stdout.write(report(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
