"""Every segmentation network of ``medbalance.nets.NETS``: size, FLOPs and speed, with MONAI's
networks of the same architecture side by side.

Usage::

    python -m benchmarks nets                  # size table, conv peak, train / infer timings
    python -m benchmarks nets --quick          # seconds-long smoke run
    python -m benchmarks nets --table          # only the size table (Markdown, for the README)
    python -m benchmarks nets --nets unet,cenet --base 32 --threads 1 --channels-last --compile

Three measurements:

* **Size** (``--table``): parameters and forward GFLOP (``torch.utils.flop_counter``,
  multiply-add = 2) on a (1, 1, 256, 256) input, 2 classes, at the paper's width and at the
  constructor's default ``base_channels``. Counted on the meta device: nothing is allocated.
* **Peak**: GFLOP/s of one large 3x3 convolution (:func:`benchmarks.harness.conv_peak_gflops`),
  the practical ceiling of this device.
* **Speed**: ``train`` (forward + cross-entropy + backward + Adam) and ``infer`` (``eval()``
  under ``torch.inference_mode()``) on (4, 1, 128, 128) at ``--base`` (16), each network in
  a group with MONAI's equivalents at the same widths, timed round-robin. ``% peak`` is the
  achieved GFLOP/s (forward FLOPs for ``infer``; forward + backward FLOPs, counted, for
  ``train``) over the measured peak.

MONAI equivalents (all at widths ``(b, 2b, 4b, 8b, 16b)``; BatchNorm + ReLU where MONAI lets
us choose, so that configuration defaults do not decide the comparison):

* ``UNet``: ``monai.UNet(channels=..., strides=(2,)*4, num_res_units=2)`` -- two convs per
  encoder level like the classic double conv (the spleen tutorial's setting), but a stride-2
  first conv, no extra level at the bottom and one conv per decoder level, about a quarter of
  the FLOPs -- and ``monai.BasicUNet(features=(..., b))``, the classic U-Net, whose last up
  step keeps ``2b`` channels after the transposed conv (ours halves to ``b``).
* ``AttentionUNet``: ``monai.AttentionUnet`` (BatchNorm, its activations fixed).
* ``UNetPlusPlus``: ``monai.BasicUNetPlusPlus(features=(..., b))``.
* ``UNet3Plus``, ``DeepLabV3Plus``, ``CENet``: MONAI has no such network.

Every module of ``benchmarks`` also exposes ``run(*, quick, device, channels_last)``, so
``python -m benchmarks`` includes these timings.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import logging
import sys
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.harness import Case, Group, Row, conv_peak_gflops, machine_info, report, run_groups
from medbalance.nets import NETS, SEGMENTATION_NETS

__all__ = ["PAPER_WIDTHS", "main", "monai_equivalents", "run", "segmentation_nets", "size_rows", "size_table"]

log = logging.getLogger("benchmarks")

#: Sizes of a ``--quick`` smoke run (arguments of :func:`speed_rows`).
_QUICK = {"base": 8, "batch": 2, "side": 64, "warmup": 1, "repeats": 2}

#: ``base_channels`` of each network's paper, by class name (64 when not listed).
PAPER_WIDTHS: dict[str, int] = {
    "UNet": 64,  # Ronneberger et al. 2015
    "AttentionUNet": 64,  # Oktay et al. 2018 build on the 64-wide U-Net
    "UNetPlusPlus": 32,  # Zhou et al. 2018: 32, 64, 128, 256, 512
    "UNet3Plus": 64,  # Huang et al. 2020
    "DeepLabV3Plus": 64,  # ResNet stem width
    "CENet": 64,  # ResNet-34 stem width
}


def segmentation_nets() -> dict[str, type[nn.Module]]:
    """The registered segmentation networks, by name."""
    return {name: NETS[name] for name in sorted(SEGMENTATION_NETS)}


def _default_width(cls: type[nn.Module]) -> int:
    return int(inspect.signature(cls).parameters["base_channels"].default)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _gflops(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """Forward GFLOP of ``model`` on ``x`` in eval mode or, given a target ``y``, forward +
    backward GFLOP in training mode; counted on a meta-device copy (no arithmetic is done,
    and the real model's gradients and BatchNorm statistics stay untouched)."""
    model = copy.deepcopy(model).to("meta").train(y is not None)
    x = x.to("meta")
    with FlopCounterMode(display=False) as counter:
        if y is None:
            with torch.no_grad():
                model(x)
        else:
            _loss(model, x, y.to("meta")).backward()
    return counter.get_total_flops() / 1e9


def size_rows(names: Sequence[str], *, side: int = 256) -> list[dict[str, object]]:
    """Parameters and forward GFLOP at ``(1, 1, side, side)``, 2 classes, for the paper's and
    the default width of each network (built on the meta device)."""
    nets = segmentation_nets()
    rows = []
    for name in names:
        cls = nets[name]
        widths = {"paper": PAPER_WIDTHS.get(cls.__name__, 64), "default": _default_width(cls)}
        row: dict[str, object] = {"net": name, "class": cls.__name__}
        for which, base in widths.items():
            with torch.device("meta"):
                model = cls(1, 2, base_channels=base)
            row[f"{which}_width"] = base
            row[f"{which}_params"] = _n_params(model)
            row[f"{which}_gflops"] = _gflops(model, torch.empty(1, 1, side, side))
        rows.append(row)
    return rows


def size_table(rows: Sequence[dict[str, object]], *, side: int = 256) -> str:
    """Markdown table of :func:`size_rows`."""
    lines = [
        f"| network | paper width | params | GFLOP @ {side}x{side} | default width | params | GFLOP @ {side}x{side} |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['net']}` | {r['paper_width']} | {r['paper_params'] / 1e6:.2f}M | {r['paper_gflops']:.2f}"
            f" | {r['default_width']} | {r['default_params'] / 1e6:.2f}M | {r['default_gflops']:.2f} |"
        )
    return "\n".join(lines)


def monai_equivalents(class_name: str, base: int) -> dict[str, nn.Module]:
    """MONAI networks of the same architecture as medbalance's ``class_name`` at width ``base``
    (empty when MONAI has none or is not installed)."""
    try:
        from monai.networks import nets as monai_nets
    except ImportError:
        return {}
    widths = tuple(base * 2**i for i in range(5))
    common = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2}
    if class_name == "UNet":
        return {
            "monai.UNet(res=2)": monai_nets.UNet(
                channels=widths, strides=(2, 2, 2, 2), num_res_units=2, norm="batch", act="relu", **common
            ),
            "monai.BasicUNet": monai_nets.BasicUNet(features=(*widths, base), norm="batch", act="relu", **common),
        }
    if class_name == "AttentionUNet":
        return {"monai.AttentionUnet": monai_nets.AttentionUnet(channels=widths, strides=(2, 2, 2, 2), **common)}
    if class_name == "UNetPlusPlus":
        return {
            "monai.BasicUNetPlusPlus": monai_nets.BasicUNetPlusPlus(
                features=(*widths, base), norm="batch", act="relu", **common
            )
        }
    return {}


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    if isinstance(logits, (list, tuple)):  # monai.BasicUNetPlusPlus returns a list
        logits = logits[0]
    return F.cross_entropy(logits, y)


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        _loss(model, x, y).backward()
        optimizer.step()

    return step


def _inference(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    model.eval()

    def forward() -> None:
        with torch.inference_mode():
            model(x)

    return forward


def speed_rows(
    names: Sequence[str],
    *,
    base: int = 16,
    batch: int = 4,
    side: int = 128,
    device: str = "cpu",
    channels_last: bool = False,
    compile: bool = False,
    monai: bool = True,
    warmup: int = 2,
    repeats: int = 7,
    peak: float | None = None,
) -> list[Row]:
    """Time train steps and inference of each network (and its MONAI equivalents).

    Args:
        names: registry names of the networks.
        base: ``base_channels`` of every network (and the MONAI widths).
        batch, side: input ``(batch, 1, side, side)``, 2 classes.
        device: torch device.
        channels_last: models and input in ``torch.channels_last``.
        compile: wrap every model in ``torch.compile`` (compilation happens in the warm-up).
        monai: include MONAI's equivalents.
        warmup, repeats: see :func:`benchmarks.harness.run_groups`.
        peak: device peak GFLOP/s; when given, every row gets ``extra["peak_fraction"]``.
    """
    generator = torch.Generator().manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, 1, side, side, generator=generator).to(device).contiguous(memory_format=memory_format)
    y = torch.randint(0, 2, (batch, side, side), generator=generator).to(device)
    nets = segmentation_nets()
    extra = {"device": device, "channels_last": channels_last, "compile": compile}
    groups, work = [], {}
    for name in names:
        for mode in ("train", "infer"):
            torch.manual_seed(0)
            models = {f"medbalance.{nets[name].__name__}": nets[name](1, 2, base_channels=base)}
            if monai:
                models.update(monai_equivalents(nets[name].__name__, base))
            cases = []
            group_name = f"{name} b{base} {mode} {batch}x1x{side}x{side}"
            for impl, model in models.items():
                model.to(device, memory_format=memory_format)
                forward_gflops = _gflops(model, x[:1])
                work[group_name, impl] = forward_gflops if mode == "infer" else _gflops(model, x[:1], y[:1])
                runnable = torch.compile(model) if compile else model
                fn = _train_step(runnable, x, y) if mode == "train" else _inference(runnable, x)
                cases.append(Case(impl, fn, items=batch, params=_n_params(model), gflops=forward_gflops))
            groups.append(Group(group_name, cases, extra=dict(extra)))
    rows = run_groups(groups, warmup=warmup, repeats=repeats)
    if peak is not None:
        for row in rows:
            row.extra["peak_gflops_per_s"] = round(peak, 1)
            row.extra["peak_fraction"] = work[row.name, row.impl] * row.images_per_s / peak
    return rows


def run(*, quick: bool = False, device: str = "cpu", channels_last: bool = False) -> list[Row]:
    """Module protocol of ``python -m benchmarks``: every segmentation network at width 16 on
    (4, 1, 128, 128) (``quick``: width 8 on (2, 1, 64, 64), 2 repeats)."""
    peak = conv_peak_gflops(device=device, channels_last=channels_last, quick=quick)
    log.info("conv peak: %.1f GFLOP/s", peak)
    sizes = _QUICK if quick else {}
    return speed_rows(list(segmentation_nets()), device=device, channels_last=channels_last, peak=peak, **sizes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks nets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="width 8, 2x1x64x64, 2 repeats (smoke run)")
    parser.add_argument("--table", action="store_true", help="print only the Markdown size table")
    parser.add_argument("--nets", default="", help="comma-separated registry names (default: all segmentation nets)")
    parser.add_argument("--base", type=int, default=None, help="base_channels for the timings (default 16)")
    parser.add_argument("--batch", type=int, default=None, help="batch size for the timings (default 4)")
    parser.add_argument("--side", type=int, default=None, help="image side for the timings (default 128)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per case (default 7)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--channels-last", action="store_true", help="models and inputs in channels_last")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model")
    parser.add_argument("--no-monai", action="store_true", help="time medbalance's networks only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    known = segmentation_nets()
    names = [n.strip().lower() for n in args.nets.split(",") if n.strip()] or list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown segmentation network(s) {unknown} (known: {', '.join(known)})")
    table = size_table(size_rows(names))
    if args.table:
        sys.stdout.write(table + "\n")
        return 0

    log.info("machine: %s", machine_info())
    peak = conv_peak_gflops(device=args.device, channels_last=args.channels_last, quick=args.quick)
    log.info("conv peak: %.1f GFLOP/s", peak)
    sizes = dict(_QUICK) if args.quick else {}
    for key in ("base", "batch", "side", "repeats"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    rows = speed_rows(
        names,
        device=args.device,
        channels_last=args.channels_last,
        compile=args.compile,
        monai=not args.no_monai,
        peak=peak,
        **sizes,
    )
    sys.stdout.write(f"{table}\n\nconv peak: {peak:.1f} GFLOP/s\n\n{report(rows)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
